"""Every registered pre-training method: runs, learns, exports; plus the shared base's guarantees."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from pretrain_utils import METHOD_TEST_CONFIGS, SEQ_LEN, TINY_HEAD, TinyDataModule, tiny_batch, tiny_run_config

from osf.backbone.checkpoint import load_backbone
from osf.models import METHODS, create_method
from osf.models.base import NonFiniteLossError, param_groups
from osf.models.export import backbone_from_lightning_checkpoint, export_pretrained_backbone
from osf.models.osf_dino import OSFDINO
from osf.models.registry import resolve_method_name
from osf.models.training import run_pretrain

pytestmark = pytest.mark.usefixtures("one_thread")

# After 20 steps on a fixed batch the loss (minus the frozen teacher's entropy, for DINO-style
# methods) must fall below this fraction of its first value; a method may set its own.
OVERFIT_MAX_RATIO: dict[str, float] = {
    # tiny_batch is white noise, which no reconstruction fully learns, and whose modalities share
    # nothing for SleepFM to align; test_pretrain_baselines.py overfits these on structured signals.
    "mae": 0.9, "vqvae": 0.9, "sleepfm": 0.8,
}


def test_every_registered_method_is_tested():
    untested = sorted(set(METHODS) - set(METHOD_TEST_CONFIGS))
    assert not untested, f"registered methods without tests: {untested}; add them to METHOD_TEST_CONFIGS"


def test_registry_aliases_and_errors():
    assert resolve_method_name("osf") == "dino_ours"
    assert isinstance(create_method("osf", "vit_nano", backbone_kwargs={"seq_len": SEQ_LEN}, **TINY_HEAD), OSFDINO)
    with pytest.raises(ValueError, match="unknown pre-training method 'nope'"):
        create_method("nope", "vit_nano")


class _Snapshot(pl.Callback):
    def on_fit_start(self, trainer, pl_module):
        self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def _changed(before: dict, after: dict, prefix: str) -> bool:
    keys = [k for k in before if k.startswith(prefix)]
    assert keys, prefix
    return any(not torch.equal(before[k], after[k]) for k in keys)


@pytest.mark.parametrize("method", sorted(METHOD_TEST_CONFIGS))
def test_few_steps_run_learn_and_export_round_trip(method, tmp_path):
    snap = _Snapshot()
    cfg = tiny_run_config(method, tmp_path, max_steps=3, method_kwargs=dict(METHOD_TEST_CONFIGS[method]))
    result = run_pretrain(cfg, datamodule=TinyDataModule(), callbacks=[snap])
    model = result.model
    assert model.trainer.global_step == 3
    assert math.isfinite(float(model.trainer.callback_metrics["train/loss"]))
    after = model.state_dict()
    trained = [name for name, module in model.trainable_modules().items()
               if any(p.requires_grad for p in module.parameters())]
    for name in [*trained, "probe"]:  # backbone, heads/decoders, and the probe (the batches carry labels)
        assert _changed(snap.state, after, f"{name}."), name
    if model.has_teacher:
        assert _changed(snap.state, after, "teacher_backbone.")  # EMA moved the teacher ...
        assert not torch.equal(after["teacher_backbone.norm.weight"], after["backbone.norm.weight"])  # ... behind the student

    x = tiny_batch(3)["signal"]
    for which in ("teacher", "student"):
        exported, metadata = backbone_from_lightning_checkpoint(result.last_checkpoint, which)
        reference = model.export_backbone(which)
        assert metadata["exported_from"] == (which if model.has_teacher else "student")
        with torch.no_grad():
            torch.testing.assert_close(exported(x), reference(x))
    pth, st = export_pretrained_backbone(result.last_checkpoint, tmp_path / "export" / "backbone.pth")
    for path in (pth, st):
        loaded, metadata = load_backbone(path)
        assert metadata["encoder_name"] == "vit_nano" and metadata["model_name"] == method
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model.export_backbone("teacher")(x))


@pytest.mark.parametrize("method", sorted(METHOD_TEST_CONFIGS))
def test_fixed_batch_is_overfit(method):
    """Fixed batch, fixed views, frozen teacher and center: the student must approach the teacher.

    With the teacher fixed, the loss is H(teacher) + KL(teacher || student); only the KL can fall.
    (With the EMA teacher and centering running, a single batch shows DINO's collapse/anti-collapse
    dynamics instead of a monotone loss, which is not what this test is about.)
    """
    torch.manual_seed(0)
    model = create_method(method, "vit_nano", backbone_kwargs={"seq_len": SEQ_LEN}, total_steps=40, lr=1e-3,
                          warmup_frac=0.0, **METHOD_TEST_CONFIGS[method])
    optimizer = model.configure_optimizers()["optimizer"]
    batch = tiny_batch(8)
    gen = lambda: torch.Generator().manual_seed(0)
    entropy = None
    if model.has_teacher and hasattr(model, "make_views"):
        with torch.no_grad():
            views = model.make_views(batch["signal"], batch["channel_mask"], gen())
            n_teacher = model.hparams.n_global_views * batch["signal"].shape[0]
            logits = model.teacher_head(model.teacher_backbone.forward_encoding(views[:n_teacher])[0])
            p = model.dino_loss.centering.teacher_probs(logits, model.teacher_temp_at(0))
            entropy = float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean())
    excess = []
    for _ in range(20):
        out = model.ssl_step(batch, gen(), update_state=False)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        excess.append(out.loss.item() - (entropy or 0.0))
    assert all(math.isfinite(v) for v in excess)
    ratio = OVERFIT_MAX_RATIO.get(method, 0.6)
    assert sum(excess[-3:]) / 3 < ratio * excess[0], f"loss (above the teacher entropy) did not fall: {excess}"


def test_param_groups_spare_biases_norms_embeddings_and_tokens():
    model = create_method("dino_ours", "vit_nano", backbone_kwargs={"seq_len": SEQ_LEN}, ibot_lambda=0.5, **TINY_HEAD)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {g["name"]: g for g in param_groups(model.trainable_modules(), 0.2)}
    no_decay = {names[id(p)] for p in groups["no_decay"]["params"]}
    decay = {names[id(p)] for p in groups["decay"]["params"]}
    for name in ("backbone.pos_embedding", "backbone.cls_token", "backbone.mask_token", "backbone.norm.weight",
                 "backbone.block0.attn.fn.to_qkv.bias", "head.mlp.0.bias"):
        assert name in no_decay, name
    assert "backbone.block0.attn.fn.to_qkv.weight" in decay and "head.mlp.0.weight" in decay
    assert groups["decay"]["weight_decay"] == 0.2 and groups["no_decay"]["weight_decay"] == 0.0
    assert not any(n.startswith(("teacher", "probe")) for n in decay | no_decay)
    assert "head.last_layer.parametrizations.weight.original0" not in decay | no_decay  # frozen weight-norm gain
    everything = param_groups(model.trainable_modules(), 0.2, decay_all=True)
    assert len(everything) == 1 and len(everything[0]["params"]) == len(decay) + len(no_decay)


def test_ibot_and_koleo_run_only_when_weighted():
    batch, gen = tiny_batch(4), lambda: torch.Generator().manual_seed(0)
    kw = {"backbone_kwargs": {"seq_len": SEQ_LEN}, "total_steps": 10, **TINY_HEAD}
    plain = create_method("dino_ours", "vit_nano", **kw)
    assert plain.backbone.mask_token is None
    out = plain.ssl_step(batch, gen(), update_state=False)
    assert "ibot_loss" not in out.logs and "koleo_loss" not in out.logs
    torch.testing.assert_close(out.loss, out.logs["dino_loss"])

    weighted = create_method("dino_ours", "vit_nano", ibot_lambda=0.5, koleo_lambda=0.1, **kw)
    out = weighted.ssl_step(batch, gen(), update_state=False)
    expected = out.logs["dino_loss"] + 0.5 * out.logs["ibot_loss"] + 0.1 * out.logs["koleo_loss"]
    torch.testing.assert_close(out.loss.detach(), expected)

    released = create_method("dino_ours", "vit_nano", compute_zero_weight_losses=True, **kw)  # benchmark baseline
    out = released.ssl_step(batch, gen(), update_state=False)
    assert {"ibot_loss", "koleo_loss"} <= set(out.logs)
    torch.testing.assert_close(out.loss.detach(), out.logs["dino_loss"])


def test_osf_views_drop_channels_and_mask_spans():
    model = create_method("dino_ours", "vit_nano", backbone_kwargs={"seq_len": SEQ_LEN}, **TINY_HEAD)
    x = torch.randn(16, 12, SEQ_LEN) + 4.0
    mask = torch.ones(16, 12, dtype=torch.bool)
    mask[:, 10:] = False  # no EEG recorded
    x[:, 10:] = 0.0
    views = model.make_views(x, mask, torch.Generator().manual_seed(0))
    assert views.shape == (4 * 16, 12, SEQ_LEN)
    channel_zero = (views == 0).all(-1)
    assert channel_zero[:, 10:].all() and (~channel_zero).any(dim=1).all()
    kept_zero_frac = (views == 0).float().sum(-1)[~channel_zero] / SEQ_LEN
    assert kept_zero_frac.min() >= 0.3 - 1e-6 and kept_zero_frac.max() <= 0.6 + 1e-6
    assert not torch.equal(views[:16], views[16:32])  # the two global views differ


def test_osf_full_teacher_encodes_the_recorded_epoch():
    """teacher_views="full": the teacher reads every recorded channel, unmasked; the student its dropped views."""
    kw = dict(backbone_kwargs={"seq_len": SEQ_LEN}, **TINY_HEAD)
    full = create_method("dino_ours", "vit_nano", teacher_views="full", **kw)
    x = torch.randn(6, 12, SEQ_LEN)
    mask = torch.ones(6, 12, dtype=torch.bool)
    mask[:3, 10:] = False  # three epochs without EEG: their teacher input keeps it absent
    views = full.make_views(x, mask, torch.Generator().manual_seed(0))
    global_views = views[:12]
    teacher = full.teacher_views(x, global_views, mask)
    expected = x.masked_fill(~mask.unsqueeze(-1), 0.0)
    torch.testing.assert_close(teacher, expected.repeat(2, 1, 1))
    assert not torch.equal(teacher, global_views)  # the student's views are dropped and span-masked
    same = create_method("dino_ours", "vit_nano", **kw)
    assert same.teacher_views(x, global_views, mask) is global_views  # the default: OSF's views for both
    with pytest.raises(ValueError, match="teacher_views"):
        create_method("dino_ours", "vit_nano", teacher_views="half", **kw)


def test_osf_full_teacher_trains(tmp_path):
    """The full-montage teacher is a DINO target like any other: a short run trains and exports."""
    method_kwargs = {**METHOD_TEST_CONFIGS["dino_ours"], "teacher_views": "full"}
    cfg = tiny_run_config("dino_ours", tmp_path, max_steps=3, method_kwargs=method_kwargs)
    result = run_pretrain(cfg, datamodule=TinyDataModule())
    assert result.model.trainer.global_step == 3 and math.isfinite(float(result.model.trainer.callback_metrics["train/loss"]))


def test_dino_views_keep_absent_channels_zero():
    """Augmentation noise must not fill channels the recording does not have."""
    model = create_method("dino", "vit_nano", backbone_kwargs={"seq_len": SEQ_LEN}, **TINY_HEAD)
    x = torch.randn(8, 12, SEQ_LEN)
    mask = torch.ones(8, 12, dtype=torch.bool)
    mask[:4, :4] = False  # the first epochs lack ECG and EMG
    x[~mask] = 0.0
    views = model.make_views(x, mask, torch.Generator().manual_seed(0))
    absent = (~mask).repeat(4, 1)  # 2 global + 2 local views, view-major
    assert (views[absent] == 0).all() and (views[~absent] != 0).any(-1).all()


class _PoisonAt(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.backbone.norm.weight.fill_(float("nan"))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny_run_config("dino_ours", tmp_path, max_steps=6, ckpt_every_n_steps=3)
    with pytest.raises(NonFiniteLossError, match="non-finite training loss at step 3.*last.ckpt"):
        run_pretrain(cfg, datamodule=TinyDataModule(), callbacks=[_PoisonAt(3)])
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "run" / "checkpoints" / "step00000006.ckpt").exists()


def test_sinkhorn_teacher_option_normalises_both_dino_and_ibot_targets():
    from osf.losses.dino import Centering, SinkhornKnopp

    kw = {"backbone_kwargs": {"seq_len": SEQ_LEN}, "total_steps": 10, "ibot_lambda": 0.5, **TINY_HEAD}
    model = create_method("dino_ours", "vit_nano", teacher_centering="sinkhorn", **kw)
    assert isinstance(model.dino_loss.centering, SinkhornKnopp) and isinstance(model.ibot_loss.centering, SinkhornKnopp)
    out = model.ssl_step(tiny_batch(4), torch.Generator().manual_seed(0), update_state=True)
    assert math.isfinite(out.loss.item()) and out.loss.requires_grad
    assert isinstance(create_method("dino_ours", "vit_nano", **kw).dino_loss.centering, Centering)  # DINO's default

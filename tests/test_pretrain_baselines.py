"""The five baseline objectives (issue 7): SimCLR, SleepFM, MAE, VQ-VAE and AR on the shared base.

For every method: a short run of ``main_pretrain.py`` (loss finite, parameters change, export
round-trips) and a fixed small batch that is overfit. Then each method's own contract: MAE's mask
ratio and masked-only loss, VQ-VAE's straight-through gradient and codebook usage, AR's causality,
SleepFM's modality views and missing modalities.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

import config
from osf.backbone.checkpoint import load_backbone, save_backbone
from osf.models import create_method
from osf.models.ar import next_patch_targets, time_causal_attn_bias
from osf.models.mae import patchify, random_keep_indices
from osf.models.sleepfm import modality_channel_masks

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
BASELINES = ("simclr", "sleepfm", "mae", "vqvae", "ar")
# Small heads, decoders and codebooks so that CPU steps are cheap; everything else from train_config.
METHOD_CONFIGS: dict[str, dict] = {
    "simclr": {"proj_hidden_dim": 64, "proj_output_dim": 32},
    "sleepfm": {"proj_dim": 32},
    "mae": {"decoder_width": 64, "decoder_depth": 1, "decoder_heads": 2},
    "vqvae": {"codebook_size": 32, "decoder_width": 64, "decoder_depth": 1, "decoder_heads": 2},
    "ar": {},
}
SEQ_LEN = 640  # 10 time patches x 3 channel groups = 30 tokens for the in-process tests




def _main_pretrain():
    from main_pipelines import main_pretrain

    return main_pretrain


def _structured_batch(batch: int = 8, seq_len: int = SEQ_LEN, seed: int = 0) -> dict:
    """Sinusoids whose frequency is shared by the channels of an epoch (so modalities carry common
    information, as sleep stage does), with channels and whole modalities missing."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(seq_len) / config.SAMPLE_RATE
    freq = 0.3 + 2.0 * torch.rand(batch, 1, 1, generator=g) + 0.1 * torch.rand(batch, 12, 1, generator=g)
    phase = 2 * math.pi * torch.rand(batch, 12, 1, generator=g)
    x = torch.sin(2 * math.pi * freq * t + phase) + 0.1 * torch.randn(batch, 12, seq_len, generator=g)
    mask = torch.ones(batch, 12, dtype=torch.bool)
    ecg, resp = config.CHANNEL_INDEX["ECG"], [config.CHANNEL_INDEX[c] for c in config.MODALITIES["respiratory"]]
    mask[0, ecg] = False  # no cardiac modality
    mask[1, resp] = False  # no respiratory modality
    mask[2, ecg] = False
    mask[2, resp] = False  # brain only: no leave-one-out partner at all
    mask[3, [config.CHANNEL_INDEX["EEG_C3_A2"], config.CHANNEL_INDEX["EEG_C4_A1"]]] = False
    return {"signal": x * mask.unsqueeze(-1), "channel_mask": mask}


def _method(name: str, seq_len: int = SEQ_LEN, **overrides):
    torch.manual_seed(0)
    kwargs = {**METHOD_CONFIGS[name], "total_steps": 40, "lr": 2e-3, "warmup_frac": 0.0, "weight_decay": 0.0, **overrides}
    return create_method(name, "vit_nano", backbone_kwargs={"seq_len": seq_len}, **kwargs)


# --- every method ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", BASELINES)
def test_main_pretrain_runs_and_exports(method, tiny_store, tmp_path):
    argv = ["--model_name", method, "--psg_encoder_name", "vit_nano", "--data_dir", str(tiny_store), "--batch_size", "4",
            "--max_steps", "3", "--accelerator", "cpu", "--output_dir", str(tmp_path), "--run_name", "run",
            "--ckpt_every_n_steps", "1", "--log_every_n_steps", "1", "--logger", "csv", "--no-progress_bar"]
    for key, value in METHOD_CONFIGS[method].items():
        argv += ["--method_kwargs", f"{key}={value}"]
    result = _main_pretrain().main(argv)
    record = result.config.to_record()
    assert record["model_name"] == method and record["method_kwargs"]["lr"] == 1.5e-4  # the method's config

    metrics = next((result.run_dir / "csv_logs").rglob("metrics.csv"))
    rows = list(csv.DictReader(metrics.read_text().splitlines()))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)

    from osf.models.export import backbone_from_lightning_checkpoint

    ckpts = result.run_dir / "checkpoints"
    # Steps 1 -> 2 (the cosine LR reaches 0 at the last step, so that one may not move the weights).
    first, _ = backbone_from_lightning_checkpoint(ckpts / "step00000001.ckpt")
    second, _ = backbone_from_lightning_checkpoint(ckpts / "step00000002.ckpt")
    changed = [k for k, v in second.state_dict().items() if not torch.equal(v, first.state_dict()[k])]
    assert len(changed) > 0.5 * len(second.state_dict())  # the backbone trains, not just a head
    last, metadata = backbone_from_lightning_checkpoint(result.last_checkpoint)

    # Export round-trip: checkpoint -> released format -> load, same embeddings as the trained module.
    x = torch.randn(2, 12, config.EPOCH_SAMPLES, generator=torch.Generator().manual_seed(1))
    trained = result.model.export_backbone().eval()
    reloaded, meta = load_backbone(save_backbone(last, tmp_path / "backbone.pth", metadata)[0])
    assert meta["model_name"] == method
    with torch.no_grad():
        ref_cls, ref_patches = trained.forward_encoding(x)
        for model in (last, reloaded):
            cls, patches = model.forward_encoding(x)
            torch.testing.assert_close(cls, ref_cls)
            torch.testing.assert_close(patches, ref_patches)


# (steps, final / first loss ratio to beat, overrides). The reconstruction losses are bounded by the noise.
OVERFIT = {"simclr": (20, 0.2, {}), "sleepfm": (25, 0.5, {"lr": 1e-3}), "mae": (40, 0.5, {"mask_ratio": 0.5}),
           "vqvae": (40, 0.7, {}), "ar": (40, 0.3, {})}


@pytest.mark.parametrize("method", BASELINES)
def test_fixed_batch_is_overfit(method):
    steps, ratio, overrides = OVERFIT[method]
    model = _method(method, **overrides)
    batch = _structured_batch()
    optimizer = model.configure_optimizers()["optimizer"]
    model.train()
    losses = []
    for step in range(steps):
        out = model.ssl_step(batch, torch.Generator().manual_seed(0), update_state=True)  # same views every step
        optimizer.zero_grad()
        (out.loss + model._probe(out.probe_features, batch)[0]).backward()
        if step == 0:  # DDP runs without find_unused_parameters: every trainable parameter needs a gradient
            missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
            assert not missing, missing
        optimizer.step()
        losses.append(float(out.loss.detach()))
        assert math.isfinite(losses[-1]), (method, losses)
    assert out.probe_features.shape == (8, model.width)
    assert min(losses[-3:]) < ratio * losses[0], (method, losses)
    if method == "vqvae":
        assert out.logs["vq_usage"] >= 0.25 and out.logs["vq_perplexity"] > 4  # codes stay in use
    model.eval()
    with torch.no_grad():  # the validation path: no state updates
        state = {k: v.clone() for k, v in model.state_dict().items()}
        val = model.ssl_step(batch, torch.Generator().manual_seed(1), update_state=False)
    assert math.isfinite(float(val.loss))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


# --- MAE ------------------------------------------------------------------------------------------
def test_mae_masks_exactly_the_ratio():
    keep, masked = random_keep_indices(16, 90, 0.75, torch.Generator().manual_seed(0))
    assert keep.shape == (16, 22) and torch.all(masked.sum(1) == 68)  # round(0.75 * 90) = 68 masked
    assert torch.all(keep.diff(dim=1) > 0)  # sorted, distinct
    assert not masked.gather(1, keep).any() and torch.all((~masked).sum(1) == keep.shape[1])
    assert not torch.equal(masked[0], masked[1])  # a fresh mask per sample
    with pytest.raises(ValueError, match="mask ratio"):
        random_keep_indices(2, 90, 1.0)


def test_mae_loss_covers_masked_tokens_only():
    model = _method("mae").eval()
    batch = _structured_batch(4)
    keep, _ = random_keep_indices(4, model.backbone.num_tokens, 0.75, torch.Generator().manual_seed(5))
    tamper: dict[str, torch.Tensor | float] = {"add": 0.0}
    # Same generator seed as the step below, so `keep` is the step's set of visible tokens.
    model.decoder.register_forward_hook(lambda module, args, output: output + tamper["add"])

    def loss() -> float:
        with torch.no_grad():
            return float(model.ssl_step(batch, torch.Generator().manual_seed(5), update_state=False).loss)

    base = loss()
    visible = torch.zeros(4, model.backbone.num_tokens, 1)
    visible.scatter_(1, keep.unsqueeze(-1), 1000.0)
    tamper["add"] = visible  # garbage at every visible token
    assert loss() == pytest.approx(base, rel=1e-6)
    tamper["add"] = 1000.0 - visible  # garbage at the masked ones
    assert loss() > 1e4


# --- VQ-VAE ---------------------------------------------------------------------------------------
def test_vqvae_straight_through_gradient_reaches_the_encoder():
    model = _method("vqvae", commitment_weight=0.0)  # EMA codebook + no commitment: reconstruction only
    out = model.ssl_step(_structured_batch(4), torch.Generator().manual_seed(0), update_state=False)
    out.loss.backward()
    assert out.logs["vq_loss"] == 0
    for module in (model.backbone.block0, model.backbone.to_patch_embedding, model.pre_quant):
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_vqvae_learned_codebook_trains_without_weight_decay():
    model = _method("vqvae", vq_ema=False, weight_decay=0.05)
    groups = {g["name"]: g["params"] for g in model.configure_optimizers()["optimizer"].param_groups}
    assert any(p is model.quantizer.codebook for p in groups["no_decay"])
    assert not any(p is model.quantizer.codebook for p in groups["decay"])
    out = model.ssl_step(_structured_batch(4), torch.Generator().manual_seed(0), update_state=True)
    out.loss.backward()
    assert model.quantizer.codebook.grad.abs().sum() > 0


# --- AR -------------------------------------------------------------------------------------------
def test_ar_outputs_at_time_t_ignore_later_inputs():
    model = _method("ar").eval()
    backbone, n_time = model.backbone, model.backbone.num_time_patches
    x = _structured_batch(4)["signal"][:2]
    t0 = 4
    later = x.clone()
    later[..., (t0 + 1) * backbone.patch_size:] = torch.randn_like(later[..., (t0 + 1) * backbone.patch_size:])
    bias = time_causal_attn_bias(backbone)
    with torch.no_grad():
        tokens = backbone.forward_encoding(x, attn_bias=bias)[1].view(2, backbone.num_groups, n_time, -1)
        tokens_later = backbone.forward_encoding(later, attn_bias=bias)[1].view(2, backbone.num_groups, n_time, -1)
        bidirectional = backbone.forward_encoding(later)[1].view(2, backbone.num_groups, n_time, -1)
    torch.testing.assert_close(tokens[:, :, : t0 + 1], tokens_later[:, :, : t0 + 1])  # every group, t <= t0
    assert (tokens[:, :, t0 + 1:] - tokens_later[:, :, t0 + 1:]).abs().amax(-1).min() > 1e-4
    assert (bidirectional[:, :, : t0 + 1] - tokens_later[:, :, : t0 + 1]).abs().max() > 1e-3  # the mask matters
    # Token (g, t) is trained on patch (g, t + 1); the last time step has no target.
    patches = patchify(x, backbone)
    targets, has_target = next_patch_targets(patches, backbone)
    g, t = 2, 6
    torch.testing.assert_close(targets[:, g * n_time + t], patches[:, g * n_time + t + 1])
    assert has_target.view(backbone.num_groups, n_time)[:, -1].sum() == 0 and has_target.sum() == 3 * (n_time - 1)


# --- SleepFM --------------------------------------------------------------------------------------
def test_sleepfm_modality_views_and_presence():
    masks = modality_channel_masks()
    assert masks.sum(1).tolist() == [len(c) for c in config.MODALITIES.values()] and masks.sum() == 12
    assert not (masks.sum(0) > 1).any()  # each channel in exactly one modality
    model = _method("sleepfm").eval()
    batch = _structured_batch(4)
    present = model.modality_presence(batch["channel_mask"], 4)
    assert present.tolist() == [[True] * 4, [False, True, False, True], [True, False, False, True]]
    # The cardiac view sees ECG only: changing every other channel leaves its embedding unchanged.
    other = batch["signal"].clone()
    other[:, [c != config.CHANNEL_INDEX["ECG"] for c in range(12)]] += 1.0
    with torch.no_grad():
        a = model.encode_modalities(batch["signal"], batch["channel_mask"])
        b = model.encode_modalities(other, batch["channel_mask"])
    torch.testing.assert_close(a[1], b[1])
    assert (a[0] - b[0]).abs().max() > 1e-3 and (a[2] - b[2]).abs().max() > 1e-3


def test_sleepfm_separate_backbones_train_and_export_the_first_modality():
    model = _method("sleepfm", separate_backbones=True)
    assert sorted(model.modality_backbones) == ["cardiac", "respiratory"]
    out = model.ssl_step(_structured_batch(4), torch.Generator().manual_seed(0), update_state=True)
    out.loss.backward()
    for module in (model.backbone, *model.modality_backbones.values()):
        assert module.block0.attn.fn.to_qkv.weight.grad.abs().sum() > 0
    exported = model.export_backbone()
    for key, value in model.backbone.state_dict().items():
        torch.testing.assert_close(exported.state_dict()[key], value)

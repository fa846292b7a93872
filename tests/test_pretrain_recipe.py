"""Named recipes, lr scaling with the global batch, DINO's last-layer freeze."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

import train_config
from osf.models.osf_dino import OSFDINOConfig
from osf.models import create_method

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]


def _resolve(argv: list[str]) -> dict:
    from main_pipelines import main_pretrain as module
    from osf.models.training import resolve_pretrain_config

    args = module.build_parser().parse_args(["--data_dir", "STORE", "--psg_encoder_name", "vit_nano", *argv])
    return resolve_pretrain_config(module.config_from_args(args)).to_record()


def test_small_recipe_sets_its_values_and_flags_still_win():
    published = _resolve(["--max_steps", "10"])
    assert published["recipe"] == "osf" and published["method_kwargs"]["dino_out_dim"] == 2048
    assert published["lr"] == OSFDINOConfig().lr and "base_lr" not in published
    small = _resolve(["--max_steps", "10", "--recipe", "small"])
    recipe = train_config.RECIPES["small"].methods["dino_ours"]
    for key in ("dino_out_dim", "dino_hidden_dim", "ibot_lambda", "teacher_temp", "momentum_base",
                "freeze_last_layer_frac", "koleo_lambda"):
        assert small["method_kwargs"][key] == recipe[key], key
    assert small["batch_size"] == 32 and small["lr_base_batch"] == 256
    assert small["lr"] == pytest.approx(recipe["lr"] * 32 / 256) == small["method_kwargs"]["lr"]
    overridden = _resolve(["--max_steps", "10", "--recipe", "small", "--dino_out_dim", "512", "--teacher_temp", "0.05"])
    assert overridden["method_kwargs"]["dino_out_dim"] == 512 and overridden["method_kwargs"]["teacher_temp"] == 0.05


def test_lr_scales_linearly_with_the_global_batch():
    one = _resolve(["--max_steps", "10", "--lr", "1e-3", "--lr_base_batch", "256", "--batch_size", "64"])
    assert one["lr"] == pytest.approx(2.5e-4) and one["base_lr"] == 1e-3
    many = _resolve(["--max_steps", "10", "--lr", "1e-3", "--lr_base_batch", "256", "--batch_size", "64",
                     "--num_devices", "2", "--num_nodes", "2", "--accumulate_grad_batches", "2"])
    assert many["lr"] == pytest.approx(1e-3 * 64 * 8 / 256) == many["method_kwargs"]["lr"]


def test_unknown_recipe_is_refused_with_the_choices():
    from osf.models.training import resolve_pretrain_config

    with pytest.raises(ValueError, match=r"unknown --recipe 'huge'; choose one of \['osf', 'small'\]"):
        resolve_pretrain_config({"model_name": "dino_ours", "psg_encoder_name": "vit_nano", "recipe": "huge",
                                 "max_steps": 5, "seed": 0})


class _Trajectory(pl.Callback):
    """Prototype weights and a backbone weight after every optimizer step."""

    def __init__(self) -> None:
        self.prototypes, self.patch_embed = [], []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.prototypes.append(module.head.last_layer.parametrizations.weight.original1.detach().clone())
        self.patch_embed.append(module.backbone.to_patch_embedding.weight.detach().clone())


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_prototypes_stay_fixed_while_the_last_layer_is_frozen():
    torch.manual_seed(0)
    model = create_method("dino_ours", "vit_nano", dino_out_dim=32, dino_hidden_dim=32, dino_bottleneck_dim=16,
                          n_local_views=0, freeze_last_layer_frac=0.5, lr=1e-2, warmup_frac=0.0, probe_num_classes=2)
    initial = model.head.last_layer.parametrizations.weight.original1.detach().clone()
    batches = [{"signal": torch.randn(4, 12, 1920)} for _ in range(4)]
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    seen = _Trajectory()
    trainer = pl.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[seen])
    trainer.fit(model, loader)
    assert model.last_layer_frozen_steps() == 2
    assert torch.equal(seen.prototypes[0], initial) and torch.equal(seen.prototypes[1], initial)  # steps 0, 1
    assert not torch.equal(seen.prototypes[3], initial)  # trained from step 2 on
    assert not torch.equal(seen.patch_embed[0], seen.patch_embed[1])  # the backbone trains all along


def test_head_pooling_mean_feeds_the_patch_mean_to_the_head_and_to_the_probe():
    torch.manual_seed(0)
    kwargs = {"dino_out_dim": 32, "dino_hidden_dim": 32, "dino_bottleneck_dim": 16, "n_local_views": 0, "total_steps": 4}
    model = create_method("dino_ours", "vit_nano", head_pooling="mean", **kwargs)
    x = torch.randn(3, 12, 1920)
    cls, patches = model.teacher_backbone.forward_encoding(x)
    torch.testing.assert_close(model.pool(cls, patches), patches.mean(1))
    torch.testing.assert_close(model.pooled_embedding(model.teacher_backbone, x), patches.mean(1))
    with torch.no_grad():
        out = model.ssl_step({"signal": x}, torch.Generator().manual_seed(0), update_state=False)
        views = model.make_views(x, None, torch.Generator().manual_seed(0))[:3]
        _, view_patches = model.teacher_backbone.forward_encoding(views)
    torch.testing.assert_close(out.probe_features, view_patches.mean(1))
    assert create_method("dino_ours", "vit_nano", **kwargs).embedding_pooling == "cls"  # the released recipe
    with pytest.raises(ValueError, match=r"head_pooling must be one of \('cls', 'mean', 'groups'\), got 'max'"):
        create_method("dino_ours", "vit_nano", head_pooling="max", **kwargs)


def test_head_pooling_groups_gives_the_head_one_row_per_channel_group():
    from osf.downstream.features import pool_tokens

    torch.manual_seed(0)
    kwargs = {"dino_out_dim": 32, "dino_hidden_dim": 32, "dino_bottleneck_dim": 16, "n_local_views": 0, "total_steps": 4}
    model = create_method("dino_ours", "vit_nano", head_pooling="groups", koleo_lambda=0.1, ibot_lambda=1.0, **kwargs)
    groups, width = model.backbone.num_groups, model.backbone.width
    assert model.head_rows == groups == 3
    x = torch.randn(2, 12, 1920)
    cls, patches = model.teacher_backbone.forward_encoding(x)
    rows = model.pool(cls, patches)  # the probes' `groups` features, one group per row
    torch.testing.assert_close(rows, pool_tokens(cls, patches, "groups", groups).view(2 * groups, width))
    torch.testing.assert_close(model.pooled_embedding(model.teacher_backbone, x), rows)
    with torch.no_grad():
        out = model.ssl_step({"signal": x}, torch.Generator().manual_seed(0), update_state=True)
        views = model.make_views(x, None, torch.Generator().manual_seed(0))[:2]
        _, view_patches = model.teacher_backbone.forward_encoding(views)
    assert torch.isfinite(out.loss) and out.logs["koleo_loss"].isfinite()
    torch.testing.assert_close(out.probe_features, view_patches.mean(1))  # [B, width]: the mean of the group rows
    metrics = model.diagnostic_metrics({"signal": x})
    assert 0 < metrics["teacher_batch_entropy"] <= math.log(32) + 1e-5


def test_the_small_recipe_does_not_warn_and_keeps_a_sharper_teacher_than_the_published_one(tmp_path, capsys):
    """Both recipes at one short budget, K and batch; the small one must come out healthy and less uniform."""
    import json

    from pretrain_utils import TinyDataModule, tiny_run_config

    from osf.models.diagnostics import SUMMARY_FILE
    from osf.models.training import run_pretrain

    head = {"dino_out_dim": 64, "dino_hidden_dim": 64, "dino_bottleneck_dim": 32, "n_local_views": 0}
    ratio, out = {}, {}
    for recipe in ("osf", "small"):
        cfg = tiny_run_config("dino_ours", tmp_path / recipe, recipe=recipe, lr=None, max_steps=8,
                              ckpt_every_n_steps=8, diag_every_n_steps=4, method_kwargs=head)
        result = run_pretrain(cfg, datamodule=TinyDataModule())
        summary = json.loads((result.run_dir / SUMMARY_FILE).read_text())
        out[recipe] = (summary, capsys.readouterr().out)
        ratio[recipe] = summary["final"]["teacher_entropy"] / summary["final"]["log_k"]
    small_summary, small_out = out["small"]
    assert small_summary["judged"] and small_summary["healthy"] and "WARNING:" not in small_out, small_out
    assert ratio["small"] < ratio["osf"] - 0.1, ratio

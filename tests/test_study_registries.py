"""Registries as the only lists: a toy task and a toy objective, each registered in one place, run through the
linear probe and the pre-training smoke path, and show up in the studies' defaults (then are unregistered)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from osf import config, entry_calls, tasks
from osf.models.base import MethodConfig, PretrainModule, SSLStepOutput
from osf.models.registry import METHODS, list_methods, methods_in_order, register_method, unregister_method
from osf.utils.config_fields import option

pytestmark = pytest.mark.usefixtures("one_thread")

TOY_TASK = tasks.Task("Toy Event", "toy_event", "event", summary_key="toy_event_index")
TOY_METHOD = "toy_objective"


@pytest.fixture
def toy_task():
    """The toy task registered (one call), unregistered afterwards whatever happens."""
    tasks.register_task(TOY_TASK)
    try:
        yield TOY_TASK
    finally:
        tasks.unregister_task(TOY_TASK.name)


@pytest.fixture
def toy_store(tmp_path) -> Path:
    """A random store whose index carries the toy task's label column (what its scoring module would write):
    the epochs with an arousal or a hypopnea."""
    from osf.testing import make_random_store

    root = make_random_store(tmp_path / "store", n_subjects=6, n_epochs=40, seed=0)
    index = pd.read_parquet(root / "index.parquet")
    toy = ((index["arousal"] == 1) | (index["hypopnea"] == 1)).astype("int8")
    index[TOY_TASK.label_column] = toy
    index.to_parquet(root / "index.parquet")
    np.save(root / "index" / f"{TOY_TASK.label_column}.npy", toy.to_numpy())  # the store's per-row column
    return root


def test_the_task_registry_is_the_one_list(toy_task):
    assert tasks.studied_tasks() == ("Stage", "Arousal", "Hypopnea", "Oxygen Desaturation", "Toy Event")
    assert config.LABEL_COLUMNS["Toy Event"] == "toy_event" and "Toy Event" in config.LABEL_COLUMNS
    assert (toy_task.reporting_metric, toy_task.selection_metric) == ("auroc", "auprc")
    assert tasks.get_task("Stage").reporting_metric == "kappa" and tasks.get_task("Stage").selection_metric == "macro_f1"
    assert tasks.by_column("toy_event") is toy_task

    from osf.predict.summary import event_indices
    from osf.quickstart import QuickstartConfig
    from osf.sleepbench.config import SleepBenchConfig

    assert QuickstartConfig().tasks[-1] == "Toy Event"  # the studies' default task lists are the registry's
    assert SleepBenchConfig.tiny(tasks=("Stage", "Toy Event")).tasks == ("Stage", "Toy Event")
    probs = torch.tensor([0.9, 0.9, 0.1, 0.8]).numpy()
    out = event_indices({"Toy Event": probs}, probs > 0, epoch_sec=30.0)
    assert out["toy_event_events"] == 2 and out["toy_event_index"] == pytest.approx(2 / (4 * 30 / 3600))


def test_registering_refuses_a_taken_name_or_column_and_unknown_kinds(toy_task):
    with pytest.raises(ValueError, match="task 'Toy Event' is already registered"):
        tasks.register_task(toy_task)
    with pytest.raises(ValueError, match="label column 'arousal' already belongs to 'Arousal'"):
        tasks.register_task(tasks.Task("Other", "arousal", "event"))
    with pytest.raises(ValueError, match="kind must be one of"):
        tasks.Task("Other", "other", "regression")
    with pytest.raises(ValueError, match=r"unknown task 'Nope'; choose one of \['Stage'"):
        tasks.get_task("Nope")
    assert tasks.selection_metric("night", "regression") == "neg_mae"
    with pytest.raises(ValueError, match="no selection metric for level 'week'"):
        tasks.selection_metric("week", "binary")


def test_unregistered_task_is_gone_everywhere(toy_task):
    tasks.unregister_task(toy_task.name)
    assert "Toy Event" not in config.LABEL_COLUMNS and "Toy Event" not in tasks.studied_tasks()
    tasks.register_task(toy_task)  # the fixture unregisters it again


def test_a_toy_task_runs_through_the_linear_probe(toy_task, toy_store, tmp_path):
    out = tmp_path / "probe"
    entry_calls.downstream({"ckpt_path": "none", "psg_encoder_name": "vit_nano", "model_name": "random_init",
                            "data_dir": str(toy_store), "eval_label": "Toy Event", "max_steps": 30, "batch_size": 32,
                            "seed": 0, "n_boot": 10, "run_name": "probe", "output_dir": str(out),
                            "accelerator": "cpu", "export_classifier": False})
    run = json.loads((out / "probe.json").read_text())
    assert run["selection"]["metric"] == toy_task.selection_metric
    test = run["metrics"]["test"]
    assert math.isfinite(test[toy_task.reporting_metric]) and 0.0 <= test[toy_task.reporting_metric] <= 1.0
    assert run["metrics"]["test"]["class_names"] == ["No Toy Event", "Toy Event"]


@dataclass
class ToyConfig(MethodConfig):
    """The toy objective's settings: one of its own."""

    noise_std: float = option(0.1, help="std of the noise between the two views")


class ToyObjective(PretrainModule):
    """Toy objective: the CLS of an epoch and of a noisy copy agree (cosine), a few lines on the shared base."""

    config_type = ToyConfig
    cfg: ToyConfig

    def ssl_step(self, batch: dict[str, Any], generator: torch.Generator, update_state: bool) -> SSLStepOutput:
        """1 - cosine similarity of the two views' CLS."""
        x, mask = batch["signal"], batch.get("channel_mask")
        noise = torch.randn(x.shape, generator=generator, device=x.device) * self.cfg.noise_std
        a, _ = self.encode(self.backbone, x, channel_mask=mask)
        b, _ = self.encode(self.backbone, x + noise, channel_mask=mask)
        loss = 1 - torch.nn.functional.cosine_similarity(a, b, dim=-1).mean()
        return SSLStepOutput(loss=loss, probe_features=a)


@pytest.fixture
def toy_objective():
    """The toy objective registered (one decorator call), unregistered afterwards whatever happens."""
    register_method(TOY_METHOD, rank=99)(ToyObjective)
    try:
        yield ToyObjective
    finally:
        unregister_method(TOY_METHOD)


def test_a_toy_objective_runs_through_the_pretraining_smoke_path(toy_objective, tiny_store, tmp_path):
    from osf.sleepbench.config import SleepBenchConfig

    assert methods_in_order()[0] == "dino_ours" and methods_in_order()[-1] == TOY_METHOD
    assert TOY_METHOD in list_methods() and SleepBenchConfig().methods[-1] == TOY_METHOD
    flags = {"model_name": TOY_METHOD, "psg_encoder_name": "vit_nano", "data_dir": str(tiny_store),
             "recipe": "small", "batch_size": 8, "max_steps": 3, "noise_std": 0.2, "num_workers": 0, "seed": 0,
             "accelerator": "cpu", "output_dir": str(tmp_path / "runs"), "run_name": "toy", "logger": "csv",
             "ckpt_every_n_steps": 3, "limit_val_batches": 1, "log_every_n_steps": 1, "progress_bar": False}
    result = entry_calls.pretrain(flags)  # main_pretrain.py's flags, parsed as that entry point parses them
    assert result.model.trainer.global_step == 3 and result.model.cfg.noise_std == 0.2
    assert math.isfinite(float(result.model.trainer.callback_metrics["train/loss"]))
    pth, _ = entry_calls.export({"ckpt_path": str(result.last_checkpoint), "output": str(tmp_path / "toy.pth")})
    from osf.backbone.checkpoint import load_backbone

    assert load_backbone(pth)[1]["model_name"] == TOY_METHOD


def test_unregistering_the_toy_objective_leaves_the_seven(toy_objective):
    unregister_method(TOY_METHOD)
    assert TOY_METHOD not in METHODS and methods_in_order() == (
        "dino_ours", "dino", "simclr", "sleepfm", "mae", "vqvae", "ar")
    register_method(TOY_METHOD, rank=99)(ToyObjective)  # the fixture unregisters it again

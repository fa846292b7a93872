"""Staging with the channels a night has (issue 29, item 4): training over the presets, kappa per preset, the match."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from osf import config
from osf.datasets.channelset import ChannelSet
from osf.datasets.datamodule import SleepDataModule
from osf.downstream.classifier import (
    VALIDATION_KEY,
    SleepClassifier,
    closest_validated_preset,
    load_classifier,
    save_classifier,
)
from osf.downstream.epoch.presets import preset_kappas
from osf.downstream.run_config import resolve_downstream_config, validate_config

pytestmark = pytest.mark.usefixtures("one_thread")
PRESETS = ("full", "eeg_eog_only", "cardio_respiratory")


def test_training_epochs_are_seen_through_one_preset_each(tiny_store) -> None:
    dm = SleepDataModule(tiny_store, task="downstream", eval_label="Stage", batch_size=64, train_presets=PRESETS)
    dm.setup()
    torch.manual_seed(0)
    batch = next(iter(dm.train_dataloader()))
    masks = {tuple(ChannelSet.from_spec(p).mask) for p in PRESETS}
    seen = set()
    for signal, mask in zip(batch["signal"], batch["channel_mask"]):
        hidden = ~mask.numpy()
        assert (signal[torch.from_numpy(hidden)] == 0).all()  # hidden channels are zeroed
        fits = [m for m in masks if not (mask.numpy() & ~np.asarray(m)).any()]
        assert fits  # every epoch's channels lie within one preset
        seen.add(min(fits, key=sum))
    assert len(seen) >= 2  # different epochs, different presets
    assert dm.summary()["train_presets"] == list(PRESETS)
    with pytest.raises(ValueError, match="exclude each other"):
        SleepDataModule(tiny_store, task="downstream", eval_label="Stage", train_presets=PRESETS, mask_train_channels=True)


def test_mask_train_presets_is_checked_before_training(tiny_store) -> None:
    base = {"data_dir": str(tiny_store), "eval_label": "Stage"}
    validate_config(resolve_downstream_config({**base, "mask_train_presets": "full,eeg_eog_only"}))  # a probe too
    from osf.downstream.night.run import check_night_config
    from osf.downstream.sequence.run import check_sequence_config

    with pytest.raises(ValueError, match="--context_epochs trains on the features of one montage"):
        check_sequence_config(resolve_downstream_config({**base, "context_epochs": 3, "mask_train_presets": "all"}))
    with pytest.raises(ValueError, match="--eval_level night trains on the features of one montage"):
        check_night_config(resolve_downstream_config({**base, "eval_level": "night", "target_variable": "nsrr_age",
                                                      "subject_tables": str(tiny_store), "mask_train_presets": "all"}))
    with pytest.raises(ValueError, match=r"unknown preset\(s\) \['eeg_only'\]"):
        validate_config(resolve_downstream_config({**base, "finetune_backbone": True, "mask_train_presets": "full,eeg_only"}))
    with pytest.raises(ValueError, match="exclude each other"):
        validate_config(resolve_downstream_config({**base, "finetune_backbone": True, "mask_train_presets": "all",
                                                   "mask_train_channels": True, "eval_channels": "eeg_eog_only"}))
    cfg = resolve_downstream_config({**base, "finetune_backbone": True, "mask_train_presets": "all"})
    validate_config(cfg)
    assert cfg.train_channels == "presets:all"


def test_kappa_per_preset_is_stored_in_the_classifier_file(tiny_store, tmp_path) -> None:
    from osf.backbone.checkpoint import backbone_metadata
    from osf.backbone.vit1d_cls import create_backbone
    from osf.datasets.store import EpochStore
    from osf.downstream.inputs import build_datamodule

    torch.manual_seed(0)
    backbone = create_backbone("vit_nano")
    clf = SleepClassifier(backbone, {"stage": torch.nn.Linear(backbone.width, 4)}, {"stage": list(config.STAGE_NAMES_4)},
                          backbone_metadata=backbone_metadata(backbone, "random"))
    dm = build_datamodule(resolve_downstream_config({"data_dir": str(tiny_store), "eval_label": "Stage"}),
                          EpochStore(tiny_store), 64, seed=0)
    scores = preset_kappas(clf, "stage", dm, PRESETS, batch_size=64)
    assert set(scores) == {"val", "test"} and all(set(s) == set(PRESETS) for s in scores.values())
    assert all(np.isfinite(k) and -1 <= k <= 1 for s in scores.values() for k in s.values())
    # The full montage and the cardio-respiratory one give different predictions, hence (generally) kappas.
    assert scores["val"]["full"] != scores["val"]["cardio_respiratory"]
    clf.info[VALIDATION_KEY] = scores["val"]
    loaded = load_classifier(save_classifier(clf, tmp_path / "classifier.pt"))
    assert loaded.info[VALIDATION_KEY] == pytest.approx(scores["val"])


def test_closest_validated_preset() -> None:
    validated = {"full": 0.8, "eeg_eog_only": 0.7, "cardio_respiratory": 0.4}
    contract = list(config.CHANNELS)
    full = closest_validated_preset(validated, config.CHANNELS, contract)
    assert full["preset"] == "full" and full["night_lacks"] == []
    sleep_edf = closest_validated_preset(validated, ["EOG_E1_A2", "EEG_C3_A2", "EEG_C4_A1"], contract)
    assert sleep_edf["preset"] == "eeg_eog_only" and sleep_edf["night_lacks"] == ["EOG_E2_A1"]
    assert sleep_edf["validation_kappa"] == 0.7
    home = closest_validated_preset(validated, ["ECG", "ABD", "THX", "NP", "SN", "EMG_Chin"], contract)
    assert home["preset"] == "cardio_respiratory" and home["night_adds"] == ["EMG_Chin"]
    assert closest_validated_preset({}, config.CHANNELS, contract) is None


def test_a_probe_over_presets_trains_and_selects_on_every_preset(tiny_store, tmp_path) -> None:
    """The probe's head sees each training epoch through every preset: through EEG+EOG only it stages better than the
    head trained on the full montage alone, and the classifier file holds its validation kappa per preset."""
    from osf.downstream.pipeline import run_downstream

    def probe(name: str, presets: str) -> dict:
        return run_downstream(resolve_downstream_config({
            "data_dir": str(tiny_store), "output_dir": str(tmp_path / name), "psg_encoder_name": "vit_nano",
            "eval_label": "Stage", "pooling": "groups", "max_steps": 60, "eval_every": 20, "batch_size": 64,
            "n_boot": 20, "mask_train_presets": presets, "results_csv": str(tmp_path / "results.csv")}))

    presets = ("full", "eeg_eog_only")
    mixed, full_only = probe("mixed", ",".join(presets)), probe("full_only", "")
    timings = mixed["timings"]
    assert all(f"features_{split}_{p}_s" in timings for split in ("train", "val") for p in presets)
    assert "features_train_s" not in timings  # the run's own (randomly masked) training split is not extracted
    clf = load_classifier(mixed["artifacts"]["classifier"])
    assert clf.info["train_presets"] == list(presets) and set(clf.info[VALIDATION_KEY]) == set(presets)
    assert mixed["kappa_by_preset"]["test"]["eeg_eog_only"] > full_only_kappa(full_only, tiny_store) + 0.05


def full_only_kappa(record: dict, store) -> float:
    """The full-montage probe's test kappa when the night holds EEG+EOG only."""
    from osf.datasets.store import EpochStore
    from osf.downstream.inputs import build_datamodule

    dm = build_datamodule(resolve_downstream_config({"data_dir": str(store), "eval_label": "Stage"}),
                          EpochStore(store), 64, seed=0)
    clf = load_classifier(record["artifacts"]["classifier"])
    return preset_kappas(clf, "stage", dm, ("eeg_eog_only",), splits=("test",), batch_size=64)["test"]["eeg_eog_only"]

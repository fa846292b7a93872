"""osf.downstream.ceilings: handcrafted features, the supervised CNN, channel presets and run_ceiling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from osf import config
from osf.datasets.channelset import ChannelSet
from osf.datasets.store import EpochStore
from osf.downstream import ceilings
from osf.downstream.metrics import load_predictions, paired_difference
from osf.testing.stores import make_random_store

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """10 subjects x 40 epochs, half of them in training; the stage is planted in the EEG/EOG/EMG."""
    root = tmp_path_factory.mktemp("ceil") / "store"
    return make_random_store(root, n_subjects=10, n_epochs=40, seed=3, split_fractions=(0.5, 0.25, 0.25))


@pytest.fixture(scope="module")
def splits(store):
    return ceilings.load_task_splits(store, "full", "Stage")[0]


def test_features_are_finite_and_shaped():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, config.NUM_CHANNELS, config.EPOCH_SAMPLES)).astype(np.float32)
    mask = np.ones((5, config.NUM_CHANNELS), dtype=bool)
    mask[1, config.CHANNEL_INDEX["ECG"]] = False
    x[2] = 0.0  # an all-zero epoch must not give NaN / inf
    feats = ceilings.handcrafted_features(x, mask)
    assert feats.shape == (5, len(ceilings.feature_names()))
    assert np.isfinite(feats).all()
    ecg_cols = ceilings.feature_channels() == config.CHANNEL_INDEX["ECG"]
    assert (feats[1, ecg_cols] == 0).all()


def test_heart_and_breath_features_read_rates():
    t = np.arange(config.EPOCH_SAMPLES) / config.SAMPLE_RATE
    ecg = np.zeros_like(t)
    ecg[(np.arange(0.5, 30, 1.0) * config.SAMPLE_RATE).astype(int)] = 1.0  # 60 bpm, perfectly regular
    hr, _, _, n_beats = ceilings.heart_features(ecg)
    assert hr == pytest.approx(60.0, rel=0.02) and n_beats == 30
    rate, interval_cv, _, _ = ceilings.breath_features(np.sin(2 * np.pi * 0.25 * t))
    assert rate == pytest.approx(15.0, rel=0.05) and interval_cv < 0.05


def test_cnn_training_loss_goes_down(splits):
    keep = ChannelSet.full().mask
    torch.manual_seed(0)
    train = splits["train"]
    x, m, y = (torch.from_numpy(train.signal[:64]), torch.from_numpy(train.channel_mask[:64]),
               torch.from_numpy(train.labels[:64]))
    before = torch.nn.functional.cross_entropy(ceilings.EpochCNN(4, keep).eval()(x, m), y).item()
    model, selection = ceilings.fit_cnn(splits, 4, keep, seed=0, max_steps=40, eval_every=20, batch_size=32)
    after = torch.nn.functional.cross_entropy(model(x, m), y).item()
    assert after < before
    assert selection["param"] == "step" and len(selection["history"]) == 2


def test_absent_channel_does_not_change_the_prediction(splits):
    keep = ChannelSet.from_spec("cardio_respiratory").mask
    model = ceilings.EpochCNN(4, keep).eval()
    data = splits["test"]
    x, m = torch.from_numpy(data.signal[:8].copy()), torch.from_numpy(data.channel_mask[:8])
    y0 = model(x, m)
    x[:, config.CHANNEL_INDEX["EEG_C3_A2"]] += 5.0
    assert torch.equal(model(x, m), y0)
    x[:, config.CHANNEL_INDEX["ECG"]] += 5.0
    assert not torch.equal(model(x, m), y0)


def test_preset_zeroes_other_channels_in_every_split(store):
    loaded, names = ceilings.load_task_splits(store, "cardio_respiratory", "Stage")
    eeg = config.CHANNEL_INDEX["EEG_C4_A1"]
    assert names == config.STAGE_NAMES_4
    for data in loaded.values():
        assert not data.signal[:, eeg].any() and not data.channel_mask[:, eeg].any()


def test_preset_features_are_columns_of_one_cached_full_montage_computation(store, tmp_path, monkeypatch):
    """Each preset's features equal the per-preset computation they replace; the store's are computed once."""
    monkeypatch.setattr(ceilings, "_READ_CHUNK", 64)  # several chunks: no feature may depend on its batch
    compute, computed = ceilings.compute_store_features, []
    monkeypatch.setattr(ceilings, "compute_store_features",
                        lambda opened, rows: computed.append(rows.size) or compute(opened, rows))
    opened = EpochStore(store)
    for preset in ("cardio_respiratory", "eeg_eog_only", "full"):  # eeg_eog_only: subject 1 has no EEG
        loaded = ceilings.load_task_splits(store, preset, "Stage")[0]
        keep = ChannelSet.from_spec(preset).mask
        feats = ceilings.preset_features(opened, loaded, keep, tmp_path)
        per_preset = ceilings.preset_features(opened, loaded, keep)  # no cache: from the preset-zeroed split
        for split in loaded:
            np.testing.assert_array_equal(feats[split], per_preset[split])
    assert computed == [sum(len(data.rows) for data in loaded.values())]
    assert len(list(tmp_path.glob("handcrafted_*.npz"))) == 1


def test_a_second_handcrafted_run_reads_the_feature_cache(store, tmp_path, monkeypatch):
    first = ceilings.run_ceiling("handcrafted", store, "full", "Stage", n_boot=0, feature_cache_dir=tmp_path)

    def no_extraction(*_args):
        raise AssertionError("features recomputed despite the cache")

    monkeypatch.setattr(ceilings, "handcrafted_features", no_extraction)
    again = ceilings.run_ceiling("handcrafted", store, "no_eeg", "Stage", n_boot=0, feature_cache_dir=tmp_path)
    assert first.metrics["n_epochs"] == again.metrics["n_epochs"] and 0.0 <= again.metrics["kappa"] <= 1.0


def test_handcrafted_beats_chance_where_the_label_is_planted(store, tmp_path):
    res = ceilings.run_ceiling("handcrafted", store, "eeg_eog_only", "Stage", n_boot=20, output_dir=tmp_path)
    assert res.metrics["kappa"] > 0.3
    assert len(res.metrics["kappa_ci95"]) == 2
    pred = load_predictions(res.predictions_path)
    assert pred["proba"].shape == (res.metrics["n_epochs"], 4)
    assert paired_difference(pred, pred, n_boot=5)["kappa"]["diff"] == 0.0
    assert json.loads((tmp_path / ceilings.RESULT_FILE).read_text())["kind"] == "handcrafted"


def test_binary_task_threshold_from_validation(store):
    res = ceilings.run_ceiling("supervised", store, "full", "Hypopnea", n_boot=0, max_steps=10)
    assert 0.0 <= res.metrics["threshold"] <= 1.0 and "auroc" in res.metrics
    assert res.selection["param"] == "step" and 1 <= res.selection["best"] <= 10


@pytest.mark.parametrize(
    ("kind", "preset", "task", "message"),
    [
        ("linear", "full", "Stage", "unknown ceiling kind 'linear'"),
        ("handcrafted", "no_such_preset", "Stage", "unknown channel preset 'no_such_preset'"),
        ("supervised", "full", "Apnoea", "unknown ceiling task 'Apnoea'"),
    ],
)
def test_bad_arguments_are_refused(store, kind, preset, task, message):
    with pytest.raises(ValueError, match=message) as err:
        ceilings.run_ceiling(kind, store, preset, task)
    assert "\n" not in str(err.value)

"""Sequence-context epoch heads: window layout, training, the classifier file, prediction and the CLI run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from osf.downstream.epoch.linear_probe import predict_proba, train_linear_probe
from osf.downstream.features import FeatureSet
from osf.downstream.metrics import confusion_matrix, kappa_from_confusion
from osf.downstream.sequence import (
    NightLayout,
    SequenceHead,
    context_data,
    paired_difference,
    predict_sequence_proba,
    train_sequence_head,
)

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def _hypnogram_features(n_nights: int, seed: int, noise: float = 2.0) -> FeatureSet:
    """Stages in long runs; each epoch's embedding = its stage's prototype + heavy noise, rows shuffled.

    One epoch alone is ambiguous; its neighbours (same stage, independent noise) are not.
    """
    protos = np.random.default_rng(123).normal(0, 1, (4, 16))  # the same stages in every split
    rng = np.random.default_rng(seed)
    feats, labels, recs, subjects, epochs = [], [], [], [], []
    for night in range(n_nights):
        stages = np.repeat(rng.integers(0, 4, 12), rng.integers(6, 14, 12))
        feats.append(protos[stages] + rng.normal(0, noise, (stages.size, 16)))
        labels.append(stages)
        recs += [f"r{seed}-{night}"] * stages.size
        subjects += [f"s{seed}-{night}"] * stages.size
        epochs.append(np.arange(stages.size))
    perm = rng.permutation(len(recs))
    return FeatureSet(np.concatenate(feats).astype(np.float32)[perm], np.concatenate(labels)[perm],
                      np.asarray(subjects)[perm], np.asarray(recs)[perm], np.concatenate(epochs)[perm])


def _kappa(y: np.ndarray, proba: np.ndarray) -> float:
    return kappa_from_confusion(confusion_matrix(y, proba.argmax(1), proba.shape[1]))


def test_windows_never_cross_nights():
    layout = NightLayout.from_lengths([3, 2], context=2)
    assert layout.position.tolist() == [2, 3, 4, 7, 8] and layout.total == 11
    valid = layout.pad(torch.ones(5, dtype=torch.bool), fill=False)
    win = layout.windows(torch.tensor([2, 3]))  # last epoch of night 1, first of night 2
    assert valid[win].tolist() == [[True, True, True, False, False], [False, False, True, True, False]]


@pytest.mark.parametrize("kind", ["transformer", "bigru"])
def test_sequence_head_beats_the_per_epoch_probe(kind):
    train, val, test = _hypnogram_features(20, 0), _hypnogram_features(4, 1), _hypnogram_features(8, 2)
    probe = train_linear_probe(train.features, train.labels, val.features, val.labels, 4, max_steps=100, eval_every=50)
    fit = train_sequence_head(train, val, 4, context=4, kind=kind, max_steps=80, lr=3e-3, batch_size=32, eval_every=40)
    k_epoch = _kappa(test.labels, predict_proba(probe.head, test.features))
    k_seq = _kappa(test.labels, predict_sequence_proba(fit.head, test))
    assert k_seq > k_epoch + 0.1, (k_epoch, k_seq)


def test_predictions_do_not_depend_on_row_order_and_match_a_whole_night():
    fs = _hypnogram_features(3, 5)
    head = SequenceHead(16, 4, context=3).eval()
    proba = predict_sequence_proba(head, fs)
    perm = np.random.default_rng(0).permutation(len(fs))
    np.testing.assert_allclose(predict_sequence_proba(head, fs.subset(perm)), proba[perm], atol=1e-6)
    night = fs.recording_ids == "r5-1"
    order = np.argsort(fs.epoch_index[night])
    whole = head.predict_night(torch.as_tensor(fs.features[night][order])).numpy()
    np.testing.assert_allclose(whole, proba[night][order], atol=1e-6)


def test_unknown_labels_are_context_but_not_targets():
    fs = _hypnogram_features(4, 3)
    fs.labels[::3] = -1
    data = context_data(fs, 2)
    assert int((data.y >= 0).sum()) == int((fs.labels >= 0).sum()) and bool(data.valid.sum() == len(fs))
    fit = train_sequence_head(fs, fs, 4, context=2, max_steps=5, eval_every=5)
    assert np.isfinite(fit.best_score)


def test_paired_difference_is_zero_for_the_same_model_and_signed_otherwise():
    y = np.array([0, 1, 2, 3] * 10)
    good = np.eye(4)[y]
    bad = np.roll(good, 1, axis=0)
    subjects = np.repeat(np.arange(10), 4).astype(str)
    same = paired_difference(y, good, good, subjects, "kappa", n_boot=50)
    assert same["delta"] == 0 and same["delta_ci95"] == [0.0, 0.0]
    better = paired_difference(y, bad, good, subjects, "kappa", n_boot=50)
    assert better["delta"] > 0.5 and better["delta_ci95"][0] > 0


def test_bad_sequence_settings_are_refused():
    with pytest.raises(ValueError, match="unknown sequence model 'lstm'"):
        SequenceHead(8, 4, 2, kind="lstm")
    with pytest.raises(ValueError, match="context .* must be >= 1"):
        SequenceHead(8, 4, 0)


# --- classifier file and prediction ------------------------------------------------------------
def test_classifier_with_a_sequence_head_round_trips_and_predicts_a_night(tmp_path):
    from osf.backbone.checkpoint import backbone_metadata
    from osf.backbone.vit1d_cls import create_backbone
    from osf.downstream.classifier import SleepClassifier, load_classifier, save_classifier
    from osf.predict.night import run_classifier

    torch.manual_seed(0)
    backbone = create_backbone("vit_nano").eval()
    seq = SequenceHead(backbone.width, 4, context=2).eval()
    clf = SleepClassifier(backbone, {"stage": torch.nn.Linear(backbone.width, 4)}, {"stage": list("WLDR")},
                          backbone_metadata=backbone_metadata(backbone, "t"), sequence_heads={"stage": seq})
    again = load_classifier(save_classifier(clf, tmp_path / "clf.pt"))
    assert list(again.sequence_heads) == ["stage"] and again.sequence_heads["stage"].context == 2
    signals = np.random.default_rng(0).normal(0, 1, (7, 12, 1920)).astype(np.float32)
    mask = np.ones((7, 12), bool)
    out = run_classifier(again, signals, mask, batch_size=3)["stage"]
    feats = again.embed(torch.as_tensor(signals), torch.as_tensor(mask))
    np.testing.assert_allclose(out, seq.predict_night(feats).numpy(), atol=1e-5)
    linear = run_classifier(clf.__class__(backbone, clf.heads, clf.label_names, backbone_metadata=clf.backbone_metadata),
                            signals, mask)["stage"]
    assert not np.allclose(out, linear)  # the sequence head, not the linear one, staged the night
    from osf.downstream.classifier import merge_classifiers

    arousal = SleepClassifier(backbone, {"arousal": torch.nn.Linear(backbone.width, 2)}, {"arousal": ["no", "yes"]},
                              backbone_metadata=clf.backbone_metadata)
    merged = merge_classifiers([clf, arousal])  # the sequence head survives a merge
    assert list(merged.sequence_heads) == ["stage"] and merged.tasks == ["stage", "arousal"]
    with pytest.raises(ValueError, match=r"sequence heads \['arousal'\] have no linear head"):
        SleepClassifier(backbone, clf.heads, clf.label_names, backbone_metadata=clf.backbone_metadata,
                        sequence_heads={"arousal": seq})


# --- the CLI run -------------------------------------------------------------------------------
def _main_finetune():
    from main_pipelines import main_finetune

    return main_finetune


def test_cli_context_run_reports_both_heads_and_exports_the_sequence_head(tmp_path):
    from osf.downstream.classifier import load_classifier
    from osf.testing import make_random_store

    store = make_random_store(tmp_path / "store", n_subjects=8, n_epochs=16, seed=0, split_fractions=(0.5, 0.25, 0.25))
    out = tmp_path / "out"
    args = ["--data_dir", str(store), "--output_dir", str(out), "--psg_encoder_name", "vit_nano", "--context_epochs", "2",
            "--sequence_model", "bigru", "--max_steps", "20", "--eval_every", "10", "--n_boot", "20"]
    assert _main_finetune().main(args) == 0
    table = pd.read_csv(out / "results.csv")
    assert table["setting"].tolist() == ["linear_probe", "sequence_bigru_k2"]
    assert table["context_epochs"].tolist() == [0, 2] and np.isfinite(table["test_kappa_delta"].iloc[1])
    record = json.loads(Path(table["json_path"].iloc[1]).read_text())
    assert record["comparison"]["against"] == "linear_probe" and len(record["comparison"]["delta_ci95"]) == 2
    assert record["comparison"]["delta"] == pytest.approx(table["test_kappa"].iloc[1] - table["test_kappa"].iloc[0])
    clf = load_classifier(out / "classifier.pt")
    assert clf.sequence_heads["stage"].config["kind"] == "bigru"


@pytest.mark.parametrize("extra, message", [
    (["--context_epochs", "-1"], r"--context_epochs must be >= 1, got -1"),
    (["--context_epochs", "3", "--finetune_backbone"], "trains on cached frozen features"),
])
def test_cli_bad_context_input_is_one_clear_line(tiny_store, tmp_path, capsys, extra, message):
    args = ["--data_dir", str(tiny_store), "--output_dir", str(tmp_path), "--psg_encoder_name", "vit_nano", *extra]
    assert _main_finetune().main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err


def test_quickstart_rows_for_night_level_and_sequence_staging(tmp_path):
    from osf.quickstart import (
        CONTEXT_EPOCHS,
        NIGHT_MIN_NIGHTS,
        Quickstart,
        QuickstartConfig,
        _context_results,
        _format_context,
    )

    small = Quickstart(QuickstartConfig.tiny(output_dir=tmp_path))
    assert "sequence_stage" in [s.name for s in small.steps] and "night_pretrained_ahi" not in [s.name for s in small.steps]
    big = Quickstart(QuickstartConfig(output_dir=tmp_path, nights=NIGHT_MIN_NIGHTS))
    val_kappas = (0.3, 0.7) + (0.6,) * (len(big.cfg.poolings) - 2)
    for pooling, val_kappa in zip(big.cfg.poolings, val_kappas, strict=True):  # the random Stage probes, one per pooling
        probe = big.probe_dir("random", "Stage", pooling)
        probe.mkdir(parents=True)
        (probe / "probe.json").write_text(json.dumps({"metrics": {"val": {"kappa": val_kappa}}}))
    night = next(s for s in big.steps if s.name == "night_random_ahi").command()
    assert night[night.index("--target_threshold") - 1: night.index("--target_threshold") + 2] == [
        "nsrr_ahi_hp3r_aasm15", "--target_threshold", "15"] and "none" in night
    assert night[night.index("--pooling") + 1] == big.cfg.poolings[1]  # the Stage probes' validation choice
    for init, auroc in (("pretrained", 0.9), ("random", 0.6)):
        (tmp_path / "night" / init).mkdir(parents=True)
        (tmp_path / "night" / init / "night_mean_std.json").write_text(
            json.dumps({"metrics": {"test": {"auroc": auroc, "auroc_ci95": [auroc - 0.1, 1.0]}}}))
    (tmp_path / "sequence_stage").mkdir()
    (tmp_path / "sequence_stage" / f"sequence_sequence_transformer_k{CONTEXT_EPOCHS}.json").write_text(json.dumps(
        {"metrics": {"test": {"kappa": 0.8}}, "comparison": {"delta": 0.2, "delta_ci95": [0.15, 0.25]}}))
    (tmp_path / "sequence_stage" / "sequence_linear_probe.json").write_text(json.dumps({"metrics": {"test": {"kappa": 0.6}}}))
    res = _context_results(big)
    assert res["night_level"]["pretrained"] == 0.9 and res["sequence_stage"]["per_epoch"] == 0.6
    text = "\n".join(_format_context(res))
    assert "AHI>=15 (night level)" in text and "0.900" in text and "0.600" in text and "kappa 0.800 vs 0.600" in text
    assert "skipped: needs --nights" in "\n".join(_format_context(_context_results(small)))


def test_cli_context_run_for_an_event_task_compares_auroc(tmp_path):
    from osf.testing import make_random_store

    store = make_random_store(tmp_path / "store", n_subjects=8, n_epochs=16, seed=1, split_fractions=(0.5, 0.25, 0.25))
    out = tmp_path / "out"
    args = ["--data_dir", str(store), "--output_dir", str(out), "--psg_encoder_name", "vit_nano", "--eval_label", "Arousal",
            "--context_epochs", "2", "--max_steps", "10", "--eval_every", "5", "--n_boot", "10", "--run_name", "ev"]
    assert _main_finetune().main(args) == 0
    table = pd.read_csv(out / "results.csv")
    assert table["setting"].tolist() == ["linear_probe", "sequence_transformer_k2"]
    record = json.loads((out / "ev_sequence_transformer_k2.json").read_text())
    assert record["comparison"]["metric"] == "auroc" and record["selection"]["threshold"] is not None
    assert record["comparison"]["delta"] == pytest.approx(table["test_auroc"].iloc[1] - table["test_auroc"].iloc[0])


def test_zero_is_a_given_value_not_an_unset_flag():
    """--max_steps 0 used to fall back to the default silently (``value or default``); now it is refused by name."""
    from osf.downstream.run_config import resolve_downstream_config
    from osf.downstream.sequence.run import check_sequence_config

    flags = {"data_dir": ".", "output_dir": ".", "context_epochs": 2}
    check_sequence_config(resolve_downstream_config(flags))
    cfg = resolve_downstream_config({**flags, "max_steps": 0, "lr": 0.0})
    assert (cfg.probe.lr, cfg.sequence.lr) == (0.0, 0.0)
    with pytest.raises(ValueError, match=r"the probe needs --max_steps and --eval_every >= 1, got 0 and 50"):
        check_sequence_config(cfg)

"""End to end on a tiny store: probe / k-shot / fine-tune runs, complete results, bad input refused early."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import config
from osf.backbone.checkpoint import save_backbone
from osf.backbone.vit1d_cls import BACKBONES, ViT1D, create_backbone, register_backbone
from osf.datasets.datamodule import SleepDataModule
from osf.datasets.store import EpochStore
from osf.datasets.store_index import INDEX_DIR, ROW_COLUMNS
from osf.downstream.classifier import load_classifier
from osf.downstream.inputs import full_loader
from osf.downstream.pipeline import run_downstream
from osf.downstream.results import RUN_JSON_KEYS, read_results
from osf.downstream.run_config import DownstreamConfig, resolve_downstream_config
from osf.testing import make_random_store

TINY = "vit_pico_test"


def vit_pico_test(num_leads=12, seq_len=1920, patch_size=64, lead_wise=1, patch_size_ch=4, **kwargs) -> ViT1D:
    """A 2-block, width-32 ViT: the OSF layout at a size that keeps end-to-end tests fast."""
    return ViT1D(num_leads=num_leads, seq_len=seq_len, patch_size=patch_size, width=32, depth=2, heads=2,
                 dim_head=16, lead_wise=lead_wise, patch_size_ch=patch_size_ch, encoder_name=TINY, **kwargs)


@pytest.fixture(scope="module", autouse=True)
def _tiny_backbone_registered():
    """Register the test-size backbone for this module only (the registry is process-global)."""
    register_backbone(vit_pico_test)
    yield
    BACKBONES.pop(TINY, None)


MULTICLASS_KEYS = ("accuracy", "balanced_accuracy", "macro_f1", "kappa", "auroc", "auprc")
BINARY_KEYS = ("auroc", "auprc", "f1", "sensitivity", "specificity", "prevalence")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    # 8 subjects x 16 epochs; wide val/test fractions so that those splits hold several subjects
    return make_random_store(tmp_path_factory.mktemp("ds") / "store", n_subjects=8, n_epochs=16, seed=0,
                             split_fractions=(0.5, 0.25, 0.25))


@pytest.fixture(scope="module")
def lightning_ckpt(store, tmp_path_factory) -> Path:
    """A briefly pre-trained backbone: two steps of the pre-training CLI (OSF recipe) on the store."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("pretrain")
        from main_pipelines import main_pretrain

        result = main_pretrain.main([
            "--model_name", "dino_ours", "--psg_encoder_name", TINY, "--data_dir", str(store), "--batch_size", "4",
            "--max_steps", "2", "--accelerator", "cpu", "--output_dir", str(out), "--run_name", "brief",
            "--logger", "csv", "--no-progress_bar", "--probe_label", "",
        ])
    finally:
        torch.set_num_threads(n)
    assert result.last_checkpoint is not None and result.last_checkpoint.is_file()
    return result.last_checkpoint


def _cfg(store, out, **kw) -> DownstreamConfig:
    base = {"data_dir": str(store), "output_dir": str(out), "psg_encoder_name": TINY, "max_steps": 40,
            "eval_every": 20, "batch_size": 64, "n_boot": 50, "accelerator": "cpu"}
    base.update(kw)
    return resolve_downstream_config(base)


def _assert_complete(record, n_test, keys=MULTICLASS_KEYS):
    assert set(RUN_JSON_KEYS) <= set(record)
    on_disk = json.loads(Path(record["artifacts"]["json"]).read_text())
    assert set(RUN_JSON_KEYS) <= set(on_disk)
    test = on_disk["metrics"]["test"]
    for k in keys:
        assert test[k] is not None and np.isfinite(test[k]), k
        lo, hi = test[f"{k}_ci95"]
        assert lo <= test[k] + 1e-12 and test[k] <= hi + 1e-12, k
    assert np.sum(test["confusion_matrix"]) == n_test  # every labelled test epoch is scored
    assert test["n_subjects"] >= 2
    assert on_disk["ckpt_hash"] and set(on_disk["split_hash"]) == {"train", "val", "test"}


def _n_labelled(store, split, column="stage"):
    idx = EpochStore(store).index
    return int(((idx["split"] == split) & (idx[column] >= 0)).sum())


def test_random_init_vs_pretrained_linear_probe(store, lightning_ckpt, tmp_path):
    csv = tmp_path / "results.csv"
    rnd = run_downstream(_cfg(store, tmp_path / "rnd", results_csv=str(csv)))
    pre = run_downstream(_cfg(store, tmp_path / "pre", ckpt_path=str(lightning_ckpt), psg_encoder_name=None,
                              results_csv=str(csv)))
    n_test = _n_labelled(store, "test")
    for rec in (rnd, pre):
        _assert_complete(rec, n_test)
        clf = load_classifier(rec["artifacts"]["classifier"])
        assert clf.label_names == {"stage": list(config.STAGE_NAMES_4)} and clf.channels == list(config.CHANNELS)
    table = read_results(csv)
    assert table["method"].tolist() == ["random_init", "dino_ours"]
    assert table["ckpt_hash"].nunique() == 2 and table["test_kappa"].notna().all()
    assert {"test_kappa_ci_low", "test_auroc", "test_f1_REM", "test_stage_fraction_mae"} <= set(table.columns)
    assert rnd["backbone"]["backbone_hash"] != pre["backbone"]["backbone_hash"]

    # Same backbone again with a missing-channel preset: train features come from the cache, test is new.
    again = run_downstream(_cfg(store, tmp_path / "pre", ckpt_path=str(lightning_ckpt), psg_encoder_name=None,
                                eval_channels="cardio_respiratory", lr=3e-3))
    t = again["timings"]
    assert t["features_train_cache_hit"] and not t["features_test_cache_hit"]
    assert again["setting"]["eval_channels"] == list(config.CHANNEL_PRESETS["cardio_respiratory"])
    assert again["metrics"]["test"]["kappa"] != pre["metrics"]["test"]["kappa"]


def test_k_shot_binary_task_reports_mean_and_std_over_seeds(store, tmp_path):
    rec = run_downstream(_cfg(store, tmp_path, eval_label="Arousal", n_train_samples=3, n_seeds=2))
    assert rec["setting"]["k_shot"] == 3 and rec["setting"]["seeds"] == [0, 1]
    test = rec["metrics"]["test"]
    for k in BINARY_KEYS:
        assert set(test[k]) == {"mean", "std", "n"} and test[k]["n"] == 2, k
    per_seed = rec["metrics_per_seed"]
    assert [r["seed"] for r in per_seed] == [0, 1]
    assert 0.0 <= per_seed[0]["metrics"]["test"]["threshold"] <= 1.0
    row = read_results(tmp_path / "results.csv").iloc[0]
    assert row["setting"] == "linear_probe_3shot" and row["test_auroc_std"] >= 0
    assert load_classifier(tmp_path / "classifier.pt").label_names["arousal"] == ["No Arousal", "Arousal"]


def test_finetune_runs_selects_on_validation_and_changes_the_backbone(store, tmp_path):
    rec = run_downstream(_cfg(store, tmp_path, finetune_backbone=True, max_steps=4, eval_every=2, batch_size=16,
                              layer_decay=0.8, warmup_steps=1, n_boot=20))
    _assert_complete(rec, _n_labelled(store, "test"))
    assert rec["selection"]["best_step"] in (2, 4) and len(rec["selection"]["history"]) == 2
    import pandas as pd

    (log,) = tmp_path.rglob("finetune_logs/*/metrics.csv")  # training curves are kept beside the run JSON
    curves = pd.read_csv(log)
    assert curves["val_select"].notna().sum() == 2 and curves["train_loss"].notna().any()
    clf = load_classifier(rec["artifacts"]["classifier"])
    torch.manual_seed(0)
    fresh = create_backbone(TINY)
    changed = [k for k, v in clf.backbone.state_dict().items() if not torch.equal(v, fresh.state_dict()[k])]
    assert changed  # the exported backbone is the fine-tuned one


def test_k_shot_finetune_exports_the_seed_selected_on_validation(store, tmp_path):
    from osf.downstream.metrics import evaluate_predictions

    rec = run_downstream(_cfg(store, tmp_path, finetune_backbone=True, n_train_samples=2, n_seeds=2, max_steps=3,
                              eval_every=1, batch_size=8, n_boot=0, lr=1e-2))
    chosen = rec["selection"]["seed"]
    scores = {r["seed"]: r["metrics"]["val"]["macro_f1"] for r in rec["metrics_per_seed"]}
    assert scores[chosen] == max(scores.values())
    cms = [r["metrics"]["test"]["confusion_matrix"] for r in rec["metrics_per_seed"]]
    assert cms[0] != cms[1]  # the seeds' models differ, so exporting the wrong one would show
    # the exported classifier reproduces the chosen seed's test predictions
    clf = load_classifier(rec["artifacts"]["classifier"])
    dm = SleepDataModule(store, task="downstream", eval_label="Stage")
    dm.setup()
    batches = list(full_loader(dm, "test", 16))
    proba = torch.cat([clf.predict_proba(b["signal"], b["channel_mask"])["stage"] for b in batches]).numpy()
    labels = torch.cat([b["label"] for b in batches]).numpy()
    ids = np.concatenate([b["subject_id"] for b in batches])
    got = evaluate_predictions(labels, proba, ids, ids, config.STAGE_NAMES_4, n_boot=0)
    want = next(r for r in rec["metrics_per_seed"] if r["seed"] == chosen)["metrics"]["test"]
    assert got["confusion_matrix"] == want["confusion_matrix"]


def test_eval_loaders_never_drop_an_epoch_and_presets_zero_and_mask(store):
    dm = SleepDataModule(store, task="downstream", eval_label="Stage", channel_preset="cardio_respiratory")
    dm.setup()
    n = len(dm.test_dataset)
    for bs in (1, 5, n - 1, n + 3):
        seen = np.concatenate([b["epoch_index"].numpy() * 1000 + i for i, b in enumerate(full_loader(dm, "test", bs))])
        assert sum(len(b["label"]) for b in full_loader(dm, "test", bs)) == n
        assert len(seen) == n
    batch = next(iter(full_loader(dm, "test", 8)))
    absent = [config.CHANNEL_INDEX[c] for c in config.CHANNELS if c not in config.CHANNEL_PRESETS["cardio_respiratory"]]
    assert not batch["channel_mask"][:, absent].any()
    assert batch["signal"][:, absent].abs().sum() == 0
    assert batch["signal"][:, config.CHANNEL_INDEX["ECG"]].abs().sum() > 0
    train = next(iter(full_loader(dm, "train", 8)))  # without mask_train_channels training keeps every channel
    assert train["channel_mask"][:, config.CHANNEL_INDEX["EMG_Chin"]].all()


# --- bad input: a clear error before any feature or training step ---------------------------------
def _edited_store(store: Path, tmp_path: Path, edit) -> Path:
    copy = tmp_path / "store_copy"
    shutil.copytree(store, copy)
    index = pd.read_parquet(copy / "index.parquet")
    edit(index)
    index.to_parquet(copy / "index.parquet")
    for name, dtype in ROW_COLUMNS.items():  # the per-epoch columns the store reads
        np.save(copy / INDEX_DIR / f"{name}.npy", index[name].to_numpy(dtype))
    return copy


def _nothing_written(out: Path) -> bool:
    return not (out / "classifier.pt").exists() and not (out / "feature_cache").exists()


def test_bad_input_is_refused_before_training(store, tmp_path):
    out = tmp_path / "out"
    cases = []

    def no_apnea(index):
        index["apnea"] = np.int8(-1)

    cases.append((_cfg(_edited_store(store, tmp_path / "a", no_apnea), out, eval_label="Apnea"),
                  r"no 'Apnea' labels \(column 'apnea' is all -1\)"))

    def val_one_class(index):
        index.loc[index["split"] == "val", "arousal"] = np.int8(0)

    cases.append((_cfg(_edited_store(store, tmp_path / "b", val_one_class), out, eval_label="Arousal"),
                  r"val split \(Arousal\): only one class"))
    cases.append((_cfg(store, out, n_train_samples=500), r"k=500 per class is larger than the class size"))
    cases.append((_cfg(store, out, eval_channels=" , "), r"empty channel preset"))
    cases.append((_cfg(store, out, eval_channels="EEG_C3_A2,Fpz"), r"unknown channel\(s\) \['Fpz'\]"))
    eight = create_backbone(TINY, num_leads=8)
    pth8, _ = save_backbone(eight, tmp_path / "eight.pth")
    cases.append((_cfg(store, out, ckpt_path=str(pth8), psg_encoder_name=None), r"eight.pth: channel contract mismatch"))
    cases.append((_cfg(store, out, eval_label="Sleepiness"), r"unknown --eval_label"))
    for cfg, message in cases:
        with pytest.raises(ValueError, match=message):
            run_downstream(cfg)
        assert _nothing_written(out), message


def test_cli_exits_2_with_the_reason_and_help_works(store, tmp_path, capsys):
    from main_pipelines import main_finetune as cli

    code = cli.main(["--data_dir", str(store), "--output_dir", str(tmp_path), "--psg_encoder_name", TINY,
                     "--eval_channels", ","])
    assert code == 2
    assert "empty channel preset" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    assert "--finetune_backbone" in capsys.readouterr().out
    cfg = cli.config_from_args(cli.build_parser().parse_args(
        ["--data_dir", "d", "--output_dir", "o", "--finetune_backbone", "--no-export_classifier", "--eval_label",
         "Oxygen Desaturation"]))
    assert cfg.finetune_backbone is True and cfg.export_classifier is False and cfg.use_mean_pool is False
    assert cfg.eval_label == "Oxygen Desaturation" and cfg.epoch_head is cfg.finetune


def test_checkpoint_formats_load_into_the_same_backbone(lightning_ckpt, tmp_path):
    from osf.downstream.features import backbone_hash
    from osf.downstream.loading import load_any_backbone
    from osf.models.export import export_pretrained_backbone

    pth, st = export_pretrained_backbone(lightning_ckpt, tmp_path / "osf_backbone.pth")
    x = torch.randn(2, 12, 1920, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, :4] = False
    outputs, hashes = [], set()
    for path in (lightning_ckpt, pth, st):
        model, meta, _ = load_any_backbone(str(path))
        assert meta["encoder_name"] == TINY and meta["model_name"] == "dino_ours"
        with torch.no_grad():
            outputs.append(model(x, channel_mask=mask))
        hashes.add(backbone_hash(model))
    assert len(hashes) == 1  # identical weights from all three files
    for out in outputs[1:]:
        torch.testing.assert_close(out, outputs[0])


@pytest.mark.slow
def test_finetune_ddp_two_cpu_processes(store, tmp_path):
    """The published command with --num_devices 2 on CPU (gloo): rank 0 writes one complete record."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(root / "main_pipelines" / "main_finetune.py"), "--data_dir", str(store),
           "--output_dir", str(tmp_path), "--psg_encoder_name", "vit_nano", "--finetune_backbone", "--num_devices", "2",
           "--accelerator", "cpu", "--max_steps", "4", "--eval_every", "2", "--batch_size", "8", "--n_boot", "20"]
    proc = subprocess.run(cmd, check=False, cwd=root, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = list(tmp_path.glob("*.json"))
    assert len(records) == 1 and len(read_results(tmp_path / "results.csv")) == 1
    _assert_complete(json.loads(records[0].read_text()), _n_labelled(store, "test"))


def test_probes_of_two_tasks_share_one_feature_extraction_and_keep_their_own_labels(store, tmp_path):
    from osf.downstream.metrics import load_predictions

    # Arousal and Hypopnea are scored on the same epochs of this store (Stage leaves out unknown stages).
    cache = str(tmp_path / "cache")
    first = run_downstream(_cfg(store, tmp_path / "hyp", feature_cache_dir=cache, pooling="groups",
                                eval_label="Hypopnea"))
    arousal = run_downstream(_cfg(store, tmp_path / "arousal", feature_cache_dir=cache, pooling="groups",
                                  eval_label="Arousal"))
    stage = run_downstream(_cfg(store, tmp_path / "stage", feature_cache_dir=cache, pooling="groups"))
    assert not first["timings"]["features_train_cache_hit"]
    assert all(arousal["timings"][f"features_{s}_cache_hit"] for s in ("train", "val", "test"))
    assert not all(stage["timings"][f"features_{s}_cache_hit"] for s in ("train", "val", "test"))
    assert arousal["setting"]["pooling"] == "groups" and len(arousal["class_names"]) == 2
    index = EpochStore(store).index
    test = index[(index["split"] == "test") & (index["arousal"] >= 0)]
    pred = load_predictions(arousal["artifacts"]["test_predictions"])
    by_epoch = dict(zip(zip(test["recording_id"].astype(str), test["epoch_index"]), test["arousal"]))
    assert [by_epoch[(r, int(e))] for r, e in zip(pred["recording_ids"], pred["epoch_index"])] == pred["labels"].tolist()
    assert pred["proba"].shape == (len(test), 2)


def test_the_mean_probe_reads_the_features_the_cls_probe_cached(store, tmp_path):
    """--cache_poolings: the CLS probe's backbone pass caches the mean features; the mean probe extracts nothing."""
    from osf.downstream.inputs import extract_features, load_inputs

    cache = str(tmp_path / "cache")
    cls = run_downstream(_cfg(store, tmp_path / "cls", feature_cache_dir=cache, cache_poolings="mean"))
    mean = run_downstream(_cfg(store, tmp_path / "mean", feature_cache_dir=cache, pooling="mean"))
    splits = ("train", "val", "test")
    assert not any(cls["timings"][f"features_{s}_cache_hit"] for s in splits)
    assert all(mean["timings"][f"features_{s}_cache_hit"] for s in splits)
    direct_cfg = _cfg(store, tmp_path / "direct", feature_cache_dir="off", pooling="mean")
    direct = extract_features(direct_cfg, load_inputs(direct_cfg, 64), 64)
    cached_cfg = _cfg(store, tmp_path / "again", feature_cache_dir=cache, pooling="mean")
    cached = extract_features(cached_cfg, load_inputs(cached_cfg, 64), 64)
    for split in splits:
        np.testing.assert_array_equal(cached[split].features, direct[split].features)
        np.testing.assert_array_equal(cached[split].labels, direct[split].labels)


def test_unset_flags_give_each_levels_dataclass_default_and_a_given_flag_sets_every_level():
    """The one rule: unset = every level's own default; given (0 too) = that value in every level (test_entry_flags:
    the flags are the fields)."""
    from main_pipelines import main_finetune
    from osf.downstream.run_config import LEVELS

    parser = main_finetune.build_parser()
    cfg = main_finetune.config_from_args(parser.parse_args(["--data_dir", "S", "--output_dir", "O"]))
    assert cfg == DownstreamConfig(data_dir="S", output_dir="O")  # every field, every level: the dataclass default
    assert (cfg.probe.lr, cfg.finetune.lr, cfg.sequence.max_steps, cfg.night.eval_every) == (1e-2, 1e-3, 600, 10)
    assert cfg.night.models == "mean_std,stage_profile,attention,transformer"
    given = main_finetune.config_from_args(parser.parse_args(
        ["--data_dir", "S", "--output_dir", "O", "--lr", "0", "--eval_every", "7", "--batch_size", "9"]))
    assert {level: getattr(given, level).lr for level in LEVELS} == dict.fromkeys(LEVELS, 0.0)  # 0 is a value
    assert {level: getattr(given, level).eval_every for level in LEVELS} == dict.fromkeys(LEVELS, 7)
    # --batch_size is the probe's / fine-tuning's (and feature extraction's); the sequence and night heads keep theirs
    assert (given.probe.batch_size, given.finetune.batch_size, given.sequence.batch_size, given.night.batch_size) == (
        9, 9, 64, 32)
    with pytest.raises(ValueError, match=r"unknown downstream flag\(s\) \['learning_rate'\]"):
        resolve_downstream_config({"data_dir": "S", "output_dir": "O", "learning_rate": 1.0})


def test_the_help_shows_each_levels_default():
    from main_pipelines import main_finetune

    text = " ".join(main_finetune.build_parser().format_help().split())
    assert "(default: 500 probe, 2000 finetune, 600 sequence, 300 night)" in text
    assert "(default: 0.0001 probe, 0.05 finetune, 0.01 sequence, 0.05 night)" in text


def test_lp_ft_starts_fine_tuning_at_the_probes_predictions(store, tmp_path):
    """With lr 0, fine-tuning from the probe's head (--init_head) predicts what the probe predicts; without it, not."""
    from osf.downstream.metrics import load_predictions

    probe = run_downstream(_cfg(store, tmp_path / "probe", pooling="groups_std", n_boot=20))
    frozen = {"finetune_backbone": True, "max_steps": 2, "eval_every": 2, "batch_size": 16, "lr": 0.0,
              "warmup_steps": 0, "pooling": "groups_std", "n_boot": 20}
    lpft = run_downstream(_cfg(store, tmp_path / "lpft", init_head=probe["artifacts"]["classifier"], **frozen))
    fresh = run_downstream(_cfg(store, tmp_path / "fresh", **frozen))
    want = load_predictions(probe["artifacts"]["test_predictions"])["proba"]
    np.testing.assert_allclose(load_predictions(lpft["artifacts"]["test_predictions"])["proba"], want, atol=1e-4)
    assert np.abs(load_predictions(fresh["artifacts"]["test_predictions"])["proba"] - want).max() > 0.05

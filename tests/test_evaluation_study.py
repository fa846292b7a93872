"""The protocol over quick-start runs (issue 26): the random init is the student's own starting weights."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_random_init_baseline_is_the_weights_pre_training_starts_from(tiny_store, tmp_path):
    import pytorch_lightning as pl

    from osf.downstream.loading import load_any_backbone
    from osf.models.pretrain_config import build_parser, config_from_args, resolve_pretrain_config
    from osf.models.registry import METHODS
    from osf.models.training import build_datamodule

    argv = ["--model_name", "dino_ours", "--psg_encoder_name", "vit_pico", "--data_dir", str(tiny_store),
            "--recipe", "small", "--batch_size", "8", "--max_steps", "2", "--seed", "3", "--accelerator", "cpu",
            "--output_dir", str(tmp_path), "--run_name", "x"]
    cfg = resolve_pretrain_config(config_from_args(build_parser().parse_args(argv)))
    pl.seed_everything(cfg.method.seed, verbose=False)  # as run_pretrain: seed, data module, then the method
    build_datamodule(cfg).setup("fit")
    student = METHODS[cfg.method_name](cfg.method).backbone.state_dict()
    random_init = load_any_backbone("none", "vit_pico", seed=3)[0].state_dict()
    shared = set(student) & set(random_init)
    assert len(shared) == len(random_init) and set(student) - shared <= {"mask_token"}
    assert all(torch.equal(student[k], random_init[k]) for k in shared)
    other_seed = load_any_backbone("none", "vit_pico", seed=4)[0].state_dict()
    assert not all(torch.equal(other_seed[k], random_init[k]) for k in shared)


def test_protocol_for_quickstart_refuses_an_unfinished_run(tmp_path):
    from osf.evaluation.study import protocol_for_quickstart

    with pytest.raises(FileNotFoundError, match="not a finished quick-start run"):
        protocol_for_quickstart(tmp_path)


def test_a_multi_seed_quickstart_stands_for_its_seeds(tmp_path):
    """main_protocol --runs OUT: a --seeds N quick start is read as its N seed folders; one-seed runs as themselves."""
    import json

    from osf.evaluation.study import seed_runs

    multi, single = tmp_path / "qs", tmp_path / "one"
    for run in (multi, single):
        run.mkdir()
    seeds = [str(multi), str(multi / "seeds" / "seed_1"), str(multi / "seeds" / "seed_2")]
    (multi / "results.json").write_text(json.dumps({"seed_level": {"output_dirs": seeds}}))
    (single / "results.json").write_text(json.dumps({"config": {"seed": 5}}))
    assert seed_runs([multi, single]) == [*map(type(multi), seeds), single]


def test_degradation_is_the_seeds_difference_in_differences():
    """Per seed (pre - random) without channels minus (pre - random) with all; decided by the t-test across seeds."""
    from osf.evaluation.seeds import SeedLevelDifference, SeedRow, SeedTest
    from osf.evaluation.study import degradation_vs_reference

    def result(diffs):
        rows = [SeedRow(str(i), 0.5 + d, 0.5, d, d - 0.01, d + 0.01, 10) for i, d in enumerate(diffs)]
        return SeedLevelDifference("kappa", rows, 0.0, 0.0, 0.0, 0.0, 0.0, SeedTest(0.0, 2, 1.0, 0.0, 0.0))

    comparison = {"Stage": {"labels_100pct": result([0.05, 0.02, 0.04]), "missing_no_eeg": result([0.10, 0.08, 0.11]),
                            "masked_no_eeg": result([0.00, 0.05, 0.01]), "kshot_5": result([0.3, 0.3, 0.3])}}
    table = degradation_vs_reference(comparison)["Stage"]
    assert set(table) == {"missing_no_eeg", "masked_no_eeg"}  # only the settings that take channels away
    assert list(table["missing_no_eeg"]["per_seed"].values()) == pytest.approx([0.05, 0.06, 0.07])
    assert table["missing_no_eeg"]["verdict"] == "better" and table["missing_no_eeg"]["df"] == 2
    assert list(table["masked_no_eeg"]["per_seed"].values()) == pytest.approx([-0.05, 0.03, -0.03])
    assert table["masked_no_eeg"]["verdict"] == "not separated"

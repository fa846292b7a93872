"""The quick start end to end: `--tiny` in the default suite, the full-size run marked slow."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

import train_config
from osf.quickstart import FINETUNED, INITS, Quickstart, QuickstartConfig


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Run `main_quickstart.py --tiny` once into a temporary folder; returns (config, printed output)."""
    import contextlib
    import io

    from main_pipelines.main_quickstart import main

    out = tmp_path_factory.mktemp("quickstart")
    argv = ["--tiny", "--output_dir", str(out / "run"), "--weights_dir", str(out / "weights")]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(argv) == 0
    cfg = QuickstartConfig.tiny(output_dir=out / "run", weights_dir=out / "weights")
    return cfg, printed.getvalue(), argv


def test_tiny_quickstart_runs_end_to_end(tiny_run):
    from osf.backbone.checkpoint import load_backbone
    from osf.downstream.classifier import load_classifier

    cfg, printed, _ = tiny_run
    results = json.loads((cfg.output_dir / "results.json").read_text())
    assert set(results["probes"]) == set(cfg.tasks)
    for task, row in results["probes"].items():
        for init in INITS:
            value = row[init]
            assert value is not None and math.isfinite(value), (task, init, value)
            assert -1.0 <= value <= 1.0
    backbone, metadata = load_backbone(results["paths"]["backbone"])  # the released format
    assert metadata["encoder_name"] == cfg.backbone and backbone.width == metadata["width"]
    assert load_classifier(results["paths"]["staging_classifier"]).tasks == ["stage"]
    night = results["heldout_night"]
    assert 0.0 <= night["agreement"] <= 1.0 and night["scored_total_sleep_time_min"] > 0
    assert json.loads(Path(results["paths"]["night_qc"]).read_text())["n_epochs"] == cfg.hours * 120
    assert Path(results["paths"]["night_figure"]).read_bytes()[:4] == b"\x89PNG"
    seq = results["sequence_stage"]  # issue 14: sequence-context staging row; night level needs more nights
    assert -1 <= seq["sequence"] <= 1 and seq["delta"] == pytest.approx(seq["sequence"] - seq["per_epoch"])
    assert "skipped" in results["night_level"]
    # the printed table: a row per task, the commands that were run, the plot path
    assert "Stage" in printed and "Arousal" in printed and results["paths"]["night_figure"] in printed
    assert "$ python main_pipelines/main_pretrain.py --model_name dino_ours" in printed
    # the OSF head reads the channel groups, as the probes do (the small recipe's own head reads the patch mean)
    assert "--head_pooling groups" in printed
    assert train_config.RECIPES["small"].method_overrides("dino_ours")["head_pooling"] == "mean"
    assert "head_pooling: groups" in (cfg.output_dir / "runs" / "pretrain" / "config.yaml").read_text()
    # the fine-tuned classifier is scored through each preset it was fine-tuned over, and says so
    by_preset = results["finetune_stage"]["kappa_by_preset"]
    assert set(by_preset["pretrained"]) == set(cfg.finetune_presets.split(",")) == set(by_preset["random"])
    assert f"eeg_eog_only {by_preset['pretrained']['eeg_eog_only']:.3f}" in printed
    # LP-FT starts at the Stage probe trained and selected over the fine-tuning's presets (issue 29)
    qs = Quickstart(cfg)
    for init in INITS:
        probe = load_classifier(qs.presets_probe_dir(init) / "classifier.pt")
        assert probe.info["train_presets"] == cfg.finetune_presets.split(",")
        assert f"--init_head {qs.presets_probe_dir(init) / 'classifier.pt'}" in printed
    # the OSF teacher reads the recorded epoch (the recipe's teacher reads the student's views): issue 26
    assert "--teacher_views full" in printed
    assert train_config.RECIPES["small"].method_overrides("dino_ours").get("teacher_views", "same") == "same"
    assert "teacher_views: full" in (cfg.output_dir / "runs" / "pretrain" / "config.yaml").read_text()


def test_a_rerun_skips_every_finished_step(tiny_run, capsys):
    from main_pipelines.main_quickstart import main

    cfg, _, argv = tiny_run
    assert main(argv) == 0
    printed = capsys.readouterr().out
    from osf.quickstart import seed_configs

    steps = [step for run in seed_configs(cfg) for step in Quickstart(run).steps]  # every seed's
    assert cfg.seeds == 2 and printed.count("done before, skipped") == len(steps)
    assert "$ python" not in printed  # nothing ran
    assert "Linear probes" in printed  # the results table is printed again


def test_changing_a_flag_reruns_exactly_the_steps_that_depend_on_it(tiny_run):
    cfg, _, _ = tiny_run
    assert not any(Quickstart(cfg).plan().values())
    plan = Quickstart(dataclasses.replace(cfg, finetune_steps=cfg.finetune_steps + 1)).plan()
    assert {name for name, run in plan.items() if run} == {"finetune", "finetune_random", "predict"}
    plan = Quickstart(dataclasses.replace(cfg, max_steps=cfg.max_steps + 1)).plan()
    rerun = {name for name, run in plan.items() if run}
    assert rerun == {"pretrain", "export", *(f"probe_pretrained_{t}_{p}" for t in ("stage", "arousal")
                                             for p in cfg.poolings), "probe_pretrained_stage_presets",
                      "sequence_stage", "finetune", "predict"}
    plan = Quickstart(dataclasses.replace(cfg, teacher_views="same")).plan()
    assert {name for name, run in plan.items() if run} == rerun  # what pre-training reads, nothing else
    plan = Quickstart(dataclasses.replace(cfg, hours=1.0)).plan()
    assert all(plan.values())  # new nights: everything again


def test_bad_flags_are_refused(capsys):
    from main_pipelines.main_quickstart import main

    assert main(["--tasks", "Arousal,Stage"]) == 2
    assert "must start with 'Stage'" in capsys.readouterr().err
    assert main(["--poolings", "cls,max"]) == 2
    assert "unknown pooling 'max'" in capsys.readouterr().err
    assert main(["--head_pooling", "max"]) == 2
    assert "head_pooling must be one of ('cls', 'mean', 'groups'), got 'max'" in capsys.readouterr().err
    assert main(["--teacher_views", "half"]) == 2
    assert "teacher_views must be one of ['same', 'full'], got 'half'" in capsys.readouterr().err


def test_each_backbone_reports_the_pooling_its_validation_split_chose(tiny_run):
    from osf.downstream.results import RunSummary
    from osf.tasks import get_task

    cfg, printed, _ = tiny_run
    qs = Quickstart(cfg)
    results = json.loads((cfg.output_dir / "results.json").read_text())
    assert len(cfg.poolings) >= 2
    for task, row in results["probes"].items():
        metric = get_task(task).reporting_metric
        for init in INITS:
            runs = {p: RunSummary.read(qs.probe_dir(init, task, p) / "probe.json").metrics for p in cfg.poolings}
            best = max(runs[p]["val"][metric] for p in cfg.poolings)
            chosen = row["pooling"][init]
            assert runs[chosen]["val"][metric] == best and row[init] == runs[chosen]["test"][metric]
    assert f"{results['probes']['Stage']['pooling']['pretrained']} / " in printed
    # the sequence head reads the pre-trained Stage probe's pooling from the same feature cache
    seq = next(s for s in qs.steps if s.name == "sequence_stage").flags()
    stage = next(s for s in qs.steps if s.name == f"probe_pretrained_stage_{seq['pooling']}").flags()
    assert seq["pooling"] == qs.chosen_pooling("pretrained", "Stage")
    assert seq["feature_cache_dir"] == stage["feature_cache_dir"]
    # fine-tuning starts at the head of that pooling's probe over its presets (LP-FT) and reads the same features
    ft = next(s for s in qs.steps if s.name == "finetune").flags()
    presets_probe = next(s for s in qs.steps if s.name == "probe_pretrained_stage_presets").flags()
    assert ft["init_head"] == str(qs.presets_probe_dir("pretrained") / "classifier.pt") and ft["pooling"] == seq["pooling"]
    assert presets_probe["pooling"] == seq["pooling"] and presets_probe["mask_train_presets"] == ft["mask_train_presets"]
    assert presets_probe["feature_cache_dir"] == stage["feature_cache_dir"]
    # its baseline: the same LP-FT at equal steps from random init (the random Stage probe's head and pooling)
    base = next(s for s in qs.steps if s.name == "finetune_random").flags()
    assert base["ckpt_path"] == "none" and base["max_steps"] == ft["max_steps"] and base["seed"] == ft["seed"]
    assert base["init_head"] == str(qs.presets_probe_dir("random") / "classifier.pt")
    assert base["pooling"] == qs.chosen_pooling("random", "Stage") and base["output_dir"] != ft["output_dir"]
    finetune = results["finetune_stage"]
    assert finetune["random"]["kappa"] is not None and "pre-trained minus random" in printed
    lo, hi = finetune["difference_ci95"]
    assert lo <= finetune["difference"] <= hi
    assert finetune["difference"] == pytest.approx(finetune["kappa"] - finetune["random"]["kappa"], abs=1e-6)


def test_runs_pool_into_one_difference_per_task(tiny_run):
    from osf.quickstart import pooled_over_runs

    cfg, _, _ = tiny_run
    assert QuickstartConfig.from_dict(json.loads(json.dumps(cfg.as_dict()))) == cfg
    results = json.loads((cfg.output_dir / "results.json").read_text())
    one = pooled_over_runs([cfg.output_dir], n_boot=cfg.n_boot, seed=cfg.seed)
    assert set(one) == {*cfg.tasks, FINETUNED}
    for task in cfg.tasks:
        row = one[task]  # one run: exactly that run's paired difference
        own = results["probes"][task]
        assert row["runs"] == 1 and row["n_test_subjects"] == own["n_test_subjects"]
        assert row["difference"] == pytest.approx(own["difference"])
        assert row["difference_ci95"] == pytest.approx(own["difference_ci95"])
        assert row["pretrained"] == pytest.approx(own["pretrained"]) and row["random"] == pytest.approx(own["random"])
    twice = pooled_over_runs([cfg.output_dir, cfg.output_dir], n_boot=cfg.n_boot)
    assert twice["Stage"]["runs"] == 2 and twice["Stage"]["n_test_subjects"] == 2 * one["Stage"]["n_test_subjects"]
    finetuned = one[FINETUNED]  # the staging classifier against its LP-FT from random init
    assert finetuned["difference"] == pytest.approx(results["finetune_stage"]["difference"], abs=1e-6)


def test_seeds_train_on_the_first_seeds_corpus_and_decide_over_seeds(tiny_run):
    """--seeds 2: the second seed pre-trains, probes and fine-tunes with its own seed on the first run's store and
    split (no corpus of its own); the seed-level rows are each seed's own paired differences and their mean."""
    cfg, printed, _ = tiny_run
    results = json.loads((cfg.output_dir / "results.json").read_text())
    second = cfg.output_dir / "seeds" / f"seed_{cfg.seed + 1}"
    assert results["seed_level"]["output_dirs"] == [str(cfg.output_dir.resolve()), str(second.resolve())]
    own = json.loads((second / "results.json").read_text())
    assert own["config"]["seed"] == cfg.seed + 1 and own["config"]["corpus_dir"] == str(cfg.output_dir)
    assert not (second / "synthetic").exists() and not (second / "store").exists()
    assert own["paths"]["store"] == results["paths"]["store"] and own["paths"]["backbone"].startswith(str(second))
    command = json.loads((second / ".stages" / "pretrain.json").read_text())["command"]
    flag = lambda name: command[command.index(name) + 1]
    assert flag("--seed") == str(cfg.seed + 1) and flag("--data_dir") == str(cfg.output_dir.resolve() / "store")
    tasks = results["seed_level"]["tasks"]
    assert set(tasks) == {*cfg.tasks, FINETUNED}
    for task, row in tasks.items():
        runs = [results, own]
        per_seed = [r["probes"][task]["difference"] if task != FINETUNED else r["finetune_stage"]["difference"]
                    for r in runs]
        assert [s["diff"] for s in row["per_seed"]] == pytest.approx(per_seed, abs=1e-6)
        assert row["difference"] == pytest.approx(sum(per_seed) / 2, abs=1e-6) and row["t_test"]["df"] == 1
    assert "Seeds as the unit (2 training seeds" in printed and "training seed 1 (2 of 2" in printed


def test_the_demo_notebook_runs_after_the_quick_start(tiny_run, tmp_path):
    from test_notebook import notebook_text, run_demo

    cfg, _, _ = tiny_run
    nb = run_demo(tmp_path, quickstart_dir=cfg.output_dir)
    text = notebook_text(nb)
    assert "after the quick start" in text and "osf_quickstart_vit_nano.pth" in text
    assert list((tmp_path / "demo" / "prediction").glob("*_summary.json"))


def test_entry_points_fail_loudly_in_process_and_as_subprocesses():
    from main_pipelines.main_quickstart import run_entry_point

    run_entry_point("main_predict.py", ["--help"], in_process=False)  # exits 0: no error
    for in_process in (True, False):
        with pytest.raises(RuntimeError, match="main_predict.py"):
            run_entry_point("main_predict.py", ["--edf", "x.edf"], in_process=in_process)  # missing flags: exit 2


def test_multi_gpu_runs_steps_as_subprocesses():
    multi = Quickstart(QuickstartConfig(gpus=2))
    assert not multi.in_process  # Lightning DDP re-executes the entry point for each extra rank
    pretrain = next(s for s in multi.steps if s.name == "pretrain").command()
    assert pretrain[pretrain.index("--num_devices") + 1] == "2" and "gpu" in pretrain
    assert Quickstart(QuickstartConfig()).in_process


def test_nights_are_made_in_parallel_and_night_rows_follow_the_stage_probes(tmp_path):
    import os

    assert QuickstartConfig().night_workers == max(1, min(4, os.cpu_count() or 1))
    qs = Quickstart(QuickstartConfig(cpu_workers=3, output_dir=tmp_path / "qs", weights_dir=tmp_path / "w"))
    steps = {s.name: s for s in qs.steps}
    assert steps["cohort"].flags()["num_workers"] == 3 and steps["store_mesa"].flags()["num_workers"] == 3
    for init in INITS:  # the night row reads the pooling its Stage probes chose, from their feature cache
        assert set(steps[f"night_{init}_ahi"].needs) == {f"probe_{init}_stage_{p}" for p in qs.cfg.poolings}
    probe = steps["probe_random_stage_cls"].flags()  # one backbone pass caches the other pooling too
    assert probe["pooling"] == "cls" and probe["cache_poolings"] == "groups,cls_groups,groups_std"


@pytest.mark.slow
def test_full_quickstart(tmp_path):
    """The default sizes (a dozen 1 h nights, vit_nano): the README's main command; ~20 min on 2 CPU cores."""
    from osf.quickstart import run_quickstart

    cfg = QuickstartConfig(output_dir=tmp_path / "run", weights_dir=tmp_path / "weights")
    results = run_quickstart(cfg)
    assert set(results["probes"]) == set(cfg.tasks)
    assert all(math.isfinite(row[init]) for row in results["probes"].values() for init in INITS)
    assert results["heldout_night"]["cohen_kappa"] is not None

"""benchmarks/gpu_check.py: its machinery and JSON on CPU at toy sizes (no GPU numbers are checked)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from osf.backbone.vit1d_cls import BACKBONES, ViT1D, register_backbone

ROOT = Path(__file__).resolve().parents[1]
TINY = "vit_gpucheck_test"


def vit_gpucheck_test(num_leads=12, seq_len=1920, patch_size=64, lead_wise=1, patch_size_ch=4, **kwargs) -> ViT1D:
    """A 1-block, width-16 ViT with the OSF layout."""
    return ViT1D(num_leads=num_leads, seq_len=seq_len, patch_size=patch_size, width=16, depth=1, heads=2,
                 dim_head=8, lead_wise=lead_wise, patch_size_ch=patch_size_ch, encoder_name=TINY, **kwargs)


@pytest.fixture(scope="module")
def gpu_check():
    register_backbone(vit_gpucheck_test)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("_osf_gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)
    torch.set_num_threads(threads)
    BACKBONES.pop(TINY, None)


def test_smoke_run_writes_every_check(gpu_check, tmp_path):
    out = tmp_path / "gpu_check.json"
    report = gpu_check.main(["--device", "cpu", "--smoke", "--size", TINY, "--output", str(out)])
    on_disk = json.loads(out.read_text())
    assert on_disk["checks"].keys() == set(gpu_check.CHECKS) and on_disk["smoke"] is True
    assert report["config"]["size"] == TINY and on_disk["environment"]["torch"] == torch.__version__
    checks = on_disk["checks"]
    assert not [name for name, c in checks.items() if "error" in c], checks

    precision = checks["precision"]  # bf16 autocast rounds; the embeddings stay parallel to fp32's
    assert 0.99 < precision["cosine_min"] <= 1.0 + 1e-6 and 0 < precision["rel_l2"] < 0.05 and precision["ok"]
    attention = checks["attention"]  # sdpa and the math path compute the same attention in fp32
    assert attention["sdpa_vs_math"]["max_abs_diff"] < 1e-4 and attention["ok"]
    assert attention["flash_available"] is None  # kernels are only probed on CUDA

    step = checks["train_step"]
    assert set(step["variants"]) == {"released", "current"}  # no torch.compile in smoke mode
    for row in step["variants"].values():
        assert row["samples_per_s"] > 0 and row["tflop_per_step"] > 0 and row["mfu"] is None  # no CPU peak
    # the released step computes the zero-weight iBOT/KoLeo branches and plain attention: more FLOPs
    assert step["variants"]["released"]["tflop_per_step"] > step["variants"]["current"]["tflop_per_step"]
    assert step["best_speedup_vs_released"] > 0 and step["meets_mfu_target"] is None

    loader = checks["loader"]
    fastest = max(v["samples_per_s"] for v in step["variants"].values())
    assert loader["samples"] > 0 and loader["step_samples_per_s"] == pytest.approx(fastest)
    assert loader["keeps_up"] == (loader["samples_per_s"] >= fastest) and loader["store"] == "synthetic"
    assert set(on_disk["seconds"]) == {*gpu_check.CHECKS, "total"}
    assert on_disk["failures"] == [] and gpu_check.exit_code(on_disk) == 0


def test_a_failing_check_is_recorded_and_the_others_run(gpu_check, tmp_path):
    cfg = gpu_check.smoke_config("cpu", "no_such_backbone")
    report = gpu_check.run_checks(cfg, ("precision", "loader"))
    assert "no_such_backbone" in report["checks"]["precision"]["error"]
    assert report["checks"]["loader"]["samples"] > 0 and report["checks"]["loader"]["keeps_up"] is None


def test_settings_full_on_cuda_smoke_only_when_asked(gpu_check):
    parse = gpu_check.build_parser().parse_args
    full = gpu_check.config_from_args(parse(["--device", "cuda"]))
    assert (full.size, full.batch_size, full.compile, full.smoke) == ("vit_base", 256, True, False)
    assert gpu_check.config_from_args(parse(["--device", "cuda", "--size", "vit_large"])).batch_size == 128
    assert gpu_check.config_from_args(parse(["--device", "cuda", "--loader_ranks", "8"])).loader_ranks == 8
    assert gpu_check.config_from_args(parse(["--device", "cpu", "--smoke"])).smoke is True
    assert gpu_check.config_from_args(parse(["--device", "cpu", "--full"])).smoke is False
    with pytest.raises(SystemExit, match="no CUDA device.*pass --smoke"):  # no quiet switch to smoke mode
        gpu_check.config_from_args(parse(["--device", "cpu"]))
    with pytest.raises(SystemExit, match="unknown check"):
        gpu_check.main(["--device", "cpu", "--smoke", "--checks", "precision,speed"])


def test_without_cuda_the_script_refuses_with_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--output",
                           str(tmp_path / "x.json")], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)
    assert proc.returncode == 2 and "gpu_check: no CUDA device (cpu); pass --smoke" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "x.json").exists()


def test_peak_flops_by_exact_board(gpu_check):
    from bench_pretrain import peak_bf16_flops

    assert peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12  # SXM5
    assert peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_bf16_flops("NVIDIA H100 NVL") == 835e12
    assert peak_bf16_flops("NVIDIA H200") == 989e12 and peak_bf16_flops("NVIDIA H200 NVL") == 835e12
    assert peak_bf16_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_bf16_flops("NVIDIA H100 SXM-like test board") is None  # no substring guess
    assert peak_bf16_flops("NVIDIA H800") is None and peak_bf16_flops(None) is None


def test_failures_and_exit_code(gpu_check, tmp_path):
    """An error, a failed correctness check or (outside smoke mode) a missed target fails the run."""
    report = gpu_check.run_checks(gpu_check.smoke_config("cpu", "no_such_backbone"), ("precision",))
    assert report["failures"] == [f"precision: {report['checks']['precision']['error']}"]
    assert gpu_check.exit_code(report) == 1
    fine = gpu_check.run_checks(gpu_check.smoke_config("cpu", TINY), ("precision",))
    assert fine["failures"] == [] and gpu_check.exit_code(fine) == 0
    missed = {"smoke": False, "checks": {
        "precision": {"ok": True},
        "train_step": {"meets_mfu_target": False, "best_mfu": 0.31, "meets_speedup_target": True,
                       "best_speedup_vs_released": 2.5},
        "loader": {"keeps_up": False, "samples_per_s": 900.0, "needed_samples_per_s": 4000.0, "ranks": 8}}}
    assert gpu_check.failures(missed) == ["train_step: best MFU 31.0% < target 50%",
                                          "loader: 900 samples/s < 4000 needed by 8 rank(s)"]
    assert gpu_check.failures({**missed, "smoke": True}) == []  # toy sizes: targets not judged
    bad = {"smoke": True, "checks": {"attention": {"ok": False}}}
    assert gpu_check.failures(bad) == ["attention: failed its correctness threshold"]


def test_fp32_reference_runs_with_tf32_off(gpu_check):
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (matmul.fp32_precision, cudnn.fp32_precision)
    matmul.fp32_precision = cudnn.fp32_precision = "tf32"  # as the training-speed checks set it on CUDA
    try:
        with gpu_check.true_fp32():
            assert matmul.fp32_precision == "ieee" and cudnn.fp32_precision == "ieee"
        assert matmul.fp32_precision == "tf32" and cudnn.fp32_precision == "tf32"  # restored
        result = gpu_check.run_checks(gpu_check.smoke_config("cpu", TINY), ("precision",))["checks"]["precision"]
        assert result["fp32_reference_precision"] == "ieee" and result["ok"]
    finally:
        matmul.fp32_precision, cudnn.fp32_precision = saved


@pytest.mark.slow
def test_loader_check_reads_the_given_store_with_one_loader_per_rank(gpu_check, tiny_store):
    """Two spawned loader processes (about 30 s idle, 90 s on a loaded 2-core machine)."""
    cfg = gpu_check.smoke_config("cpu", TINY)
    cfg.data_dir, cfg.loader_ranks, cfg.loader_batches, cfg.loader_workers = str(tiny_store), 2, 3, 0
    out = gpu_check.check_loader(cfg, step_samples_per_s=1e9)
    assert out["store"] == str(tiny_store) and out["ranks"] == 2 and len(out["per_rank_samples_per_s"]) == 2
    assert out["samples"] == 2 * 3 * cfg.batch_size  # each rank read its timed batches
    n_train = sum(out["shard_items"])  # the two shards split the store's training epochs
    assert abs(out["shard_items"][0] - out["shard_items"][1]) <= 1 and n_train > 0
    assert out["needed_samples_per_s"] == 2e9 and out["keeps_up"] is False


def test_launcher_passes_arguments_on():
    script = ROOT / "bash_scripts" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    assert 'python benchmarks/gpu_check.py "$@"' in script.read_text()


def test_precision_check_on_saved_weights(gpu_check, tmp_path):
    from osf.backbone import backbone_metadata, create_backbone, save_backbone

    torch.manual_seed(5)
    model = create_backbone(TINY)
    pth, _ = save_backbone(model, tmp_path / "w.pth", backbone_metadata(model, "osf"))
    cfg = gpu_check.smoke_config("cpu", TINY)
    cfg.ckpt_path = str(pth)
    with_weights = gpu_check.run_checks(cfg, ("precision",))["checks"]["precision"]
    cfg.ckpt_path = None
    random_init = gpu_check.run_checks(cfg, ("precision",))["checks"]["precision"]
    assert with_weights["ok"] and with_weights["max_abs_diff"] != random_init["max_abs_diff"]  # other weights

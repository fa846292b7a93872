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
    assert loader["keeps_up"] == (loader["samples_per_s"] >= fastest)
    assert set(on_disk["seconds"]) == {*gpu_check.CHECKS, "total"}


def test_a_failing_check_is_recorded_and_the_others_run(gpu_check, tmp_path):
    cfg = gpu_check.smoke_config("cpu", "no_such_backbone")
    report = gpu_check.run_checks(cfg, ("precision", "loader"))
    assert "no_such_backbone" in report["checks"]["precision"]["error"]
    assert report["checks"]["loader"]["samples"] > 0 and report["checks"]["loader"]["keeps_up"] is None


def test_settings_full_on_cuda_smoke_otherwise(gpu_check):
    parse = gpu_check.build_parser().parse_args
    full = gpu_check.config_from_args(parse(["--device", "cuda"]))
    assert (full.size, full.batch_size, full.compile, full.smoke) == ("vit_base", 256, True, False)
    assert gpu_check.config_from_args(parse(["--device", "cuda", "--size", "vit_large"])).batch_size == 128
    assert gpu_check.config_from_args(parse(["--device", "cpu"])).smoke is True  # auto-CPU mode
    assert gpu_check.config_from_args(parse(["--device", "cpu", "--full"])).smoke is False
    with pytest.raises(SystemExit, match="unknown check"):
        gpu_check.main(["--device", "cpu", "--checks", "precision,speed"])


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

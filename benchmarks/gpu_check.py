"""GPU readiness in one run: precision, attention path, OSF step throughput and MFU, loader headroom.

Four checks, each recorded in one JSON (``benchmarks/results/gpu_check_<device>.json``):

1. ``precision``: ``vit_base`` CLS embeddings under bf16 autocast vs a true fp32 reference (TF32 off for
   the reference), same weights and input (cosine similarity, relative L2 error).
2. ``attention``: ``attn_impl="sdpa"`` vs the plain softmax (``math``) path: output agreement and
   forward throughput; on CUDA also each SDPA kernel forced in turn (flash, memory-efficient, cuDNN,
   math), whether it runs and how fast.
3. ``train_step``: the OSF (``dino_ours``) training step at the recipe batch (``train_config``) in
   bf16: the released step (plain attention, zero-weight iBOT/KoLeo branches computed), the current
   step, and the current step with ``torch.compile``: steps/s, samples/s, TFLOP/s and MFU (FLOPs
   counted by ``torch.utils.flop_counter``; the dense bf16 peak of the exact board CUDA names: H100 SXM,
   PCIe and NVL differ, H200; ``--peak_tflops`` overrides).
4. ``loader``: pre-training batches as a DDP job reads them: ``--loader_ranks`` processes (default: the
   GPUs), each with its own ``SleepDataModule`` loader, ``--workers`` workers and its shard, over
   ``--data_dir`` (default: a small synthetic store): aggregate samples/s, and whether that keeps up
   with the fastest training step on every rank.

Targets (issue 17): >= 50% MFU for vit_base bf16 on H100/H200 and >= 2x the released step; the loader
must keep up. The script exits 1 when a check errs, a correctness check fails (``ok`` false) or a target
is missed, listing each (``failures`` in the JSON); 0 otherwise. Without CUDA it refuses to run (exit 2)
unless asked: ``--smoke`` runs every check at toy sizes in seconds, to test the machinery only (its
numbers say nothing about a GPU and its targets are not judged); ``--full`` runs the full sizes on the CPU.

    bash bash_scripts/gpu_check.sh --data_dir /data/osf_store     # one node, <= 5 minutes
    python benchmarks/gpu_check.py --smoke --output /tmp/gpu_check.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_pretrain sits beside this script

from bench_pretrain import make_step, peak_bf16_flops, step_flops, time_step
from loader_ranks import measure_loaders

from osf import train_config
from osf.backbone import create_backbone, load_backbone
from osf.utils.atomic import atomic_path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CHECKS = ("precision", "attention", "train_step", "loader")
TARGET_MFU = 0.5
TARGET_SPEEDUP = 2.0
# bf16 autocast keeps fp32 accumulation: embeddings should stay nearly parallel to fp32's.
MIN_COSINE = 0.99
MAX_REL_L2 = 0.05


@dataclass
class CheckConfig:
    """Sizes of one run: the full GPU check or the smoke setting."""

    device: str
    size: str = "vit_base"
    batch_size: int = train_config.BACKBONE_DEFAULTS["vit_base"].batch_size
    embed_batch: int = 64
    steps: int = 10
    warmup: int = 3
    compile: bool = True
    store_recordings: int = 16
    store_epochs: int = 200
    loader_workers: int = min(8, os.cpu_count() or 1)
    loader_ranks: int = 1  # processes reading the store at once, one loader each (the GPUs of a node)
    loader_batches: int = 200  # timed batches per rank (after loader_warmup)
    loader_warmup: int = 20
    data_dir: str | None = None  # the store the loader check reads (None: a synthetic one is built)
    peak_tflops: float | None = None
    smoke: bool = False
    ckpt_path: str | None = None  # weights for the precision check (e.g. hf://yang-ai-lab/OSF-Base/osf_backbone.pth)


def smoke_config(device: str, size: str) -> CheckConfig:
    """Toy sizes: every check runs end to end in seconds on a CPU."""
    return CheckConfig(device=device, size=size, batch_size=2, embed_batch=2, steps=1, warmup=0, compile=False,
                       store_recordings=3, store_epochs=8, loader_workers=1, loader_batches=4, loader_warmup=1,
                       smoke=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device, warmup: int, iters: int) -> float:
    """Seconds per call of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / max(iters, 1)


@contextlib.contextmanager
def true_fp32() -> Iterator[None]:
    """fp32 matmuls and cuDNN convolutions in IEEE fp32 (TF32 off) for the block, then the previous settings.

    torch >= 2.9's precision API (``fp32_precision``); mixing it with the legacy ``allow_tf32`` flags is an error.
    """
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (matmul.fp32_precision, cudnn.fp32_precision)
    matmul.fp32_precision = cudnn.fp32_precision = "ieee"
    try:
        yield
    finally:
        matmul.fp32_precision, cudnn.fp32_precision = saved


def _agreement(ref: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
    ref, other = ref.float().flatten(1), other.float().flatten(1)
    cosine = F.cosine_similarity(ref, other, dim=1)
    return {"cosine_min": float(cosine.min()), "cosine_mean": float(cosine.mean()),
            "rel_l2": float((ref - other).norm() / ref.norm().clamp_min(1e-12)),
            "max_abs_diff": float((ref - other).abs().max())}


def _inputs(cfg: CheckConfig, batch: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, 12, 1920, generator=g).to(device)


@torch.inference_mode()
def check_precision(cfg: CheckConfig) -> dict[str, Any]:
    """bf16 autocast vs fp32 CLS embeddings of the same backbone (random init or ``ckpt_path``) and batch."""
    device = torch.device(cfg.device)
    torch.manual_seed(0)
    model = (load_backbone(cfg.ckpt_path)[0] if cfg.ckpt_path else create_backbone(cfg.size)).to(device).eval()
    x = _inputs(cfg, cfg.embed_batch, device)
    with true_fp32():  # the reference: TF32 (on for training) would round fp32 matmuls to a 10-bit mantissa
        fp32 = model(x)
        out_tf32 = {"fp32_reference_precision": torch.backends.cuda.matmul.fp32_precision}
    with torch.autocast(device.type, dtype=torch.bfloat16):
        bf16 = model(x)
    out = {**_agreement(fp32, bf16), **out_tf32}
    out["ok"] = out["cosine_min"] >= MIN_COSINE and out["rel_l2"] <= MAX_REL_L2
    out["thresholds"] = {"cosine_min": MIN_COSINE, "rel_l2": MAX_REL_L2}
    return out


def _sdpa_backends() -> dict[str, Any]:
    from torch.nn.attention import SDPBackend

    names = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION",
             "math": "MATH"}
    return {k: getattr(SDPBackend, v) for k, v in names.items() if hasattr(SDPBackend, v)}


@torch.inference_mode()
def check_attention(cfg: CheckConfig) -> dict[str, Any]:
    """SDPA vs plain softmax attention: agreement and forward throughput (each SDPA kernel on CUDA)."""
    from torch.nn.attention import sdpa_kernel

    device = torch.device(cfg.device)
    torch.manual_seed(0)
    model = create_backbone(cfg.size).to(device).eval()
    x = _inputs(cfg, cfg.embed_batch, device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    iters = 1 if cfg.smoke else 10

    def forward() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            return model.forward_encoding(x, return_sequence=True)

    model.set_attn_impl("math")
    with true_fp32():
        reference = forward()
    math_s = _timed(forward, device, 0 if cfg.smoke else 2, iters)
    model.set_attn_impl("sdpa")
    out: dict[str, Any] = {"dtype": str(dtype).replace("torch.", ""), "batch": cfg.embed_batch,
                           "math_samples_per_s": cfg.embed_batch / math_s,
                           "sdpa_vs_math": _agreement(reference, forward())}
    sdpa_s = _timed(forward, device, 0 if cfg.smoke else 2, iters)
    out["sdpa_samples_per_s"] = cfg.embed_batch / sdpa_s
    out["sdpa_speedup_vs_math"] = math_s / sdpa_s
    kernels: dict[str, Any] = {}
    if device.type == "cuda":
        for name, backend in _sdpa_backends().items():
            try:
                with sdpa_kernel([backend]):
                    y = forward()
                    seconds = _timed(forward, device, 2, iters)
                kernels[name] = {"runs": True, "samples_per_s": cfg.embed_batch / seconds,
                                 "vs_math_path": _agreement(reference, y)}
            except RuntimeError as err:  # kernel not available for this GPU / dtype / shape
                kernels[name] = {"runs": False, "reason": str(err).splitlines()[0][:200]}
    out["sdpa_kernels"] = kernels or "only measured on CUDA"
    out["flash_available"] = bool(kernels.get("flash", {}).get("runs")) if kernels else None
    # bf16 kernels differ from the math path by rounding only; fp32 by float reassociation
    out["ok"] = out["sdpa_vs_math"]["cosine_min"] >= MIN_COSINE
    return out


def _peak_flops(cfg: CheckConfig, device: torch.device) -> tuple[float | None, str | None]:
    if cfg.peak_tflops:
        return cfg.peak_tflops * 1e12, None
    if device.type != "cuda":
        return None, None
    gpu = torch.cuda.get_device_name(device)
    return peak_bf16_flops(gpu), gpu


def check_train_step(cfg: CheckConfig) -> dict[str, Any]:
    """OSF (dino_ours) step as released, as now, and compiled: throughput, FLOPs and MFU."""
    device = torch.device(cfg.device)
    bf16 = device.type == "cuda"  # bf16 matmuls are emulated (slow) on most CPUs
    peak, gpu = _peak_flops(cfg, device)
    variants = [("released", True, False), ("current", False, False)]
    if cfg.compile:
        variants.append(("current+compile", False, True))
    rows: dict[str, Any] = {}
    flops = None
    for name, baseline, compile_ in variants:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        step, _ = make_step("dino_ours", cfg.size, cfg.batch_size, device, baseline, compile_, bf16)
        t = time_step(step, device, cfg.warmup, cfg.steps)
        if not compile_:  # compiled code does the same FLOPs; the counter needs eager dispatch
            step_count = step_flops(step)
            flops = step_count if name == "current" else flops
        else:
            step_count = flops
        row = {"steps_per_s": 1 / t["wall_s"], "samples_per_s": cfg.batch_size / t["wall_s"],
               "cpu_s_per_step": t["cpu_s"], "tflop_per_step": step_count / 1e12,
               "achieved_tflops": step_count / t["wall_s"] / 1e12,
               "mfu": step_count / t["wall_s"] / peak if peak else None}
        if device.type == "cuda":
            row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        rows[name] = row
        del step
    best = max((r for k, r in rows.items() if k != "released"), key=lambda r: r["steps_per_s"])
    released = rows["released"]
    return {
        "method": "dino_ours", "size": cfg.size, "batch_size": cfg.batch_size,
        "precision": "bf16-autocast" if bf16 else "fp32", "gpu": gpu,
        "peak_tflops": peak / 1e12 if peak else None, "variants": rows,
        "best_speedup_vs_released": best["steps_per_s"] / released["steps_per_s"],
        "best_mfu": best["mfu"],
        "targets": {"mfu": TARGET_MFU, "speedup_vs_released": TARGET_SPEEDUP},
        "meets_mfu_target": (best["mfu"] >= TARGET_MFU) if best["mfu"] is not None else None,
        "meets_speedup_target": best["steps_per_s"] / released["steps_per_s"] >= TARGET_SPEEDUP,
    }


def check_loader(cfg: CheckConfig, step_samples_per_s: float | None) -> dict[str, Any]:
    """One loader per rank over ``cfg.data_dir`` (else a synthetic store): aggregate samples/s vs every rank's step."""
    from osf.testing import make_random_store

    with tempfile.TemporaryDirectory(prefix="osf_gpu_check_") as tmp:
        t0 = time.perf_counter()
        root = cfg.data_dir
        if root is None:
            root = make_random_store(Path(tmp) / "store", n_subjects=cfg.store_recordings, n_epochs=cfg.store_epochs,
                                     seed=0, split_fractions=(1.0, 0.0, 0.0))
        build_s = time.perf_counter() - t0
        out = measure_loaders(root, cfg.loader_ranks, cfg.batch_size, cfg.loader_workers, cfg.loader_warmup,
                              cfg.loader_batches, pin=cfg.device.startswith("cuda"))
    # Every rank's step consumes batch_size samples: the ranks together need ranks x the one-GPU step's rate.
    needed = step_samples_per_s * cfg.loader_ranks if step_samples_per_s else None
    return {**out, "workers": cfg.loader_workers, "store": str(cfg.data_dir) if cfg.data_dir else "synthetic",
            "store_build_s": None if cfg.data_dir else build_s, "step_samples_per_s": step_samples_per_s,
            "needed_samples_per_s": needed, "headroom": out["samples_per_s"] / needed if needed else None,
            "keeps_up": out["samples_per_s"] >= needed if needed else None}


def environment(device: torch.device) -> dict[str, Any]:
    """Versions and hardware of this run."""
    env = {"torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
           "cpu_count": os.cpu_count(), "device": str(device), "cuda": torch.version.cuda}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=props.total_memory / 2**30,
                   bf16_supported=torch.cuda.is_bf16_supported(), cudnn=torch.backends.cudnn.version())
    return env


def run_checks(cfg: CheckConfig, only: tuple[str, ...] = CHECKS) -> dict[str, Any]:
    """Run the checks in order; a failing check records its error and the others still run."""
    device = torch.device(cfg.device)
    report: dict[str, Any] = {"benchmark": "gpu_check", "smoke": cfg.smoke, "config": asdict(cfg),
                              "environment": environment(device), "checks": {}, "seconds": {}}
    if device.type == "cuda":
        # The training-speed checks run as training does: TF32 for what is left in fp32 (the reference does not).
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.fp32_precision = "tf32"
    for name in only:
        t0 = time.perf_counter()
        try:
            if name == "loader":
                step = report["checks"].get("train_step", {}).get("variants", {})
                fastest = max((v["samples_per_s"] for v in step.values()), default=None)
                result = check_loader(cfg, fastest)
            else:
                result = {"precision": check_precision, "attention": check_attention,
                          "train_step": check_train_step}[name](cfg)
        except Exception as err:  # noqa: BLE001 (one broken check must not lose the others' numbers)
            result = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(limit=3)}
        report["checks"][name] = result
        report["seconds"][name] = time.perf_counter() - t0
        print(f"[gpu_check] {name}: {_one_line(name, result)} ({report['seconds'][name]:.1f} s)", flush=True)
    report["seconds"]["total"] = sum(report["seconds"].values())
    report["failures"] = failures(report)
    return report


def failures(report: dict[str, Any]) -> list[str]:
    """What makes the run fail: errors, failed correctness checks, missed targets (not judged in smoke mode)."""
    out = []
    for name, result in report["checks"].items():
        if "error" in result:
            out.append(f"{name}: {result['error']}")
        elif result.get("ok") is False:
            out.append(f"{name}: failed its correctness threshold")
    if report["smoke"]:
        return out
    step = report["checks"].get("train_step", {})
    if step.get("meets_mfu_target") is False:
        out.append(f"train_step: best MFU {100 * step['best_mfu']:.1f}% < target {100 * TARGET_MFU:.0f}%")
    if step.get("meets_speedup_target") is False:
        out.append(f"train_step: {step['best_speedup_vs_released']:.2f}x the released step < target {TARGET_SPEEDUP:.1f}x")
    loader = report["checks"].get("loader", {})
    if loader.get("keeps_up") is False:
        out.append(f"loader: {loader['samples_per_s']:.0f} samples/s < {loader['needed_samples_per_s']:.0f} needed by "
                   f"{loader['ranks']} rank(s)")
    return out


def exit_code(report: dict[str, Any]) -> int:
    """1 when :func:`failures` lists anything, else 0."""
    return 1 if report["failures"] else 0


def _one_line(name: str, r: dict[str, Any]) -> str:
    if "error" in r:
        return f"ERROR {r['error']}"
    if name == "precision":
        return f"bf16 vs fp32 cosine min {r['cosine_min']:.5f}, rel L2 {r['rel_l2']:.4f}, ok={r['ok']}"
    if name == "attention":
        return (f"sdpa {r['sdpa_speedup_vs_math']:.2f}x math, cosine min {r['sdpa_vs_math']['cosine_min']:.5f}, "
                f"flash={r['flash_available']}")
    if name == "train_step":
        parts = [f"{k} {v['samples_per_s']:.1f} samples/s" + (f" MFU {100 * v['mfu']:.1f}%" if v["mfu"] else "")
                 for k, v in r["variants"].items()]
        return "; ".join(parts) + f"; best {r['best_speedup_vs_released']:.2f}x released"
    return (f"{r['samples_per_s']:.0f} samples/s from {r['ranks']} loader(s) x {r['workers']} workers "
            f"({r['store']} store), keeps_up={r['keeps_up']}")


def write_report(report: dict[str, Any], path: Path) -> Path:
    """Write the report as JSON (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return path


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--smoke", action="store_true", help="toy sizes, machinery only (needed to run without CUDA)")
    p.add_argument("--full", action="store_true", help="full sizes without CUDA (slow on a CPU)")
    p.add_argument("--size", default=None, help="backbone (default vit_base; smoke: vit_nano)")
    p.add_argument("--batch_size", type=int, default=None, help="training batch (default: the recipe's)")
    p.add_argument("--steps", type=int, default=None, help="timed training steps per variant")
    p.add_argument("--no-compile", dest="compile", action="store_false", default=None,
                   help="skip the torch.compile variant")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers per rank for the loader check")
    p.add_argument("--data_dir", default=None, help="epoch store the loader check reads (default: a synthetic one)")
    p.add_argument("--loader_ranks", type=int, default=None,
                   help="loaders (processes) reading at once, as DDP ranks do (default: the CUDA devices, else 1)")
    p.add_argument("--loader_batches", type=int, default=None, help="timed batches per rank in the loader check")
    p.add_argument("--peak_tflops", type=float, default=None, help="device bf16 dense peak (default: by GPU name)")
    p.add_argument("--ckpt_path", default=None,
                   help="backbone for the precision check, a file or hf://... (default: random init of --size)")
    p.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated subset of {','.join(CHECKS)}")
    p.add_argument("--output", type=Path, default=None,
                   help="JSON path (default benchmarks/results/gpu_check_<cuda|cpu_smoke>.json)")
    return p


class NoCudaError(SystemExit):
    """No CUDA device and neither --smoke nor --full: nothing a GPU check could measure."""


def config_from_args(args: argparse.Namespace) -> CheckConfig:
    """Full settings on CUDA; without CUDA, --smoke (toy sizes) or --full must be asked for; flags override."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not device.startswith("cuda") and not (args.smoke or args.full):
        raise NoCudaError(f"gpu_check: no CUDA device ({device}); pass --smoke to test the machinery at toy sizes "
                          "(its numbers say nothing about a GPU) or --full to run the full sizes on the CPU")
    smoke = args.smoke
    cfg = smoke_config(device, args.size or "vit_nano") if smoke else CheckConfig(device=device)
    ranks = args.loader_ranks or (torch.cuda.device_count() if device.startswith("cuda") else 1)
    overrides = {"size": args.size, "batch_size": args.batch_size, "steps": args.steps, "compile": args.compile,
                 "loader_workers": args.workers, "peak_tflops": args.peak_tflops, "ckpt_path": args.ckpt_path,
                 "data_dir": args.data_dir, "loader_ranks": max(1, ranks), "loader_batches": args.loader_batches}
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    if args.size and not smoke and args.batch_size is None:
        size = train_config.BACKBONE_DEFAULTS.get(args.size)
        cfg.batch_size = size.batch_size if size is not None else cfg.batch_size
    return cfg


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the checks, print one line each and the failures, write the JSON; returns the report (see :func:`exit_code`)."""
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    unknown = sorted(set(args.checks.split(",")) - set(CHECKS))
    if unknown:
        raise SystemExit(f"gpu_check: unknown check(s) {unknown}; choose from {list(CHECKS)}")
    only = tuple(c for c in CHECKS if c in args.checks.split(","))
    if cfg.smoke:
        print("[gpu_check] smoke mode: toy sizes, machinery only; these numbers say nothing about a GPU", flush=True)
    report = run_checks(cfg, only)
    suffix = "cuda" if cfg.device.startswith("cuda") and not cfg.smoke else f"{cfg.device.split(':')[0]}_smoke"
    out = write_report(report, args.output or RESULTS_DIR / f"gpu_check_{suffix}.json")
    print(f"[gpu_check] wrote {out} ({report['seconds']['total']:.0f} s)", flush=True)
    for failure in report["failures"]:
        print(f"[gpu_check] FAIL {failure}", flush=True)
    print(f"[gpu_check] {'FAILED' if report['failures'] else 'passed'}"
          + (" (smoke mode: machinery only, targets not judged)" if cfg.smoke else ""), flush=True)
    return report


if __name__ == "__main__":
    try:
        sys.exit(exit_code(main()))
    except NoCudaError as err:
        print(err, file=sys.stderr)
        sys.exit(2)

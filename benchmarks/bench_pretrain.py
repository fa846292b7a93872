"""Pre-training step throughput per method and backbone size, against the OSF step as released.

One step = views + teacher/student forward + loss + backward + clipping + AdamW + EMA update, on a
fixed batch of ``[B, 12, 1920]`` (the data loader is benchmarked separately in ``bench_data.py``).
The in-run baseline is the released OSF step: ``dino_ours`` with the iBOT and KoLeo branches
computed at weight 0 and plain softmax attention (``attn_impl="math"``). Each row reports
steps/s, samples/s, process-CPU seconds per step (robust on a shared machine) and the speed-up
over the baseline; on CUDA it runs in bf16 autocast and adds model FLOPs utilisation (FLOPs of
one step counted with ``torch.utils.flop_counter``, divided by the GPU's dense bf16 peak).

    python benchmarks/bench_pretrain.py                                   # CPU: vit_nano, vit_tiny
    python benchmarks/bench_pretrain.py --device cuda --sizes vit_base --batch_size 256 --compile
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from osf import config
from osf.models import create_method
from osf.models.momentum import ema_update
from osf.models.registry import methods_in_order

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Dense bf16 tensor-core peaks (FLOP/s) used for MFU; --peak_tflops overrides.
# Dense bf16 tensor-core peak per GPU (NVIDIA datasheets; sparsity figures halved), keyed by the exact
# name CUDA reports, lower case, without "NVIDIA ". Boards of one chip differ: H100 PCIe and NVL run
# lower clocks/power than SXM. An unknown name has no peak (MFU is then not judged; --peak_tflops sets one).
PEAK_BF16: dict[str, float] = {
    "h100 80gb hbm3": 989e12,  # H100 SXM5
    "h100 sxm5 80gb": 989e12,
    "h100 pcie": 756e12,  # H100 PCIe 80 GB: 1,513 with sparsity
    "h100 nvl": 835e12,  # H100 NVL 94 GB: 1,671 with sparsity
    "h200": 989e12,  # H200 SXM 141 GB: the H100 SXM's compute
    "h200 nvl": 835e12,  # H200 NVL: 1,671 with sparsity
    "gh200 480gb": 989e12,
    "a100-sxm4-80gb": 312e12, "a100-sxm4-40gb": 312e12, "a100-pcie-40gb": 312e12, "a100 80gb pcie": 312e12,
    "l40s": 362e12, "l4": 121e12, "a10": 125e12,
}


def peak_bf16_flops(gpu_name: str | None) -> float | None:
    """Dense bf16 peak FLOP/s of the GPU CUDA names ``gpu_name`` (exact model), ``None`` when not in the table."""
    if not gpu_name:
        return None
    key = gpu_name.strip().lower().removeprefix("nvidia ").strip()
    return PEAK_BF16.get(key)


def make_step(method: str, size: str, batch_size: int, device: torch.device, baseline: bool, compile_: bool,
              bf16: bool) -> tuple[Any, dict]:
    """A closure running one full training step, and the batch it uses."""
    kwargs: dict[str, Any] = {"backbone_kwargs": {"attn_impl": "math" if baseline else "sdpa"}, "total_steps": 10_000,
                              "warmup_frac": 0.0, "compile_backbone": compile_ and not baseline}
    if baseline:
        kwargs["compute_zero_weight_losses"] = True
    model = create_method(method, size, **kwargs).to(device).train()
    optimizer = model.configure_optimizers()["optimizer"]
    g = torch.Generator().manual_seed(0)
    batch = {"signal": torch.randn(batch_size, config.NUM_CHANNELS, config.EPOCH_SAMPLES, generator=g).to(device),
             "channel_mask": torch.ones(batch_size, config.NUM_CHANNELS, dtype=torch.bool, device=device)}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = {"step": 0}

    def step() -> None:
        gen = torch.Generator(device=device).manual_seed(state["step"])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model.ssl_step(batch, gen, update_state=True)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 3.0)
        optimizer.step()
        for teacher, student in model.momentum_pairs():
            ema_update(teacher, student, model.momentum_at(state["step"]))
        state["step"] += 1

    return step, batch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(step, device: torch.device, warmup: int, steps: int) -> dict[str, float]:
    """Wall and process-CPU seconds per step (after ``warmup`` untimed steps)."""
    for _ in range(warmup):
        step()
    _sync(device)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    _sync(device)
    return {"wall_s": (time.perf_counter() - wall0) / steps, "cpu_s": (time.process_time() - cpu0) / steps}


def step_flops(step) -> int:
    """FLOPs of one step (matmuls/convs/attention, forward + backward) as counted by torch."""
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return int(counter.get_total_flops())


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark, print the table, write JSON; returns the rows."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=",".join(methods_in_order()),
                   help="comma-separated registered methods (default: every registered one, OSF first)")
    p.add_argument("--sizes", default="vit_nano,vit_tiny", help="comma-separated backbone sizes")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="timed steps per row")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per row (compilation, allocator)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone encoder (not the baseline)")
    p.add_argument("--peak_tflops", type=float, default=None, help="device bf16 peak for MFU (default: by GPU name)")
    p.add_argument("--output", default=None, help="JSON path (default: benchmarks/results/bench_pretrain_<device>.json)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    bf16 = device.type == "cuda"
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    if device.type == "cuda" and peak is None:
        peak = peak_bf16_flops(gpu)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    rows: list[dict[str, Any]] = []
    for size in args.sizes.split(","):
        baseline_step, _ = make_step("dino_ours", size, args.batch_size, device, True, False, bf16)
        base = time_step(baseline_step, device, args.warmup, args.steps)
        del baseline_step
        for method in args.methods.split(","):
            step, _ = make_step(method, size, args.batch_size, device, False, args.compile, bf16)
            t = time_step(step, device, args.warmup, args.steps)
            flops = step_flops(step)
            row = {"method": method, "size": size, "batch_size": args.batch_size, "device": str(device),
                   "precision": "bf16-autocast" if bf16 else "fp32", "steps_per_s": 1 / t["wall_s"],
                   "samples_per_s": args.batch_size / t["wall_s"], "cpu_s_per_step": t["cpu_s"],
                   "baseline_steps_per_s": 1 / base["wall_s"], "baseline_cpu_s_per_step": base["cpu_s"],
                   "speedup_wall": base["wall_s"] / t["wall_s"], "speedup_cpu": base["cpu_s"] / t["cpu_s"],
                   "tflop_per_step": flops / 1e12, "achieved_tflops": flops / t["wall_s"] / 1e12,
                   "mfu": (flops / t["wall_s"] / peak) if peak else None}
            rows.append(row)
            del step

    header = f"{'method':<10} {'size':<9} {'B':>4} {'steps/s':>8} {'samples/s':>10} {'CPU s/step':>10} {'x base (wall)':>13} {'x base (CPU)':>12} {'TFLOP/s':>8} {'MFU':>6}"
    print(f"device={device} {gpu or platform.processor() or ''} threads={torch.get_num_threads()} "
          f"baseline = dino_ours as released (iBOT+KoLeo at weight 0, attn_impl=math)")
    print(header)
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        print(f"{r['method']:<10} {r['size']:<9} {r['batch_size']:>4} {r['steps_per_s']:>8.3f} {r['samples_per_s']:>10.1f} "
              f"{r['cpu_s_per_step']:>10.3f} {r['speedup_wall']:>13.2f} {r['speedup_cpu']:>12.2f} {r['achieved_tflops']:>8.3f} {mfu:>6}")
    out = Path(args.output) if args.output else RESULTS_DIR / f"bench_pretrain_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "gpu": gpu, "torch": torch.__version__, "rows": rows}, indent=2))
    print(f"wrote {out}")
    return rows


if __name__ == "__main__":
    main()

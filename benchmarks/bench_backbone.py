"""Backbone throughput: forward and forward+backward samples/s, SDPA vs plain softmax attention.

For every size x batch size x precision x pass, the same weights are timed with
``attn_impl="sdpa"`` (``scaled_dot_product_attention``) and with ``attn_impl="math"`` (plain softmax
attention, the in-run baseline); ``--compile`` adds ``torch.compile`` of the SDPA model. Prints a
table and writes JSON to ``benchmarks/results/``.

    python benchmarks/bench_backbone.py --sizes vit_nano,vit_small --batch-sizes 8,32
    python benchmarks/bench_backbone.py --device cuda --sizes vit_base --batch-sizes 64,256 --compile
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from osf.backbone import ViT1D, create_backbone

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_samples_per_second(
    model: ViT1D,
    encode: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    backward: bool,
    dtype: str,
    warmup: int,
    iters: int,
    min_time: float,
) -> tuple[float, float]:
    """(samples per wall second, samples per process CPU second) of ``encode(x)`` (optionally with backward) over >= ``iters`` steps and >= ``min_time`` s."""
    device = x.device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")

    def step() -> None:
        with autocast:
            if backward:
                encode(x).float().square().mean().backward()
            else:
                with torch.no_grad():
                    encode(x)

    model.train(backward)
    for _ in range(warmup):
        step()
    _sync(device)
    done, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while done < iters or time.perf_counter() - start < min_time:
        step()
        done += 1
        _sync(device)
    elapsed = time.perf_counter() - start
    # Process CPU time (all threads) is far less sensitive than wall time to other jobs' load.
    cpu_elapsed = max(time.process_time() - cpu_start, 1e-9)
    if backward:
        model.zero_grad(set_to_none=True)
    return done * x.shape[0] / elapsed, done * x.shape[0] / cpu_elapsed


def run_benchmark(
    sizes: list[str],
    batch_sizes: list[int],
    device: str = "cpu",
    dtypes: tuple[str, ...] = ("fp32", "bf16"),
    passes: tuple[str, ...] = ("fwd", "fwd+bwd"),
    compile_model: bool = False,
    lead_wise: int = 1,
    warmup: int = 2,
    iters: int = 5,
    min_time: float = 1.0,
    repeats: int = 3,
    on_progress: Callable[[list[dict]], None] | None = None,
) -> list[dict]:
    """Time every configuration; one row per (size, batch, dtype, pass, variant) with a ratio to ``math``.

    ``on_progress(rows)`` is called after each configuration (e.g. to save partial results).
    """
    dev = torch.device(device)
    rows: list[dict] = []
    for size in sizes:
        torch.manual_seed(0)
        model = create_backbone(size, lead_wise=lead_wise).to(dev)

        def encode(x: torch.Tensor, model: ViT1D = model) -> torch.Tensor:
            return model.forward_encoding(x, return_sequence=True)

        variants: list[tuple[str, Callable, str]] = [("math", encode, "math"), ("sdpa", encode, "sdpa")]
        if compile_model:
            # Compile the encoding itself: torch.compile(model) would only wrap forward().
            variants.append(("sdpa+compile", torch.compile(encode), "sdpa"))
        for batch in batch_sizes:
            x = torch.randn(batch, model.num_leads, model.seq_len, device=dev)
            for dtype in dtypes:
                for pass_name in passes:
                    # Variants are interleaved over rounds and the median kept, so load that drifts
                    # during the run (shared machines) hits baseline and candidate alike.
                    samples: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in variants}
                    for round_index in range(repeats):
                        for variant, fn, impl in variants:
                            model.set_attn_impl(impl)
                            samples[variant].append(
                                time_samples_per_second(
                                    model,
                                    fn,
                                    x,
                                    pass_name == "fwd+bwd",
                                    dtype,
                                    warmup if round_index == 0 else 0,
                                    iters,
                                    min_time,
                                )
                            )
                    baseline = statistics.median(v[0] for v in samples["math"])
                    baseline_cpu = statistics.median(v[1] for v in samples["math"])
                    for variant, values in samples.items():
                        sps = statistics.median(v[0] for v in values)
                        cpu_sps = statistics.median(v[1] for v in values)
                        row = {
                            "size": size,
                            "batch": batch,
                            "dtype": dtype,
                            "pass": pass_name,
                            "variant": variant,
                            "samples_per_s": sps,
                            "ratio_vs_math": sps / baseline,
                            "samples_per_cpu_s": cpu_sps,
                            "cpu_ratio_vs_math": cpu_sps / baseline_cpu,
                            "rounds": [list(v) for v in values],
                        }
                        rows.append(row)
                        print(_format_row(row), flush=True)
                    if on_progress is not None:
                        on_progress(rows)
        del model, variants
    return rows


def _format_row(row: dict) -> str:
    return (
        f"{row['size']:<11}{row['batch']:>6}  {row['dtype']:<6}{row['pass']:<9}{row['variant']:<14}"
        f"{row['samples_per_s']:>12.1f}{row['ratio_vs_math']:>9.2f}x"
        f"{row['samples_per_cpu_s']:>12.1f}{row['cpu_ratio_vs_math']:>9.2f}x"
    )


def environment(device: str) -> dict:
    """Machine facts stored beside the figures."""
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def _csv(cast):
    return lambda text: [cast(v) for v in text.split(",") if v]


def main(argv: list[str] | None = None) -> dict:
    """Parse arguments, run, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=_csv(str), default=["vit_nano", "vit_small"])
    parser.add_argument("--batch-sizes", type=_csv(int), default=[8, 32])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--dtypes", type=_csv(str), default=["fp32", "bf16"], help="fp32,bf16 (bf16 = autocast)"
    )
    parser.add_argument("--passes", type=_csv(str), default=["fwd", "fwd+bwd"])
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=False, help="add torch.compile"
    )
    parser.add_argument("--lead-wise", type=int, choices=(0, 1), default=1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5, help="minimum timed steps")
    parser.add_argument("--min-time", type=float, default=1.0, help="minimum timed seconds per row")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the median is kept")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--output", type=Path, default=None, help="JSON path (default benchmarks/results/...)"
    )
    args = parser.parse_args(argv)
    for name, allowed, given in (
        ("dtypes", {"fp32", "bf16"}, args.dtypes),
        ("passes", {"fwd", "fwd+bwd"}, args.passes),
    ):
        if not set(given) <= allowed:
            parser.error(f"--{name} must be a subset of {sorted(allowed)}, got {given}")
    if args.threads:
        torch.set_num_threads(args.threads)

    output = args.output or RESULTS_DIR / f"bench_backbone_{torch.device(args.device).type}.json"
    env = environment(args.device)

    def write(rows: list[dict], complete: bool = False) -> dict:
        # Rewritten after every configuration so an interrupted run keeps what it measured.
        result = {"environment": env, "lead_wise": args.lead_wise, "complete": complete, "rows": rows}
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, output)
        return result

    print(
        f"{'size':<11}{'batch':>6}  {'dtype':<6}{'pass':<9}{'variant':<14}{'samples/s':>12}{'vs math':>10}{'per CPU-s':>12}{'vs math':>10}"
    )
    rows = run_benchmark(
        args.sizes,
        args.batch_sizes,
        args.device,
        tuple(args.dtypes),
        tuple(args.passes),
        args.compile,
        args.lead_wise,
        args.warmup,
        args.iters,
        args.min_time,
        args.repeats,
        on_progress=write,
    )
    result = write(rows, complete=True)
    print(f"wrote {output}")
    return result


if __name__ == "__main__":
    main()

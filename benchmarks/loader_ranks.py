"""Pre-training loader throughput as a training job sees it: one loader per rank over one shared store.

Each rank (a process, as under DDP) builds ``SleepDataModule(data_dir).train_dataloader()`` with its own
``workers`` and its shard of the sampler, waits for the others, then reads ``warmup`` batches untimed and
``batches`` timed (cycling epochs). The ranks compete for the store's disk and page cache as they do in
training; the aggregate rate is all ranks' samples over the slowest rank's time. Used by
``benchmarks/gpu_check.py`` (its ``loader`` check).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["measure_loaders"]


def _cycled(loader: Any) -> Iterator[dict[str, Any]]:
    epoch = 0
    while True:
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def _read(data_dir: str, batch_size: int, workers: int, warmup: int, batches: int, pin: bool) -> dict[str, Any]:
    """This rank's loader: ``batches`` timed batches after ``warmup`` untimed ones."""
    from osf.datasets.datamodule import SleepDataModule

    dm = SleepDataModule(data_dir, task="pretrain", batch_size=batch_size, num_workers=workers, pin_memory=pin)
    dm.setup("fit")
    loader = dm.train_dataloader()
    if dist.is_initialized():
        dist.barrier()  # every rank starts reading at once
    batch_iter = _cycled(loader)
    for _ in range(warmup):  # worker start-up, page cache
        next(batch_iter)
    samples, t0 = 0, time.perf_counter()
    for _ in range(batches):
        samples += int(next(batch_iter)["signal"].shape[0])
    return {"samples": samples, "seconds": time.perf_counter() - t0, "shard_items": len(loader.sampler)}


def _rank(rank: int, world: int, init_file: str, out_dir: str, args: tuple) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        result = _read(*args)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def measure_loaders(data_dir: str | Path, ranks: int, batch_size: int, workers: int, warmup: int, batches: int,
                    pin: bool = False) -> dict[str, Any]:
    """Aggregate and per-rank samples/s of ``ranks`` loaders (processes) with ``workers`` each over ``data_dir``."""
    args = (str(data_dir), batch_size, workers, warmup, batches, pin)
    if ranks == 1:
        per_rank = [_read(*args)]
    else:
        with tempfile.TemporaryDirectory(prefix="osf_loader_ranks_") as tmp:
            mp.start_processes(_rank, args=(ranks, str(Path(tmp) / "init"), tmp, args), nprocs=ranks,
                               start_method="spawn")
            per_rank = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(ranks)]
    slowest = max(r["seconds"] for r in per_rank)
    samples = sum(r["samples"] for r in per_rank)
    return {"ranks": ranks, "workers_per_rank": workers, "batch_size": batch_size, "samples": samples,
            "seconds": slowest, "samples_per_s": samples / slowest,
            "per_rank_samples_per_s": [r["samples"] / r["seconds"] for r in per_rank],
            "shard_items": [r["shard_items"] for r in per_rank]}

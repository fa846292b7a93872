"""Training throughput in the logs: samples/s, step time, data-wait fraction and peak memory.

:class:`Throughput` (a Lightning callback, added to every run by :func:`osf.models.training.run_pretrain`)
times each training batch on every rank and, every ``every_n_steps`` optimizer steps, logs over that
window (``perf/*`` in the CSV / W&B / TensorBoard logs):

- ``perf/samples_per_s``: samples of the global batch (this rank's x world size) per second of wall time;
- ``perf/step_s``: wall seconds per optimizer step;
- ``perf/data_wait_frac``: the share of the wall time spent between one batch's end and the next one's
  start: waiting for the DataLoader (plus the rare checkpoint write, which Lightning also does there;
  validation is not counted, neither as wait nor as wall time); near 0 when the loader keeps up,
  towards 1 when the device starves;
- ``perf/peak_mem_gib``: peak device memory allocated by torch since the start (CUDA), else the process's
  peak resident memory (``memory`` says which).

At the end rank 0 prints a table of the windows and writes ``<run_dir>/throughput.json``.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from osf.utils.atomic import atomic_write_text

__all__ = ["SUMMARY_FILE", "Throughput", "format_throughput", "peak_memory_gib"]

SUMMARY_FILE = "throughput.json"
KEYS: tuple[tuple[str, str, str], ...] = (  # (record key, logged key, table header)
    ("step", "", "step"), ("samples_per_s", "perf/samples_per_s", "samples/s"), ("step_s", "perf/step_s", "step_s"),
    ("data_wait_frac", "perf/data_wait_frac", "data_wait"), ("peak_mem_gib", "perf/peak_mem_gib", "peak_GiB"),
)


def peak_memory_gib(device: torch.device) -> tuple[float, str]:
    """``(GiB, kind)``: torch's peak CUDA allocation on ``device``, else this process's peak resident memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30, "cuda"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**30 if sys.platform == "darwin" else 2**20), "host RSS"


class Throughput(pl.Callback):
    """Times training batches; logs ``perf/*`` every ``every_n_steps`` optimizer steps; end-of-run table."""

    def __init__(self, run_dir: str | Path | None = None, every_n_steps: int = 50) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.every_n_steps = int(every_n_steps)
        self.history: list[dict[str, float]] = []
        self.memory_kind = ""
        self._reset_window(0)
        self._last_end: float | None = None
        self._batch_start = 0.0

    def _reset_window(self, step: int) -> None:
        self._window_step, self._wait, self._busy, self._samples = step, 0.0, 0.0, 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the clock at the (possibly resumed) step."""
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        self._reset_window(int(trainer.global_step))
        self._last_end = time.perf_counter()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        """The time since the previous batch ended is data wait."""
        now = time.perf_counter()
        if self._last_end is not None:
            self._wait += now - self._last_end
        self._batch_start = now
        signal = batch.get("signal") if isinstance(batch, dict) else None
        self._samples += int(signal.shape[0]) if isinstance(signal, torch.Tensor) else 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """Close the window every ``every_n_steps`` optimizer steps: log and keep its record."""
        now = time.perf_counter()
        self._busy += now - self._batch_start
        self._last_end = now
        step = int(trainer.global_step)
        if step > self._window_step and step % self.every_n_steps == 0:
            self._close_window(trainer, pl_module, step)
            self._last_end = time.perf_counter()  # the logging above is not data wait

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Validation inside training is neither data wait nor training time: stop the clock."""
        self._last_end = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Restart the data-wait clock after validation."""
        if trainer.state.fn == "fit":
            self._last_end = time.perf_counter()

    def _close_window(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        wall = self._wait + self._busy
        if wall <= 0:
            return
        peak, self.memory_kind = peak_memory_gib(pl_module.device)
        record = {"step": step, "steps": step - self._window_step, "samples_per_s": self._samples * trainer.world_size / wall,
                  "step_s": wall / (step - self._window_step), "data_wait_frac": self._wait / wall, "peak_mem_gib": peak}
        self.history.append(record)
        for logger in trainer.loggers:
            logger.log_metrics({logged: record[key] for key, logged, _ in KEYS if logged}, step=step)
        self._reset_window(step)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The last partial window, then (rank 0) the table and ``throughput.json``."""
        step = int(trainer.global_step)
        if step > self._window_step:
            self._close_window(trainer, pl_module, step)
        if not trainer.is_global_zero or not self.history:
            return
        summary = self.summary(trainer.world_size)
        text = format_throughput(summary)
        if self.run_dir is not None:
            path = atomic_write_text(self.run_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
            text += f"\nthroughput: {path}"
        print(text, flush=True)

    def summary(self, world_size: int) -> dict[str, Any]:
        """The windows and their step-weighted means (the first window, with start-up, left out when there are more)."""
        rows = self.history[1:] if len(self.history) > 1 else self.history
        total_s = sum(r["step_s"] * r["steps"] for r in rows)
        wait_s = sum(r["data_wait_frac"] * r["step_s"] * r["steps"] for r in rows)
        samples = sum(r["samples_per_s"] * r["step_s"] * r["steps"] for r in rows)
        mean = {"samples_per_s": samples / total_s, "step_s": total_s / sum(r["steps"] for r in rows),
                "data_wait_frac": wait_s / total_s, "peak_mem_gib": max(r["peak_mem_gib"] for r in self.history)}
        return {"world_size": world_size, "every_n_steps": self.every_n_steps, "memory": self.memory_kind,
                "mean": mean, "mean_from_step": int(rows[0]["step"] - rows[0]["steps"]), "history": self.history}


def format_throughput(summary: dict[str, Any], max_rows: int = 8) -> str:
    """The printed end-of-run table: (at most ``max_rows``) windows and the mean after start-up."""
    history = summary["history"]
    if len(history) > max_rows:
        keep = sorted({round(i * (len(history) - 1) / (max_rows - 1)) for i in range(max_rows)})
        history = [history[i] for i in keep]
    mean = {"step": f"mean {summary['mean_from_step']}+", **summary["mean"]}
    rows = [[header for _, _, header in KEYS]]
    rows += [[_cell(r[key]) for key, _, _ in KEYS] for r in [*history, mean]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(KEYS))]
    lines = [f"throughput ({summary['world_size']} process(es); peak memory: {summary['memory']}):"]
    lines += ["  " + "  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, str):
        return value
    if float(value).is_integer() and abs(value) >= 1:
        return f"{value:.0f}"
    return f"{value:.3g}"

"""Learning diagnostics of a pre-training run: is it learning, or has it collapsed?

Pure functions (no state) compute the signals; :class:`CollapseCheck` turns them into a verdict;
:class:`LearningDiagnostics` (a Lightning callback, added to every run by
:func:`osf.models.training.run_pretrain`) evaluates them on a fixed held-out batch every
``every_n_steps`` optimizer steps and at the end, logs them (``diag/*`` in the CSV / W&B /
TensorBoard logs), prints a ``WARNING:`` line when a signal trips after warm-up, and ends the run with
a printed summary and ``<run_dir>/diagnostics.json``.

Signals (metric keys; all methods unless marked):
- ``rankme``: effective rank of the pooled embedding (RankMe, Garrido et al., 2023): exp of the
  entropy of the normalised singular values; 1 when every epoch maps onto one direction, at most
  ``min(N, D)``. ``emb_std``: mean per-dimension std of the raw embedding; ``emb_std_norm``: that of
  the L2-normalised embedding times sqrt(D) (SimSiam's collapse measure: ~1 spread out, 0 collapsed).
  Prefixed ``student_`` for the student of a method with a momentum teacher (the unprefixed ones are
  the exported backbone's, the teacher's).
- DINO family: ``teacher_entropy`` (mean per-epoch entropy of the centred, sharpened teacher
  softmax, nats), ``teacher_batch_entropy`` (entropy of the batch-mean teacher probabilities),
  the same two for the student, ``log_k`` (their maximum) and ``proto_usage`` (prototypes that are
  some epoch's teacher argmax, as a fraction of ``min(K, N)``, the most a batch of N can show).
  A uniform teacher has ``teacher_entropy`` ~ log K (the loss then reads ~log K: nothing is
  distilled); a one-hot collapse puts every epoch on one prototype: ``teacher_batch_entropy`` ~ 0.
- ``train/probe_acc``, ``val/probe_acc``, ``train/loss``: the last logged values, copied into the summary.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from osf.utils.atomic import atomic_write_text

__all__ = [
    "DEFAULT_BATCH_SIZE", "DEFAULT_EVERY_N_STEPS", "SUMMARY_FILE", "CollapseCheck", "EntropyStats", "LearningDiagnostics",
    "Tripped", "embedding_metrics", "embedding_std", "entropy", "entropy_stats", "fixed_batch", "format_summary",
    "prototype_usage", "rankme", "softmax_metrics",
]

DEFAULT_EVERY_N_STEPS = 50
DEFAULT_BATCH_SIZE = 64
SUMMARY_FILE = "diagnostics.json"
# Metrics copied from the trainer's logged values into every diagnostics record.
LOGGED_KEYS: tuple[str, ...] = ("train/loss", "train/probe_acc", "val/loss", "val/probe_acc")


# --- the signals (pure functions) ------------------------------------------------------------------
def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each row of ``probs`` ``[..., K]`` (rows sum to 1); ``0 log 0 = 0``."""
    p = probs.float()
    return -torch.special.xlogy(p, p).sum(-1)


@dataclass(frozen=True)
class EntropyStats:
    """Entropies (nats) of a batch of distributions over K prototypes."""

    per_sample: float  # mean over rows of H(p_i): low when each row is sharp
    of_mean: float  # H(mean_i p_i): low when every row picks the same prototypes
    log_k: float  # the maximum of both (uniform)


def entropy_stats(probs: torch.Tensor) -> EntropyStats:
    """Per-sample and batch-mean entropy of ``probs`` ``[..., K]`` (leading dims are rows)."""
    rows = probs.detach().float().reshape(-1, probs.shape[-1])
    return EntropyStats(float(entropy(rows).mean()), float(entropy(rows.mean(0))), math.log(rows.shape[-1]))


def prototype_usage(probs: torch.Tensor) -> float:
    """Distinct argmax prototypes over the rows of ``probs``, as a fraction of ``min(K, rows)``."""
    rows = probs.detach().reshape(-1, probs.shape[-1])
    return float(rows.argmax(-1).unique().numel()) / min(rows.shape[-1], rows.shape[0])


def rankme(embeddings: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe of ``[N, D]`` embeddings: ``exp(-sum p_k log p_k)``, ``p = sigma / ||sigma||_1 + eps``; 0 if all zero."""
    sigma = torch.linalg.svdvals(embeddings.detach().double())
    total = float(sigma.sum())
    if total <= 0.0 or not math.isfinite(total):
        return 0.0
    p = sigma / total + eps
    return float(torch.exp(-(p * p.log()).sum()))


def embedding_std(embeddings: torch.Tensor) -> tuple[float, float]:
    """``(mean per-dim std, mean per-dim std of the L2-normalised rows x sqrt(D))`` of ``[N, D]`` embeddings."""
    z = embeddings.detach().float()
    normed = F.normalize(z, dim=-1)
    return float(z.std(0).mean()), float(normed.std(0).mean() * math.sqrt(z.shape[-1]))


def embedding_metrics(embeddings: torch.Tensor, prefix: str = "") -> dict[str, float]:
    """``{prefix}rankme``, ``{prefix}emb_std``, ``{prefix}emb_std_norm`` of ``[N, D]`` embeddings."""
    std, std_norm = embedding_std(embeddings)
    return {f"{prefix}rankme": rankme(embeddings), f"{prefix}emb_std": std, f"{prefix}emb_std_norm": std_norm}


def softmax_metrics(probs: torch.Tensor, prefix: str) -> dict[str, float]:
    """``{prefix}_entropy``, ``{prefix}_batch_entropy`` and ``log_k`` of the distributions ``probs``."""
    stats = entropy_stats(probs)
    return {f"{prefix}_entropy": stats.per_sample, f"{prefix}_batch_entropy": stats.of_mean, "log_k": stats.log_k}


# --- the verdict -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tripped:
    """One collapse signal that tripped: its name, value, threshold and what to try."""

    signal: str
    value: float
    threshold: float
    message: str


@dataclass(frozen=True)
class CollapseCheck:
    """Thresholds of the collapse signals; :meth:`verdict` lists those a metrics record trips."""

    uniform_frac: float = 0.95  # teacher_entropy >= this x log K: uniform teacher
    onehot_frac: float = 0.1  # teacher_batch_entropy <= this x log K: one prototype for every epoch
    rank_min: float = 1.5  # rankme <= this: the embedding spans ~one direction
    std_min: float = 0.05  # emb_std_norm <= this: every epoch maps to ~the same point

    def verdict(self, metrics: Mapping[str, float]) -> list[Tripped]:
        """The signals ``metrics`` (one diagnostics record) trips; empty when healthy or not measured."""
        rules = (self._uniform, self._onehot, self._rank, self._std)
        return [t for t in (rule(metrics) for rule in rules) if t is not None]

    def _uniform(self, m: Mapping[str, float]) -> Tripped | None:
        if "teacher_entropy" not in m or m["teacher_entropy"] < self.uniform_frac * m["log_k"]:
            return None
        return Tripped("uniform_teacher", m["teacher_entropy"], self.uniform_frac * m["log_k"],
                       f"teacher is uniform: entropy {m['teacher_entropy']:.2f} nats vs log K = {m['log_k']:.2f}, "
                       "nothing is distilled; try a lower --teacher_temp (e.g. 0.02-0.04), fewer prototypes "
                       "(--dino_out_dim 256), a lower --lr or a longer warm-up (--warmup_steps)")

    def _onehot(self, m: Mapping[str, float]) -> Tripped | None:
        if "teacher_batch_entropy" not in m or m["teacher_batch_entropy"] > self.onehot_frac * m["log_k"]:
            return None
        return Tripped("onehot_teacher", m["teacher_batch_entropy"], self.onehot_frac * m["log_k"],
                       f"teacher puts every epoch on the same prototype: batch-mean entropy "
                       f"{m['teacher_batch_entropy']:.2f} nats vs log K = {m['log_k']:.2f}; try a slower teacher "
                       "(--momentum_base closer to 1), a higher --teacher_temp, a lower --lr or a longer warm-up")

    def _rank(self, m: Mapping[str, float]) -> Tripped | None:
        if "rankme" not in m or m["rankme"] > self.rank_min:
            return None
        return Tripped("rank_collapse", m["rankme"], self.rank_min,
                       f"embedding rank collapsed: RankMe {m['rankme']:.2f} (every epoch on ~one direction); "
                       "try a lower --lr, a longer warm-up (--warmup_steps), or weight decay / --koleo_lambda")

    def _std(self, m: Mapping[str, float]) -> Tripped | None:
        if "emb_std_norm" not in m or m["emb_std_norm"] > self.std_min:
            return None
        return Tripped("std_collapse", m["emb_std_norm"], self.std_min,
                       f"embedding std collapsed: per-dimension std of the normalised embedding is "
                       f"{m['emb_std_norm']:.3g}/sqrt(D) (every epoch maps to ~one point); try a lower --lr "
                       "or a longer warm-up (--warmup_steps)")


# --- the fixed batch -------------------------------------------------------------------------------
def fixed_batch(dataset: Any, size: int) -> dict[str, Any]:
    """``size`` epochs evenly spaced over ``dataset`` (all if fewer), read without touching any RNG."""
    from osf.datasets.datamodule import collate_epochs

    n = len(dataset)
    if n == 0:
        raise ValueError("the diagnostics batch needs a non-empty dataset")
    indices = sorted({int(i) for i in torch.linspace(0, n - 1, min(size, n)).round().long()})
    if hasattr(dataset, "__getitems__"):
        return collate_epochs(dataset.__getitems__(indices))
    return collate_epochs([dataset[i] for i in indices])


def _diagnostics_dataset(trainer: pl.Trainer, size: int) -> tuple[Any, str] | None:
    """The validation split when it fills the batch, else the larger of validation and training (None: no splits)."""
    datasets = getattr(trainer.datamodule, "datasets", None) or {}
    # A batch of a few epochs caps RankMe and the batch-mean entropy (<= log N) and would trip them.
    splits = [(split, datasets[split]) for split in ("val", "train") if len(datasets.get(split) or ()) > 0]
    if not splits:
        return None
    split, ds = next(((s, d) for s, d in splits if len(d) >= size), max(splits, key=lambda sd: len(sd[1])))
    return ds, split


def _copy_logged(trainer: pl.Trainer, record: dict[str, float]) -> None:
    """Copy the last logged loss and probe accuracies (``LOGGED_KEYS``) into ``record``."""
    for key in LOGGED_KEYS:
        if key in trainer.callback_metrics:
            record[key] = float(trainer.callback_metrics[key])


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


# --- the callback ----------------------------------------------------------------------------------
@dataclass
class _State:
    history: list[dict[str, float]] = field(default_factory=list)
    warned: list[str] = field(default_factory=list)


class LearningDiagnostics(pl.Callback):
    """Evaluates ``pl_module.diagnostic_metrics`` on a fixed batch, logs, warns and summarises (rank 0)."""

    def __init__(self, run_dir: str | Path | None = None, every_n_steps: int = DEFAULT_EVERY_N_STEPS,
                 batch_size: int = DEFAULT_BATCH_SIZE, check: CollapseCheck | None = None) -> None:
        if every_n_steps < 1 or batch_size < 2:
            raise ValueError(f"diagnostics need every_n_steps >= 1 and batch_size >= 2, got {every_n_steps}, {batch_size}")
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.every_n_steps = int(every_n_steps)
        self.batch_size = int(batch_size)
        self.check = check or CollapseCheck()
        self.state = _State()
        self.batch: dict[str, Any] | None = None
        self.batch_source = ""
        self.judge_from = 0
        self.summary: dict[str, Any] | None = None

    # Saved in checkpoints, so a resumed run's summary covers the whole run and warns once.
    def state_dict(self) -> dict[str, Any]:
        """History of records and the signals already warned about."""
        return asdict(self.state)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.state = _State(list(state_dict.get("history", [])), list(state_dict.get("warned", [])))

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Draw the fixed batch (rank 0 only: the other ranks never evaluate)."""
        if not trainer.is_global_zero:
            return
        self.judge_from = int(pl_module.diagnostic_warmup_steps())
        found = _diagnostics_dataset(trainer, self.batch_size)
        if found is not None:  # otherwise the first training batch is kept (on_train_batch_start)
            self.batch = fixed_batch(found[0], self.batch_size)
            self.batch_source = f"{self.batch['signal'].shape[0]} {found[1]} epochs"

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        """Without data-module splits, the first training batch (a copy) becomes the fixed batch."""
        if trainer.is_global_zero and self.batch is None:
            self.batch = {k: v.detach().clone().cpu() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            self.batch_source = f"{self.batch['signal'].shape[0]} epochs of the first training batch"
            self._evaluate(trainer, pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Record the state before the first step (or at the resumed step)."""
        self._evaluate(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """Every ``every_n_steps`` optimizer steps."""
        if trainer.global_step % self.every_n_steps == 0:
            self._evaluate(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Final record, verdict, printed summary and ``diagnostics.json``."""
        record = self._evaluate(trainer, pl_module)
        if record is None:
            return
        _copy_logged(trainer, record)  # a validation after the last step's record has run since
        self.summary = self._summarise(pl_module, record)
        text = format_summary(self.summary)
        if self.run_dir is not None:
            path = atomic_write_text(self.run_dir / SUMMARY_FILE, json.dumps(self.summary, indent=2, allow_nan=True) + "\n")
            text += f"\ndiagnostics: {path}"
        print(text, flush=True)

    def _evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float] | None:
        if not trainer.is_global_zero or self.batch is None:
            return None
        step = int(trainer.global_step)
        if self.state.history and self.state.history[-1]["step"] == step:
            return self.state.history[-1]
        record = {"step": step, **pl_module.diagnostic_metrics(_to_device(self.batch, pl_module.device))}
        _copy_logged(trainer, record)
        self.state.history.append(record)
        logged = {f"diag/{k}": v for k, v in record.items() if k != "step" and "/" not in k}
        for logger in trainer.loggers:
            logger.log_metrics(logged, step=step)
        if step >= self.judge_from:
            self._warn_new(record)
        return record

    def _warn_new(self, record: Mapping[str, float]) -> None:
        for tripped in self.check.verdict(record):
            if tripped.signal not in self.state.warned:
                self.state.warned.append(tripped.signal)
                print(f"WARNING: step {int(record['step'])}: {tripped.message}", flush=True)

    def _summarise(self, pl_module: pl.LightningModule, record: dict[str, float]) -> dict[str, Any]:
        judged = record["step"] >= self.judge_from
        tripped = self.check.verdict(record) if judged else []
        return {
            "method": getattr(pl_module, "method_name", type(pl_module).__name__),
            "batch": self.batch_source,
            "every_n_steps": self.every_n_steps,
            "judged_from_step": self.judge_from,
            "judged": judged,
            "healthy": judged and not tripped,
            "tripped": [asdict(t) for t in tripped],
            "thresholds": asdict(self.check),
            "final": record,
            "history": self.state.history,
        }


SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("step", "step"), ("train/loss", "loss"), ("teacher_entropy", "H_teacher"), ("teacher_batch_entropy", "H_t(mean)"),
    ("student_entropy", "H_student"), ("proto_usage", "protos"), ("rankme", "RankMe"), ("emb_std_norm", "std_norm"),
    ("student_rankme", "RankMe_s"), ("train/probe_acc", "probe_acc"), ("val/probe_acc", "val_probe"),
)


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if float(value).is_integer() and abs(value) >= 1 else f"{value:.3g}"


def _thin(history: list[dict[str, float]], max_rows: int) -> list[dict[str, float]]:
    """At most ``max_rows`` records, evenly spaced, always the first and the last."""
    if len(history) <= max_rows:
        return history
    keep = sorted({round(i * (len(history) - 1) / (max_rows - 1)) for i in range(max_rows)})
    return [history[i] for i in keep]


def format_summary(summary: Mapping[str, Any], max_rows: int = 12) -> str:
    """The printed end-of-run summary: a table of (at most ``max_rows``) records and the verdict."""
    history = summary["history"]
    columns = [(k, name) for k, name in SUMMARY_COLUMNS if any(k in r for r in history)]
    rows = [[name for _, name in columns]] + [[_cell(r.get(k)) for k, _ in columns] for r in _thin(history, max_rows)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = [f"learning diagnostics ({summary['method']}; fixed batch of {summary['batch']}"
             + (f"; log K = {history[-1]['log_k']:.2f}" if "log_k" in history[-1] else "") + "):"]
    lines += ["  " + "  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    if not summary["judged"]:
        lines.append(f"verdict: not judged, the run ended within warm-up (step {summary['final']['step']} "
                     f"< {summary['judged_from_step']})")
    elif summary["healthy"]:
        lines.append("verdict: no collapse signal tripped")
    else:
        lines += [f"WARNING: at the end of the run: {t['message']}" for t in summary["tripped"]]
    return "\n".join(lines)

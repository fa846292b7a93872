"""Night-level prediction: a property of a night or a person (AHI >= 15, age, sex, a condition) from a frozen backbone.

Frozen backbone -> epoch embeddings per night (the linear probe's feature cache, same key, so a Stage
probe and a night-level run share one extraction) -> a night model trained in seconds:

- ``mean_std``: mean and standard deviation of the night's embeddings + a linear map (baseline);
- ``attention``: gated attention pooling (Ilse et al. 2018) + a linear map;
- ``transformer``: a small transformer over the epoch sequence, masked mean pooling, a linear map.

Targets come from the cohort's subject/visit tables (NSRR ``datasets/*.csv``; locations and id columns
in ``config.DatasetSpec``), joined to recordings by subject id and visit. A threshold turns a numeric
variable into a binary task (``nsrr_ahi_hp3r_aasm15 >= 15``); a 0/1 or text variable is a
classification; any other numeric variable is a regression. Splits are the store's subject-level
splits; confidence intervals resample subjects (``osf.downstream.metrics.bootstrap_ci``).
"""

from __future__ import annotations

import glob
import logging
import math
import pickle
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from torch import nn

from osf import config
from osf.downstream.features import FeatureSet
from osf.downstream.inputs import DownstreamInputs, extract_features, load_inputs, record_header, run_identity
from osf.downstream.metrics import binary_scalars, bootstrap_ci, choose_threshold, multiclass_scalars
from osf.downstream.results import append_results_row, results_row, utc_timestamp, write_run_json
from osf.downstream.run_config import DownstreamConfig, setting_defaults
from osf.downstream.selection import ValidationSelection, train_with_validation

log = logging.getLogger(__name__)

NIGHT_MODELS: tuple[str, ...] = ("mean_std", "stage_profile", "attention", "transformer")
# Night models whose readout is fitted in closed form on a pooled night vector (few nights, many features).
LINEAR_READOUT_MODELS: tuple[str, ...] = ("mean_std", "stage_profile")
# stage_profile: L2 penalty (C = 1 / this) of the epoch-level stage probe it pools.
STAGE_PROBE_PENALTY = 2.0
MAX_CLASSES = 10
# Defaults of the night models (a night is one sample: few samples, so small models and strong decay).
NIGHT_DEFAULTS: dict[str, Any] = {"max_steps": 300, "lr": 1e-3, "weight_decay": 0.05, "batch_size": 32,
                                  "eval_every": 10, "d_model": 64}
# mean_std readout: L2 penalties tried (ridge alpha; logistic regression C = 1 / alpha), best on validation.
READOUT_PENALTIES: tuple[float, ...] = tuple(float(a) for a in np.logspace(-2, 4, 13))
MIN_TRAIN_SUBJECTS_PER_CLASS = 2
MIN_EVAL_SUBJECTS_PER_CLASS = 1
MIN_REGRESSION_SUBJECTS = {"train": 3, "val": 2, "test": 2}


# --- targets from the subject tables -------------------------------------------------------------
@dataclass(frozen=True)
class NightTarget:
    """A variable of the subject tables and, for a binary task, the threshold (``value >= threshold``)."""

    variable: str
    threshold: float | None = None

    @property
    def name(self) -> str:
        """Task name for the results table, e.g. ``nsrr_ahi_hp3r_aasm15>=15``."""
        return self.variable if self.threshold is None else f"{self.variable}>={self.threshold:g}"


@dataclass
class SubjectTable:
    """One subject/visit table of a cohort, keyed by normalised subject id (and visit, -1 = any visit)."""

    path: Path
    dataset: str
    frame: pd.DataFrame  # columns _subject (str), _visit (int, -1 = applies to every visit) + variables


def normalise_id(value: object) -> str:
    """Comparable subject id: case-folded, stripped, numeric ids without leading zeros ("000123" = "123")."""
    text = str(value).strip().lower()
    if text.endswith(".0") and text[:-2].isdigit():  # an integer id read back as float
        text = text[:-2]
    return str(int(text)) if text.isdigit() else text


def _template_regex(template: str, visit_names: Sequence[str]) -> re.Pattern:
    """Glob template -> regex; ``{visit}`` matches a visit number or one of the dataset's visit names."""
    parts = re.split(r"(\{visit\}|\*)", template)
    visit = "|".join([r"\d+", *map(re.escape, visit_names)])
    pattern = "".join({"{visit}": f"(?P<visit>{visit})", "*": r"[^/]*"}.get(p, re.escape(p)) for p in parts)
    return re.compile("^" + pattern + "$")


def find_subject_tables(dataset: str, input_dir: str | Path) -> list[tuple[Path, int | None]]:
    """``(path, visit from the file name or None)`` of every subject table of ``dataset`` under ``input_dir``."""
    from osf.datasets.ingest import resolve_input_dir

    spec = config.get_dataset(dataset)
    root = resolve_input_dir(dataset, input_dir)
    visits = dict(spec.visit_names)
    found: list[tuple[Path, int | None]] = []
    for template in spec.subject_tables:
        template = template.replace("{name}", spec.name)
        rx = _template_regex(template, list(visits))
        for hit in sorted(glob.glob(glob.escape(str(root)) + "/" + template.replace("{visit}", "*"))):
            m = rx.match(Path(hit).relative_to(root).as_posix())
            if m is None or any(Path(hit) == p for p, _ in found):  # e.g. shhs-harmonized-... is no visit file
                continue
            text = m.groupdict().get("visit")
            visit = None if text is None else visits.get(text, int(text) if text.isdigit() else None)
            found.append((Path(hit), visit))
    return found


def _read_table(path: Path, dataset: str, visit: int | None) -> SubjectTable:
    spec = config.get_dataset(dataset)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=True, low_memory=False)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as err:
        raise ValueError(f"{path}: unreadable subject table: {err}") from err
    lower = {c.lower(): c for c in frame.columns}
    id_col = next((lower[c] for c in spec.subject_id_columns if c in lower), None)
    if id_col is None:
        raise ValueError(f"{path}: no subject id column (looked for {list(spec.subject_id_columns)}); "
                         f"columns start {list(frame.columns[:8])}")
    visit_col = next((lower[c] for c in spec.visit_columns if c in lower), None)
    out = frame.drop(columns=[id_col] + ([visit_col] if visit_col else []))
    out.insert(0, "_subject", frame[id_col].map(normalise_id))
    if visit_col is not None:
        names = dict(spec.visit_names)
        v = frame[visit_col].map(lambda x: names.get(str(x).strip(), x))
        out.insert(1, "_visit", pd.to_numeric(v, errors="coerce").fillna(-1).astype(int))
    else:
        out.insert(1, "_visit", -1 if visit is None else int(visit))
    return SubjectTable(path, dataset, out)


def load_subject_tables(dataset: str, input_dir: str | Path) -> list[SubjectTable]:
    """Every subject table of ``dataset`` under ``input_dir`` (raises when there is none)."""
    found = find_subject_tables(dataset, input_dir)
    if not found:
        spec = config.get_dataset(dataset)
        raise ValueError(f"{input_dir}: no subject tables for dataset {dataset!r} "
                         f"(looked for {[t.replace('{name}', spec.name) for t in spec.subject_tables]})")
    return [_read_table(p, dataset, v) for p, v in found]


def available_variables(tables: Sequence[SubjectTable]) -> list[str]:
    """Sorted variable names over ``tables`` (harmonised ``nsrr_*`` and cohort columns)."""
    return sorted({c for t in tables for c in t.frame.columns if not c.startswith("_")})


def _check_variable(variable: str, tables: dict[str, list[SubjectTable]]) -> None:
    for dataset, tabs in tables.items():
        names = available_variables(tabs)
        if variable not in names:
            shown = ", ".join(names[:80]) + (f", ... ({len(names)} in all)" if len(names) > 80 else "")
            raise ValueError(f"unknown --target_variable {variable!r} for dataset {dataset!r} "
                             f"(tables {[t.path.name for t in tabs]}); available variables: {shown}")


def lookup_target(
    tables: dict[str, list[SubjectTable]], variable: str, recordings: pd.DataFrame
) -> pd.Series:
    """``variable`` per recording (rows of ``recordings``: dataset, subject_id, visit); NaN where missing.

    A table with a visit column (or a per-visit file such as ``shhs2-dataset``) matches the visit; a
    table without one gives its value to every visit of the subject. Where tables disagree the one
    listed first in the registry wins.
    """
    _check_variable(variable, tables)
    out = pd.Series(np.nan, index=recordings.index, dtype=object)
    for dataset, group in recordings.groupby("dataset"):
        frame = pd.concat([t.frame[["_subject", "_visit", variable]] for t in tables[dataset]
                           if variable in t.frame.columns]).dropna(subset=[variable])
        frame = frame.drop_duplicates(["_subject", "_visit"])
        keys = pd.DataFrame({"_subject": group["subject_id"].map(normalise_id).to_numpy(),
                             "_visit": group["visit"].astype(int).to_numpy()}, index=group.index)
        exact = keys.merge(frame[frame["_visit"] >= 0], on=["_subject", "_visit"], how="left")[variable]
        anyv = keys.merge(frame[frame["_visit"] < 0].drop_duplicates("_subject").drop(columns="_visit"),
                          on="_subject", how="left")[variable]
        out.loc[group.index] = exact.fillna(anyv).to_numpy()
    return out


@dataclass
class EncodedTarget:
    """Targets of the nights that have one; ``class_names`` is None for a regression."""

    y: np.ndarray  # int64 class ids or float64 values
    keep: np.ndarray  # bool per night: target present
    class_names: tuple[str, ...] | None

    @property
    def is_regression(self) -> bool:
        """True for a numeric target without threshold."""
        return self.class_names is None


def encode_target(values: pd.Series, target: NightTarget) -> EncodedTarget:
    """Class ids / values of ``values`` (missing: ``keep`` False)."""
    raw = values.astype(object).where(values.notna(), None)
    text = raw.map(lambda v: None if v is None or str(v).strip() in ("", "nan", "NaN") else str(v).strip())
    keep = text.notna().to_numpy()
    numeric = pd.to_numeric(text[keep], errors="coerce")
    is_numeric = bool(keep.any()) and numeric.notna().all()
    if target.threshold is not None:
        if not is_numeric:
            bad = sorted(set(text[keep][numeric.isna()]))[:5]
            raise ValueError(f"--target_threshold needs a numeric variable; {target.variable!r} has values {bad}")
        y = np.zeros(len(values), dtype=np.int64)
        y[keep] = (numeric.to_numpy(dtype=float) >= target.threshold).astype(np.int64)
        names = (f"{target.variable}<{target.threshold:g}", f"{target.variable}>={target.threshold:g}")
        return EncodedTarget(y, keep, names)
    if is_numeric and not set(np.unique(numeric.to_numpy(dtype=float))) <= {0.0, 1.0}:
        y = np.full(len(values), np.nan)
        y[keep] = numeric.to_numpy(dtype=float)
        return EncodedTarget(y, keep, None)
    levels = sorted(set(text[keep]))
    if len(levels) > MAX_CLASSES:
        raise ValueError(f"{target.variable!r} has {len(levels)} distinct text values (more than {MAX_CLASSES}); "
                         "name a numeric variable (regression) or one with few classes")
    code = {v: i for i, v in enumerate(levels)}
    y = np.full(len(values), -1, dtype=np.int64)
    y[keep] = text[keep].map(code).to_numpy(dtype=np.int64)
    return EncodedTarget(y, keep, tuple(f"{target.variable}={v}" for v in levels))


# --- nights from cached epoch features ----------------------------------------------------------
@dataclass
class NightSet:
    """Epoch embeddings grouped per night, with each night's identity and target."""

    features: list[np.ndarray]  # per night float32 [T, D], epochs in time order
    recording_ids: np.ndarray
    subject_ids: np.ndarray
    y: np.ndarray
    epoch_labels: list[np.ndarray] | None = None  # per night int [T]: the epochs' labels of the run's task

    def __len__(self) -> int:
        return len(self.features)

    def subset(self, keep: np.ndarray) -> NightSet:
        """Nights where ``keep`` is True."""
        idx = np.flatnonzero(keep)
        labels = None if self.epoch_labels is None else [self.epoch_labels[i] for i in idx]
        return NightSet([self.features[i] for i in idx], self.recording_ids[idx], self.subject_ids[idx], self.y[idx],
                        labels)


def _per_night(fs: FeatureSet, values: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """``values`` (one row per epoch of ``fs``) split per recording, in time order; recordings by first appearance."""
    rec = np.asarray(fs.recording_ids).astype(str)
    order = np.lexsort((fs.epoch_index, rec))
    rec_sorted = rec[order]
    starts = np.r_[0, np.flatnonzero(rec_sorted[1:] != rec_sorted[:-1]) + 1, rec_sorted.size]
    grouped = {rec_sorted[starts[i]]: values[order[starts[i]:starts[i + 1]]] for i in range(starts.size - 1)}
    first = list(dict.fromkeys(rec))
    return [grouped[r] for r in first], np.asarray(first)


def group_nights(fs: FeatureSet) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Per recording (in order of first appearance): ``[T, D]`` features sorted by epoch index."""
    feats, first = _per_night(fs, fs.features)
    subj = dict(zip(np.asarray(fs.recording_ids).astype(str), np.asarray(fs.subject_ids).astype(str)))
    return feats, first, np.asarray([subj[r] for r in first])


def group_night_labels(fs: FeatureSet) -> list[np.ndarray]:
    """The epochs' labels per recording, in the order and time order of :func:`group_nights`."""
    return _per_night(fs, np.asarray(fs.labels))[0]


def check_night_counts(sets: dict[str, NightSet], class_names: tuple[str, ...] | None) -> dict[str, dict]:
    """Subjects per class (or per split, regression); raises when a split is too small to train or evaluate."""
    counts: dict[str, dict] = {}
    for split, ns in sets.items():
        if class_names is None:
            n = int(np.unique(ns.subject_ids).size)
            need = MIN_REGRESSION_SUBJECTS[split]
            if n < need:
                raise ValueError(f"{split} split: {n} subject(s) with a target, need >= {need} for a regression; "
                                 "add nights or change the store's --split_fractions")
            counts[split] = {"subjects": n}
            continue
        need = MIN_TRAIN_SUBJECTS_PER_CLASS if split == "train" else MIN_EVAL_SUBJECTS_PER_CLASS
        per = {name: int(np.unique(ns.subject_ids[ns.y == c]).size) for c, name in enumerate(class_names)}
        short = {k: v for k, v in per.items() if v < need}
        if short:
            raise ValueError(f"{split} split: too few subjects per class {per} (need >= {need} each; short: "
                             f"{short}); add nights, change the threshold or the store's --split_fractions")
        counts[split] = per
    return counts


# --- night models -------------------------------------------------------------------------------
def pad_nights(features: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, T_max, D]`` zero-padded features and a bool ``[N, T_max]`` mask (True = real epoch)."""
    t_max = max(f.shape[0] for f in features)
    x = torch.zeros(len(features), t_max, features[0].shape[1])
    mask = torch.zeros(len(features), t_max, dtype=torch.bool)
    for i, f in enumerate(features):
        x[i, : f.shape[0]] = torch.as_tensor(f, dtype=torch.float32)
        mask[i, : f.shape[0]] = True
    return x, mask


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


class NightModel(nn.Module):
    """Night embedding from its epoch embeddings, then a linear output (classes, or 1 for regression)."""

    def __init__(self, in_dim: int, out_dim: int, kind: str = "mean_std", d_model: int = 64, layers: int = 2,
                 heads: int = 4, dropout: float = 0.1, max_len: int = 2048, n_stages: int = 0) -> None:
        super().__init__()
        if kind not in NIGHT_MODELS:
            raise ValueError(f"unknown night model {kind!r}; choose from {list(NIGHT_MODELS)}")
        self.kind, self.config = kind, {"in_dim": in_dim, "out_dim": out_dim, "kind": kind, "d_model": d_model,
                                        "layers": layers, "heads": heads, "dropout": dropout, "max_len": max_len,
                                        "n_stages": n_stages}
        self.register_buffer("feat_mean", torch.zeros(in_dim))
        self.register_buffer("feat_std", torch.ones(in_dim))
        self.dropout = nn.Dropout(dropout)
        if kind == "mean_std":
            self.out = nn.Linear(2 * in_dim, out_dim)
        elif kind == "stage_profile":  # hierarchical: epoch stage probabilities, averaged over the night
            if n_stages < 2:
                raise ValueError(f"stage_profile needs n_stages >= 2, got {n_stages}")
            self.stage_probe = nn.Linear(in_dim, n_stages)
            self.out = nn.Linear(n_stages, out_dim)
        elif kind == "attention":  # ABMIL: embed each epoch, gated attention weights, pooled embedding
            self.embed = nn.Sequential(nn.Linear(in_dim, d_model), nn.GELU(), nn.Dropout(dropout))
            self.att_v, self.att_u = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
            self.att_w = nn.Linear(d_model, 1)
            self.out = nn.Linear(d_model, out_dim)
        else:
            self.proj = nn.Linear(in_dim, d_model)
            self.pos = nn.Parameter(torch.zeros(max_len, d_model))
            nn.init.normal_(self.pos, std=0.02)
            layer = nn.TransformerEncoderLayer(d_model, heads, 2 * d_model, dropout, batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.out = nn.Linear(d_model, out_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x [B, T, D]`` raw embeddings, ``mask [B, T]`` True = epoch -> ``[B, out_dim]``."""
        if self.kind in LINEAR_READOUT_MODELS:
            return self.out(self.dropout(self.pool(x, mask)))
        x = (x - self.feat_mean) / self.feat_std
        if self.kind == "attention":
            h = self.embed(x)
            score = self.att_w(torch.tanh(self.att_v(h)) * torch.sigmoid(self.att_u(h))).squeeze(-1)
            weight = score.masked_fill(~mask, -torch.inf).softmax(-1)
            return self.out(self.dropout((weight.unsqueeze(-1) * h).sum(1)))
        t = x.shape[1]
        if t > self.pos.shape[0]:  # longer than any training night: positions repeat
            pos = self.pos.repeat(math.ceil(t / self.pos.shape[0]), 1)[:t]
        else:
            pos = self.pos[:t]
        h = self.encoder(self.proj(x) + pos, src_key_padding_mask=~mask)
        return self.out(self.dropout(_masked_mean(h, mask)))

    def pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The night vector the linear readouts read: mean and std of the standardised epochs (``mean_std``), or
        the night's mean stage probabilities under the epoch stage probe (``stage_profile``: its stage fractions)."""
        x = (x - self.feat_mean) / self.feat_std
        if self.kind == "stage_profile":
            return _masked_mean(self.stage_probe(x).softmax(-1), mask)
        mean = _masked_mean(x, mask)
        var = _masked_mean((x - mean.unsqueeze(1)) ** 2, mask)
        return torch.cat([mean, var.clamp_min(1e-8).sqrt()], -1)


@dataclass
class NightFit:
    """Trained night model and how it was selected."""

    model: NightModel
    best_step: int
    best_score: float
    selection_metric: str
    regression: bool = False
    target_mean: float = 0.0  # regression: outputs are standardised targets
    target_std: float = 1.0
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0


def _selection_metric(regression: bool, num_outputs: int | None) -> str:
    """Validation metric of a night model: -MAE (regression), AUROC (binary) or macro-F1."""
    if regression:
        return "neg_mae"
    return "auroc" if num_outputs == 2 else "macro_f1"


def _selection(y: np.ndarray, pred: np.ndarray, regression: bool) -> tuple[str, float]:
    if regression:
        return "neg_mae", -float(np.mean(np.abs(pred - y)))
    if pred.shape[1] == 2:
        return "auroc", binary_scalars(y, pred, 0.5)["auroc"]
    return "macro_f1", multiclass_scalars(y, pred)["macro_f1"]


@torch.no_grad()
def predict_nights(fit: NightFit, features: Sequence[np.ndarray], batch_size: int = 64,
                   device: str | torch.device = "cpu") -> np.ndarray:
    """Class probabilities ``[N, C]`` or regression values ``[N]`` of nights."""
    model = fit.model.eval().to(device)
    outs = []
    for i in range(0, len(features), batch_size):
        x, mask = pad_nights(features[i: i + batch_size])
        outs.append(model(x.to(device), mask.to(device)).float().cpu())
    out = torch.cat(outs)
    if fit.regression:
        return (out.squeeze(-1) * fit.target_std + fit.target_mean).numpy().astype(np.float64)
    return out.softmax(-1).numpy().astype(np.float64)


def train_night_model(
    train: NightSet, val: NightSet, kind: str, num_classes: int | None, max_steps: int = 300, lr: float = 1e-3,
    weight_decay: float = 0.05, batch_size: int = 32, eval_every: int = 10, d_model: int = 64, seed: int = 0,
    device: str | torch.device = "cpu",
) -> NightFit:
    """Train a night model (AdamW, cosine decay) on nights; keep the step with the best validation score.

    ``num_classes=None`` is a regression (targets standardised with the training mean/std).
    """
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    regression = num_classes is None
    cat = torch.as_tensor(np.concatenate(train.features), dtype=torch.float32)
    if not torch.isfinite(cat).all():
        raise ValueError("features contain NaN/inf; check the backbone checkpoint and the input signals")
    x, mask = pad_nights(train.features)
    model = NightModel(x.shape[-1], 1 if regression else num_classes, kind, d_model=d_model,
                       max_len=max(x.shape[1], 64), n_stages=_stage_count(train) if kind == "stage_profile" else 0)
    model.feat_mean.copy_(cat.mean(0))
    model.feat_std.copy_(cat.std(0, unbiased=False).clamp_min(1e-6))
    y_mean = float(np.mean(train.y)) if regression else 0.0
    y_std = (float(np.std(train.y)) or 1.0) if regression else 1.0
    y = torch.as_tensor((train.y - y_mean) / y_std if regression else train.y,
                        dtype=torch.float32 if regression else torch.long)
    if kind == "stage_profile":
        _fit_stage_probe(model, train)
    if kind in LINEAR_READOUT_MODELS:  # few nights, many features: a regularised closed form beats SGD here
        return _fit_linear_readout(model, train, val, regression, y_mean, y_std, t0, device)
    model.to(device)
    x, mask, y = x.to(device), mask.to(device), y.to(device)
    fit = NightFit(model, 0, -math.inf, _selection_metric(regression, num_classes), regression, y_mean, y_std)
    bs = min(batch_size, len(train))

    def batch_loss() -> torch.Tensor:
        idx = torch.randperm(len(train), generator=gen)[:bs].to(device)
        out = model(x[idx], mask[idx])
        return nn.functional.mse_loss(out.squeeze(-1), y[idx]) if regression else nn.functional.cross_entropy(out, y[idx])

    def validation_score() -> float:
        return _selection(val.y, predict_nights(fit, val.features, device=device), regression)[1]

    selection = train_with_validation(model, batch_loss, validation_score, fit.selection_metric, max_steps=max_steps,
                                      eval_every=eval_every, lr=lr, weight_decay=weight_decay)
    return _finished(fit, selection, t0)


def _finished(fit: NightFit, selection: ValidationSelection, t0: float) -> NightFit:
    """``fit`` with the selected model (on the CPU, eval mode), its selection record and the training time."""
    fit.model = fit.model.cpu().eval()
    fit.best_step, fit.best_score, fit.history = selection.best_step, selection.best_score, selection.history
    fit.train_seconds = time.perf_counter() - t0
    return fit


def _stage_count(train: NightSet) -> int:
    """Stage classes of the training epochs; refuses a run whose epoch labels are not sleep stages."""
    if train.epoch_labels is None:
        raise ValueError("stage_profile needs the epochs' stage labels: run the night level with --eval_label Stage")
    labels = np.concatenate(train.epoch_labels)
    known = labels[labels >= 0]
    if np.unique(known).size < 2:
        raise ValueError(f"stage_profile: the training nights' epochs hold {np.unique(known).size} stage class(es), "
                         "need >= 2 (run the night level with --eval_label Stage)")
    return int(known.max()) + 1


def _fit_stage_probe(model: NightModel, train: NightSet) -> None:
    """``stage_profile``: an L2 logistic-regression stage probe on the training nights' standardised epochs."""
    x = (np.concatenate(train.features) - model.feat_mean.numpy()) / model.feat_std.numpy()
    labels = np.concatenate(train.epoch_labels)
    known = labels >= 0
    coef, intercept = _readout_weights(x[known], labels[known], False, STAGE_PROBE_PENALTY, 0.0, 1.0)
    weight = np.zeros((model.config["n_stages"], x.shape[1]))
    bias = np.full(model.config["n_stages"], -1e4)  # a stage absent from training never gets probability
    present = np.unique(labels[known])  # the classifier's rows, in sorted class order
    weight[present], bias[present] = coef, intercept
    with torch.no_grad():
        model.stage_probe.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        model.stage_probe.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))


@torch.no_grad()
def _pooled(model: NightModel, features: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
    """The pooled night vectors that ``model.out`` reads (:meth:`NightModel.pool`)."""
    model.eval()
    out = []
    for i in range(0, len(features), batch_size):
        x, mask = pad_nights(features[i: i + batch_size])
        out.append(model.pool(x, mask))
    return torch.cat(out).numpy().astype(np.float64)


def _fit_linear_readout(model: NightModel, train: NightSet, val: NightSet, regression: bool, y_mean: float,
                        y_std: float, t0: float, device: str | torch.device) -> NightFit:
    """Linear readouts: ridge / L2 logistic regression (scikit-learn) on the pooled vectors, penalty picked on val.

    The pooled vectors' standardisation is folded into ``model.out``, so the model applies to raw embeddings.
    """
    model.cpu()
    z = _pooled(model, train.features)
    centre, scale = z.mean(0), z.std(0) + 1e-6
    zs = (z - centre) / scale
    fit = NightFit(model, 0, -math.inf, _selection_metric(regression, model.config["out_dim"]), regression, y_mean, y_std)
    selection = ValidationSelection.start(model, fit.selection_metric)
    for step, alpha in enumerate(READOUT_PENALTIES, 1):
        coef, bias = _readout_weights(zs, train.y, regression, alpha, y_mean, y_std)
        w = coef / scale
        with torch.no_grad():
            model.out.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
            model.out.bias.copy_(torch.as_tensor(bias - w @ centre, dtype=torch.float32))
        _, score = _selection(val.y, predict_nights(fit, val.features, device=device), regression)
        selection.record(model, step, score, penalty=float(alpha))
    selection.restore_best(model)
    return _finished(fit, selection, t0)


def _readout_weights(zs: np.ndarray, y: np.ndarray, regression: bool, alpha: float, y_mean: float, y_std: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``[C, F]`` and bias ``[C]`` of ridge (regression) or L2 logistic regression with penalty ``alpha``."""
    from sklearn.linear_model import LogisticRegression, Ridge

    if regression:
        est = Ridge(alpha=alpha).fit(zs, (y - y_mean) / y_std)
        return est.coef_[None, :], np.atleast_1d(est.intercept_)
    est = LogisticRegression(C=1.0 / alpha, max_iter=5000).fit(zs, y)
    coef, bias = est.coef_, est.intercept_
    if coef.shape[0] == 1:  # binary: logits (0, w.z + b) give the same softmax as sigmoid(w.z + b)
        coef, bias = np.vstack([np.zeros_like(coef), coef]), np.r_[0.0, bias]
    return coef, bias


# --- metrics ------------------------------------------------------------------------------------
def classification_scalars(y: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    """AUROC, AUPRC, balanced accuracy (+ the binary/multi-class extras) of night predictions."""
    if proba.shape[1] == 2:
        out = binary_scalars(y, proba, threshold)
        sens, spec = out["sensitivity"], out["specificity"]
        out["balanced_accuracy"] = (sens + spec) / 2 if np.isfinite(sens) and np.isfinite(spec) else math.nan
        return out
    return multiclass_scalars(y, proba)


def regression_scalars(y: np.ndarray, pred: np.ndarray, train_mean: float) -> dict[str, float]:
    """MAE, RMSE, Spearman rho, R^2 and the MAE of predicting the training mean (the baseline to beat)."""
    err = pred - y
    base = np.abs(train_mean - y)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    rho = spearmanr(y, pred).statistic if y.size > 2 and np.ptp(y) > 0 and np.ptp(pred) > 0 else math.nan
    return {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err ** 2))), "spearman": float(rho),
            "r2": 1.0 - float(np.sum(err ** 2)) / ss_tot if ss_tot > 0 else math.nan,
            "baseline_mae": float(np.mean(base)), "mae_gain": float(np.mean(base) - np.mean(np.abs(err)))}


def evaluate_nights(
    y: np.ndarray, pred: np.ndarray, subject_ids: np.ndarray, class_names: tuple[str, ...] | None,
    threshold: float | None = None, train_mean: float = 0.0, n_boot: int = 1000, seed: int = 0,
) -> dict[str, Any]:
    """Metrics of night predictions with ``<name>_ci95`` (bootstrap over subjects) beside each scalar."""
    if class_names is None:
        def scalars(idx: np.ndarray) -> dict[str, float]:
            return regression_scalars(y[idx], pred[idx], train_mean)
    else:
        thr = (choose_threshold(y, pred) if threshold is None else threshold) if len(class_names) == 2 else 0.5

        def scalars(idx: np.ndarray) -> dict[str, float]:
            return classification_scalars(y[idx], pred[idx], thr)
    point = scalars(np.arange(len(y)))
    ci = bootstrap_ci(scalars, subject_ids, n_boot=n_boot, seed=seed) if n_boot > 0 else {}
    out: dict[str, Any] = {}
    for k, v in point.items():
        out[k] = v
        if k in ci:
            out[f"{k}_ci95"] = list(ci[k])
    if class_names is not None and len(class_names) == 2:
        out["threshold"] = thr
    out["n_nights"] = len(y)
    out["n_subjects"] = int(np.unique(subject_ids).size)
    return out


# --- the run (main_finetune.py --eval_level night) ----------------------------------------------
@dataclass
class EpochFeatures:
    """The inputs of a run and the cached frozen-backbone features of every split."""

    inputs: DownstreamInputs
    features: dict[str, FeatureSet]

    @property
    def dm(self) -> Any:
        """The run's data module (set up)."""
        return self.inputs.dm


def _setting_value(cfg: DownstreamConfig, name: str, defaults: dict[str, Any]) -> Any:
    """The flag's value, or this run kind's default when the flag was left unset."""
    value = getattr(cfg, name)
    return defaults[name] if value is None else value


def selected_datasets(cfg: DownstreamConfig) -> list[str] | None:
    """``--downstream_dataset_name`` as a list (None = every downstream cohort)."""
    return cfg.datasets


def load_epoch_features(cfg: DownstreamConfig) -> EpochFeatures:
    """Backbone, data module and per-split features, through the linear probe's cache (same key, shared files)."""
    batch_size = cfg.batch_size or setting_defaults("linear_probe")["batch_size"]
    inputs = load_inputs(cfg, batch_size)
    return EpochFeatures(inputs, extract_features(cfg, inputs, batch_size))


def _recording_keys(dm: Any, recording_ids: np.ndarray) -> pd.DataFrame:
    """dataset, subject_id, visit of each recording id (from the store index)."""
    index = dm.store.index[["dataset", "recording_id", "subject_id", "visit"]].drop_duplicates("recording_id")
    keys = index.set_index("recording_id").loc[list(recording_ids)].reset_index()
    return keys.astype({"dataset": str, "subject_id": str, "visit": int})


def check_night_config(cfg: DownstreamConfig) -> tuple[NightTarget, list[str]]:
    """Flag checks of a night-level run (before any feature is extracted); returns target and night models."""
    if not cfg.target_variable:
        raise ValueError("--eval_level night needs --target_variable (e.g. nsrr_ahi_hp3r_aasm15, nsrr_age)")
    if not cfg.subject_tables:
        raise ValueError("--eval_level night needs --subject_tables: the raw data folder holding "
                         "<cohort>/datasets/*.csv (the --input_dir given to main_preprocess.py)")
    if cfg.finetune_backbone or cfg.n_train_samples:
        raise ValueError("--eval_level night trains on cached frozen features: drop --finetune_backbone / --n_train_samples")
    models = [m.strip() for m in cfg.night_models.split(",") if m.strip()]
    bad = [m for m in models if m not in NIGHT_MODELS]
    if bad or not models:
        raise ValueError(f"unknown --night_models {bad or cfg.night_models!r}; choose from {list(NIGHT_MODELS)}")
    config.resolve_channel_preset(cfg.eval_channels)
    return NightTarget(cfg.target_variable, cfg.target_threshold), models


def night_sets(ef: EpochFeatures, tables: dict[str, list[SubjectTable]], target: NightTarget
               ) -> tuple[dict[str, NightSet], tuple[str, ...] | None, dict[str, Any]]:
    """Nights per split with their targets; nights without a target are skipped and counted."""
    grouped = {s: group_nights(fs) for s, fs in ef.features.items()}
    keys = {s: _recording_keys(ef.dm, g[1]) for s, g in grouped.items()}
    values = pd.concat([lookup_target(tables, target.variable, k) for k in keys.values()], ignore_index=True)
    enc = encode_target(values, target)  # encoded over all splits at once: one set of class levels
    sets, skipped, start = {}, {}, 0
    for split, (feats, recs, subjects) in grouped.items():
        sl = slice(start, start + len(recs))
        start += len(recs)
        ns = NightSet(feats, recs, subjects, enc.y[sl], group_night_labels(ef.features[split]))
        keep = enc.keep[sl]
        skipped[split] = {"n_skipped": int((~keep).sum()), "recording_ids": [str(r) for r in recs[~keep][:20]]}
        if (~keep).any():
            log.warning("%s split: %d of %d night(s) have no %r and are skipped (e.g. %s)", split, int((~keep).sum()),
                        len(recs), target.variable, skipped[split]["recording_ids"][:3])
        sets[split] = ns.subset(keep)
    return sets, enc.class_names, skipped


def save_night_model(fit: NightFit, path: Path, target: NightTarget, class_names: tuple[str, ...] | None,
                     threshold: float | None, metadata: dict) -> Path:
    """A weights-only loadable dict: state, constructor config, target and class names, threshold."""
    from osf.utils.atomic import atomic_path

    payload = {"state_dict": fit.model.state_dict(), "config": fit.model.config,
               "target": {"variable": target.variable, "threshold": target.threshold},
               "class_names": list(class_names) if class_names else None, "threshold": threshold,
               "regression": fit.regression, "target_mean": fit.target_mean, "target_std": fit.target_std,
               "backbone_metadata": {k: v for k, v in metadata.items() if isinstance(v, (str, int, float, bool))}}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)
    return path


def load_night_model(path: str | Path) -> NightFit:
    """Read :func:`save_night_model` output (``weights_only=True``)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        model = NightModel(**payload["config"])
        model.load_state_dict(payload["state_dict"])
    except (OSError, EOFError, KeyError, RuntimeError, TypeError, ValueError, pickle.UnpicklingError) as err:
        raise ValueError(f"{path}: not a readable night model: {err}") from err
    return NightFit(model.eval(), 0, math.nan, "", payload["regression"], payload["target_mean"], payload["target_std"])


def _fit_and_evaluate(cfg: DownstreamConfig, kind: str, sets: dict[str, NightSet],
                      class_names: tuple[str, ...] | None) -> tuple[NightFit, dict, float | None]:
    fit = train_night_model(
        sets["train"], sets["val"], kind, None if class_names is None else len(class_names),
        max_steps=_setting_value(cfg, "max_steps", NIGHT_DEFAULTS), lr=_setting_value(cfg, "lr", NIGHT_DEFAULTS),
        weight_decay=_setting_value(cfg, "weight_decay", NIGHT_DEFAULTS),
        eval_every=_setting_value(cfg, "eval_every", NIGHT_DEFAULTS), batch_size=NIGHT_DEFAULTS["batch_size"],
        d_model=NIGHT_DEFAULTS["d_model"], seed=cfg.seed, device=cfg.device)
    preds = {s: predict_nights(fit, sets[s].features, device=cfg.device) for s in ("val", "test")}
    threshold = None
    if class_names is not None and len(class_names) == 2:
        threshold = choose_threshold(sets["val"].y, preds["val"])
    train_mean = float(np.mean(sets["train"].y)) if class_names is None else 0.0
    metrics = {s: evaluate_nights(sets[s].y, preds[s], sets[s].subject_ids, class_names, threshold, train_mean,
                                  cfg.n_boot, cfg.seed) for s in ("val", "test")}
    return fit, metrics, threshold


@dataclass
class NightData:
    """The nights of a run per split with their targets, and what was skipped or counted on the way."""

    target: NightTarget
    sets: dict[str, NightSet]
    class_names: tuple[str, ...] | None  # None: regression
    skipped: dict[str, Any]  # per split: nights without a target
    counts: dict[str, dict]  # per split: subjects per class (or subjects, regression)
    datasets: list[str]  # the cohorts whose subject tables were read


def _night_datasets(cfg: DownstreamConfig) -> list[str]:
    """The cohorts of the run: ``--downstream_dataset_name``, else every non-pretrain dataset of the store."""
    index_path = Path(cfg.data_dir) / "index.parquet"
    if not index_path.is_file():
        raise FileNotFoundError(f"{cfg.data_dir}: not an epoch store (no index.parquet)")
    index = pd.read_parquet(index_path, columns=["dataset", "cohort_group"])
    return cfg.datasets or sorted(index.loc[index["cohort_group"] != "pretrain", "dataset"].unique())


def _run_id(cfg: DownstreamConfig, ef: EpochFeatures, target: NightTarget, kind: str, timestamp: str) -> str:
    if cfg.run_name:
        return f"{cfg.run_name}_{kind}"
    task = re.sub(r"[^A-Za-z0-9_.=-]+", "", target.name.replace(">=", "_ge"))
    return f"{ef.inputs.model_name(cfg)}_{task}_night_{kind}_s{cfg.seed}_{timestamp}"


def _run_night_model(cfg: DownstreamConfig, ef: EpochFeatures, data: NightData, kind: str, t_start: float
                     ) -> dict[str, Any]:
    """Train and evaluate one night model; write ``night_<kind>.pt``, its run JSON and ``results.csv`` row."""
    fit, metrics, threshold = _fit_and_evaluate(cfg, kind, data.sets, data.class_names)
    timestamp, setting, target = utc_timestamp(), f"night_{kind}", data.target
    identity = run_identity(cfg, ef.inputs, run_id=_run_id(cfg, ef, target, kind, timestamp), timestamp=timestamp,
                            task=target.name, setting=setting, pretrain_samples=cfg.pretrain_samples,
                            dataset=cfg.downstream_dataset_name or "+".join(data.datasets), train_channels="full")
    output_dir = Path(cfg.output_dir)
    model_path = save_night_model(fit, output_dir / f"night_{kind}.pt", target, data.class_names, threshold,
                                  ef.inputs.metadata)
    json_path = output_dir / f"{identity.run_id}.json"
    record = {
        **record_header(cfg, ef.inputs, identity),
        "task": {"eval_level": "night", "target_variable": target.variable, "target_threshold": target.threshold,
                 "kind": "regression" if data.class_names is None else "classification", "name": target.name},
        "class_names": list(data.class_names) if data.class_names else None,
        "setting": {"name": setting, "night_model": kind, "pooling": cfg.pooling, "eval_channels": cfg.eval_channels},
        "selection": {"metric": fit.selection_metric, "best_step": fit.best_step, "best_val_score": fit.best_score,
                      "threshold": threshold, "history": fit.history},
        "timings": {**ef.inputs.timings, "train_s": fit.train_seconds, "total_s": time.perf_counter() - t_start},
        "metrics": metrics, "nights": {"subjects_per_class": data.counts, "skipped_missing_target": data.skipped},
        "artifacts": {"night_model": str(model_path), "results_csv": str(cfg.results_csv_path), "json": str(json_path)},
    }
    write_run_json(record, json_path)
    append_results_row(cfg.results_csv_path, results_row(
        identity, metrics, n_skipped_nights=sum(v["n_skipped"] for v in data.skipped.values()),
        train_s=fit.train_seconds, total_s=time.perf_counter() - t_start, json_path=str(json_path)))
    log.info("night-level %s: wrote %s and a row of %s", kind, json_path, cfg.results_csv_path)
    return record


def run_night_level(cfg: DownstreamConfig) -> dict[str, Any]:
    """Night-level run: one JSON, one ``results.csv`` row and one ``night_<model>.pt`` per night model.

    Returns ``{"runs": [record per model], "skipped": ..., "counts": ...}``.
    """
    t_start = time.perf_counter()
    target, models = check_night_config(cfg)
    present = _night_datasets(cfg)
    tables = {d: load_subject_tables(d, cfg.subject_tables) for d in present}
    _check_variable(target.variable, tables)  # before the backbone runs
    ef = load_epoch_features(cfg)
    sets, class_names, skipped = night_sets(ef, tables, target)
    data = NightData(target, sets, class_names, skipped, check_night_counts(sets, class_names), present)
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    runs = [_run_night_model(cfg, ef, data, kind, t_start) for kind in models]
    return {"runs": runs, "skipped": skipped, "counts": data.counts, "run_id": runs[0]["run_id"],
            "metrics": runs[0]["metrics"]}

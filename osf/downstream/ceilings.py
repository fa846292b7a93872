"""Supervised and handcrafted ceilings per channel preset: what the store's labels allow without pre-training.

Two reference models sit beside the pre-trained backbones in the SleepBench-mini table:

- ``handcrafted``: log band powers and signal statistics per channel, a heart-rate / RR-variability
  estimate on the ECG and a breathing rate / breath-to-breath variability estimate on the belts and
  the flow, read by a standardised logistic regression (its penalty chosen on validation);
- ``power48``: the power summary a learned representation has to beat: per channel the epoch's
  log-variance and the std / min / max of its six 5 s windows' log-variances (48 numbers), read by
  the same logistic regression;
- ``supervised``: a small 1D CNN (four conv blocks, global average + max pooling) trained from
  scratch on the store's training split, the step kept by validation.

Both see only the preset's channels (the others are zeroed, as ``SleepDataModule`` does with
``mask_train_channels=True``) and are scored on the store's subject-level test split with
``osf.downstream.metrics.evaluate_predictions``, so their predictions files compare with the linear
probes' through ``paired_difference``. The handcrafted features are per channel: they are computed once
per store on the full montage (cached in ``feature_cache_dir``) and a preset keeps its channels' columns.
"""

from __future__ import annotations

import json
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import signal as sps
from scipy import stats
from torch import nn

from osf import config, tasks
from osf.datasets.channelset import ChannelSet
from osf.datasets.datamodule import EpochDataset, SleepDataModule
from osf.datasets.store import EpochStore
from osf.downstream.features import cache_key
from osf.downstream.metrics import (
    binary_auroc,
    choose_threshold,
    confusion_matrix,
    evaluate_predictions,
    kappa_from_confusion,
    save_predictions,
)
from osf.downstream.selection import train_with_validation
from osf.utils.atomic import atomic_path, atomic_write_text
from osf.utils.config_fields import option

KINDS: tuple[str, ...] = ("handcrafted", "power48", "supervised")
POWER48_WINDOWS = 6  # 5 s windows per 30 s epoch
TASKS: tuple[str, ...] = tasks.studied_tasks()  # the task registry's evaluated tasks
PREDICTIONS_FILE = "ceiling_test_predictions.npz"
RESULT_FILE = "ceiling_result.json"

FS = float(config.SAMPLE_RATE)
# Log band powers (Hz): breathing / slow drift, delta, upper delta, theta, alpha, sigma, beta, gamma-ish.
BANDS: tuple[tuple[float, float], ...] = (
    (0.1, 0.5), (0.5, 2.0), (2.0, 4.0), (4.0, 8.0), (8.0, 12.0), (12.0, 16.0), (16.0, 25.0), (25.0, 32.0),
)
GENERIC_FEATURES: tuple[str, ...] = (*(f"logpow_{lo:g}_{hi:g}" for lo, hi in BANDS), "log_std", "mobility",
                                     "complexity", "kurtosis")
ECG_FEATURES: tuple[str, ...] = ("heart_rate", "log_sdnn", "log_rmssd", "n_beats")
BREATH_FEATURES: tuple[str, ...] = ("breath_rate", "interval_cv", "amplitude_cv", "log_amplitude")
BREATH_CHANNELS: tuple[str, ...] = ("ABD", "THX", "NP")
LOGREG_C: tuple[float, ...] = (0.01, 0.1, 1.0)
# Part of the feature cache key: bump it when a feature's computation changes, so old cache files are not read.
FEATURES_VERSION = 1
_READ_CHUNK = 512


# --- inputs ---------------------------------------------------------------------------------------
@dataclass
class SplitArrays:
    """One split in memory: signals with the preset's other channels zeroed, and the ids metrics need."""

    signal: np.ndarray  # float32 [n, 12, 1920]
    channel_mask: np.ndarray  # bool [n, 12], False outside the preset
    labels: np.ndarray  # int64 [n]
    subject_ids: np.ndarray
    recording_ids: np.ndarray
    epoch_index: np.ndarray
    rows: np.ndarray  # int64 [n], the epochs' rows in the store index


def check_ceiling_args(kind: str, preset: str, task: str) -> ChannelSet:
    """The preset's ChannelSet; a one-line ValueError for an unknown kind, preset or task."""
    if kind not in KINDS:
        raise ValueError(f"unknown ceiling kind {kind!r}; choose one of {list(KINDS)}")
    if task not in tasks.studied_tasks():  # read when called: a task registered later is a ceiling task too
        raise ValueError(f"unknown ceiling task {task!r}; choose one of {list(tasks.studied_tasks())}")
    try:
        return ChannelSet.from_spec(preset)
    except ValueError:
        raise ValueError(
            f"unknown channel preset {preset!r}; choose one of {sorted(config.CHANNEL_PRESETS)} "
            "or a comma-separated channel list"
        ) from None


def read_split(dataset: EpochDataset) -> SplitArrays:
    """Every epoch of a data-module split (its channel masking applied) as arrays."""
    n = len(dataset)
    signal = np.empty((n, config.NUM_CHANNELS, config.EPOCH_SAMPLES), dtype=np.float32)
    mask = np.empty((n, config.NUM_CHANNELS), dtype=bool)
    subjects, recordings, epochs = [], [], []
    for start in range(0, n, _READ_CHUNK):
        batch = dataset.__getitems__(list(range(start, min(start + _READ_CHUNK, n))))
        stop = start + len(batch["subject_id"])
        signal[start:stop] = batch["signal"].numpy()
        mask[start:stop] = batch["channel_mask"].numpy()
        subjects += batch["subject_id"]
        recordings += batch["recording_id"]
        epochs.append(batch["epoch_index"].numpy())
    return SplitArrays(
        signal, mask, np.asarray(dataset.labels, dtype=np.int64), np.asarray(subjects, dtype=str),
        np.asarray(recordings, dtype=str), np.concatenate(epochs) if epochs else np.zeros(0, np.int64),
        np.asarray(dataset.rows, dtype=np.int64),
    )


def load_task_splits(store_dir: str | Path, preset: str, task: str) -> tuple[dict[str, SplitArrays], tuple[str, ...]]:
    """Train / val / test arrays of ``task`` on the store's subject splits, channels outside ``preset`` zeroed."""
    dm = SleepDataModule(store_dir, task="downstream", eval_label=task, channel_preset=preset,
                         mask_train_channels=True, stage_classes=4)
    dm.setup()
    return {split: read_split(dm.datasets[split]) for split in ("train", "val", "test")}, dm.label_names


# --- handcrafted features -------------------------------------------------------------------------
def feature_names() -> list[str]:
    """Names of the :func:`handcrafted_features` columns, ``<channel>:<feature>``."""
    names = [f"{ch}:{f}" for ch in config.CHANNELS for f in GENERIC_FEATURES]
    names += [f"ECG:{f}" for f in ECG_FEATURES]
    names += [f"{ch}:{f}" for ch in BREATH_CHANNELS for f in BREATH_FEATURES]
    return names


def feature_channels() -> np.ndarray:
    """Channel index (into ``config.CHANNELS``) that each feature column is computed from."""
    return np.asarray([config.CHANNEL_INDEX[name.split(":")[0]] for name in feature_names()], dtype=np.int64)


def spectral_features(x: np.ndarray) -> np.ndarray:
    """Log band powers (Welch: 4 s Hann windows, half overlap) of ``x [B, C, T]`` -> ``[B, C, len(BANDS)]``."""
    nper = 256
    starts = np.arange(0, x.shape[-1] - nper + 1, nper // 2)
    window = np.hanning(nper).astype(np.float32)
    segs = np.stack([x[..., a : a + nper] for a in starts], axis=-2)  # [B, C, S, nper]
    segs = (segs - segs.mean(-1, keepdims=True)) * window
    psd = (np.abs(np.fft.rfft(segs, axis=-1)) ** 2).mean(-2) / (FS * float((window**2).sum()))
    freqs = np.fft.rfftfreq(nper, 1.0 / FS)
    bands = [psd[..., (freqs >= lo) & (freqs < hi)].sum(-1) * (freqs[1] - freqs[0]) for lo, hi in BANDS]
    return np.log(2.0 * np.stack(bands, axis=-1) + 1e-6)


def signal_stats(x: np.ndarray) -> np.ndarray:
    """Log std, Hjorth mobility and complexity, and excess kurtosis of ``x [B, C, T]`` -> ``[B, C, 4]``."""
    d1, d2 = np.diff(x, axis=-1), np.diff(x, n=2, axis=-1)
    v0, v1, v2 = x.var(-1) + 1e-8, d1.var(-1) + 1e-8, d2.var(-1) + 1e-8
    mobility = np.sqrt(v1 / v0)
    complexity = np.sqrt(v2 / v1) / mobility
    kurt = ((x - x.mean(-1, keepdims=True)) ** 4).mean(-1) / v0**2 - 3.0
    return np.stack([0.5 * np.log(v0), mobility, complexity, np.clip(kurt, -10, 50)], axis=-1)


def heart_features(ecg: np.ndarray) -> np.ndarray:
    """Heart rate (bpm), log SDNN and log RMSSD (s) of the RR intervals and the beat count of one ECG epoch."""
    s = ecg * (1.0 if stats.skew(ecg) >= 0 else -1.0)  # R peaks point up
    span = float(np.percentile(s, 99.5) - np.median(s))
    if span <= 1e-6:
        return np.zeros(len(ECG_FEATURES))
    peaks, _ = sps.find_peaks(s, distance=int(0.33 * FS), prominence=0.4 * span)
    rr = np.diff(peaks) / FS
    rr = rr[(rr > 0.3) & (rr < 2.0)]
    if rr.size < 3:
        return np.array([0.0, 0.0, 0.0, float(peaks.size)])
    return np.array([60.0 / rr.mean(), np.log(rr.std() + 1e-3), np.log(np.sqrt(np.mean(np.diff(rr) ** 2)) + 1e-3),
                     float(peaks.size)])


_BREATH_SOS = sps.butter(2, 1.0, fs=FS, output="sos")


def breath_features(x: np.ndarray, smoothed: bool = False) -> np.ndarray:
    """Breaths/min, breath-interval CV, breath-amplitude CV and log mean amplitude of one belt / flow epoch."""
    s = x if smoothed else sps.sosfiltfilt(_BREATH_SOS, x)
    sd = float(s.std())
    if sd <= 1e-6:
        return np.zeros(len(BREATH_FEATURES))
    peaks, props = sps.find_peaks(s, distance=int(1.5 * FS), prominence=0.5 * sd)
    if peaks.size < 3:
        return np.array([0.0, 0.0, 0.0, np.log(sd)])
    intervals = np.diff(peaks) / FS
    amps = props["prominences"]
    return np.array([60.0 / intervals.mean(), intervals.std() / intervals.mean(), amps.std() / amps.mean(),
                     np.log(amps.mean() + 1e-6)])


def handcrafted_features(x: np.ndarray, channel_mask: np.ndarray) -> np.ndarray:
    """Feature matrix ``[B, len(feature_names())]`` of epochs ``x [B, 12, 1920]``; absent channels' features are 0."""
    x = np.asarray(x, dtype=np.float32)
    mask = np.asarray(channel_mask, dtype=bool)
    if x.ndim != 3 or x.shape[1:] != (config.NUM_CHANNELS, config.EPOCH_SAMPLES) or mask.shape != x.shape[:2]:
        raise ValueError(f"expected x [B, {config.NUM_CHANNELS}, {config.EPOCH_SAMPLES}] and mask [B, "
                         f"{config.NUM_CHANNELS}], got {x.shape} and {mask.shape}")
    x = np.where(mask[:, :, None], x, 0.0)
    present = mask.any(0)  # channels absent from every epoch (outside the preset) are not computed
    per_channel = np.zeros((x.shape[0], config.NUM_CHANNELS, len(GENERIC_FEATURES)), dtype=np.float32)
    if present.any():
        sub = x[:, present]
        per_channel[:, present] = np.concatenate([spectral_features(sub), signal_stats(sub)], axis=-1)
    generic = per_channel.reshape(x.shape[0], -1)
    heart = np.zeros((x.shape[0], len(ECG_FEATURES)))
    if present[config.CHANNEL_INDEX["ECG"]]:
        heart[:] = [heart_features(e) for e in x[:, config.CHANNEL_INDEX["ECG"]]]
    breath = [np.zeros((x.shape[0], len(BREATH_FEATURES))) for _ in BREATH_CHANNELS]
    for out, ch in zip(breath, BREATH_CHANNELS):
        i = config.CHANNEL_INDEX[ch]
        if present[i]:
            out[:] = [breath_features(e, smoothed=True) for e in sps.sosfiltfilt(_BREATH_SOS, x[:, i], axis=-1)]
    feats = np.concatenate([generic, heart, *breath], axis=1)
    feats = np.where(mask[:, feature_channels()], feats, 0.0)
    return np.nan_to_num(feats, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def feature_cache_path(cache_dir: str | Path, store: EpochStore) -> Path:
    """The store's handcrafted-feature file in ``cache_dir``, keyed by the store manifest and the feature set."""
    key = cache_key({"store": store.manifest, "features": feature_names(), "version": FEATURES_VERSION})
    return Path(cache_dir) / f"handcrafted_{key}.npz"


def compute_store_features(store: EpochStore, rows: np.ndarray) -> np.ndarray:
    """Full-montage :func:`handcrafted_features` of the store's ``rows``, read and computed a chunk at a time."""
    out = np.empty((rows.size, len(feature_names())), dtype=np.float32)
    for start in range(0, rows.size, _READ_CHUNK):
        chunk = rows[start : start + _READ_CHUNK]
        out[start : start + chunk.size] = handcrafted_features(store.read(chunk), store.channel_masks(chunk))
    return out


def _read_feature_cache(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Sorted store rows and their features from ``path``; empty when there is no cache file."""
    if not path.is_file():
        return np.zeros(0, dtype=np.int64), np.zeros((0, len(feature_names())), dtype=np.float32)
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["rows"], z["features"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"handcrafted feature cache {path} is unreadable: {err}; delete it to recompute") from err


def store_features(store: EpochStore, rows: np.ndarray, cache_dir: str | Path) -> np.ndarray:
    """Full-montage features of the store's ``rows``: cached ones read, the others computed and added to the cache.

    The cache holds any rows computed so far (every split, every task's labelled epochs), so the presets and
    tasks of one store compute each epoch's features once.
    """
    rows = np.asarray(rows, dtype=np.int64)
    path = feature_cache_path(cache_dir, store)
    known, feats = _read_feature_cache(path)
    missing = np.setdiff1d(rows, known)
    if missing.size:
        known = np.concatenate([known, missing])
        feats = np.concatenate([feats, compute_store_features(store, missing)])
        order = np.argsort(known, kind="stable")
        known, feats = known[order], feats[order]
        with atomic_path(path, suffix=".npz") as tmp:  # a killed run leaves the previous file whole
            np.savez(tmp, rows=known, features=feats)
    return feats[np.searchsorted(known, rows)]


def preset_features(store: EpochStore, splits: dict[str, SplitArrays], keep: np.ndarray,
                    cache_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """Each split's features of the ``keep`` channels (the preset's): the columns of those channels.

    With ``cache_dir``, the columns of the store's cached full-montage features: equal to those computed
    from the preset-zeroed split, as every column comes from one channel's signal and presence bit, which
    zeroing the other channels leaves unchanged. Without, computed from the split (only its channels).
    """
    columns = np.isin(feature_channels(), np.flatnonzero(keep))
    if cache_dir is None:  # nothing to share with other presets: the preset's channels alone are cheaper
        return {split: handcrafted_features(a.signal, a.channel_mask)[:, columns] for split, a in splits.items()}
    full = store_features(store, np.concatenate([a.rows for a in splits.values()]), cache_dir)
    bounds = np.cumsum([len(a.rows) for a in splits.values()])[:-1]
    return {split: part[:, columns] for split, part in zip(splits, np.split(full, bounds))}


def power48_features(x: np.ndarray, channel_mask: np.ndarray) -> np.ndarray:
    """``[B, 48]``: per channel log-variance of the epoch, then std / min / max of its 5 s windows' log-variances."""
    x = np.asarray(x, dtype=np.float64)
    mask = np.asarray(channel_mask, dtype=bool)
    whole = np.log(x.var(-1) + 1e-6)
    windows = np.log(x.reshape(*x.shape[:2], POWER48_WINDOWS, -1).var(-1) + 1e-6)
    feats = np.stack([whole, windows.std(-1), windows.min(-1), windows.max(-1)], axis=-1)
    return np.where(mask[:, :, None], feats, 0.0).reshape(x.shape[0], -1).astype(np.float32)


# --- the models -------------------------------------------------------------------------------
def validation_score(y: np.ndarray, proba: np.ndarray) -> float:
    """Cohen's kappa (multi-class) or AUROC (binary) of validation predictions."""
    keep = y >= 0
    y, proba = y[keep], proba[keep]
    if proba.shape[1] == 2:
        return binary_auroc(y == 1, proba[:, 1])
    return kappa_from_confusion(confusion_matrix(y, proba.argmax(1), proba.shape[1]))


def fit_handcrafted(feats: dict[str, np.ndarray], labels: dict[str, np.ndarray], seed: int = 0
                    ) -> tuple[Any, dict[str, Any]]:
    """Standardised logistic regression on the features, its penalty C chosen on validation."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    best, best_score, history = None, -np.inf, []
    for c in LOGREG_C:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))
        model.fit(feats["train"], labels["train"])
        score = validation_score(labels["val"], model.predict_proba(feats["val"]))
        history.append({"C": c, "val_score": score})
        if score > best_score or best is None:
            best, best_score = model, score
    return best, {"param": "C", "best": best[-1].C, "best_val_score": best_score, "history": history}


class EpochCNN(nn.Module):
    """A small 1D CNN over one 30 s epoch; channels outside ``keep`` (and absent per epoch) are zeroed."""

    def __init__(self, num_classes: int, keep: np.ndarray, width: int = 32, dropout: float = 0.2):
        super().__init__()
        self.register_buffer("keep", torch.as_tensor(np.asarray(keep, dtype=bool)))
        # (in, out, kernel, stride, pool): 1920 -> 480 -> 240 -> 60 -> 30 time steps; the last block's receptive
        # field (~20 s) spans several breaths and heart beats, so rates and their variability are learnable.
        spec = ((config.NUM_CHANNELS, width, 9, 4, 2), (width, 2 * width, 7, 1, 4),
                (2 * width, 2 * width, 7, 1, 2), (2 * width, 4 * width, 5, 1, 1))
        layers: list[nn.Module] = []
        for c_in, c_out, k, stride, pool in spec:
            layers += [nn.Conv1d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False),
                       nn.BatchNorm1d(c_out), nn.ReLU(inplace=True)]
            if pool > 1:
                layers.append(nn.MaxPool1d(pool))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(8 * width, num_classes))

    def forward(self, x: torch.Tensor, channel_mask: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` of ``x [B, 12, 1920]``."""
        x = x * (channel_mask & self.keep).unsqueeze(-1).to(x.dtype)
        h = self.features(x)
        return self.head(torch.cat([h.mean(-1), h.amax(-1)], dim=1))


@torch.no_grad()
def cnn_proba(model: EpochCNN, data: SplitArrays, batch_size: int = 256) -> np.ndarray:
    """Class probabilities ``[n, C]`` of every epoch of ``data`` (eval mode)."""
    model.eval()
    out = []
    for start in range(0, len(data.labels), batch_size):
        x = torch.from_numpy(data.signal[start : start + batch_size])
        m = torch.from_numpy(data.channel_mask[start : start + batch_size])
        out.append(torch.softmax(model(x, m), dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, model.head[-1].out_features))


def fit_cnn(splits: dict[str, SplitArrays], num_classes: int, keep: np.ndarray, *, seed: int = 0,
            max_steps: int = 300, batch_size: int = 64, lr: float = 2e-3, eval_every: int = 100
            ) -> tuple[EpochCNN, dict[str, Any]]:
    """Train :class:`EpochCNN` for ``max_steps`` batches of the train split; keep the best validated step."""
    torch.manual_seed(seed)
    model = EpochCNN(num_classes, keep)
    train, val = splits["train"], splits["val"]
    rng = np.random.default_rng(seed)
    loss_fn = nn.CrossEntropyLoss()

    def batch_loss() -> torch.Tensor:
        idx = np.sort(rng.integers(0, len(train.labels), batch_size))
        x, m = torch.from_numpy(train.signal[idx]), torch.from_numpy(train.channel_mask[idx])
        return loss_fn(model(x, m), torch.from_numpy(train.labels[idx]))

    selection = train_with_validation(
        model, batch_loss, lambda: validation_score(val.labels, cnn_proba(model, val)),
        # the supervised ceiling keeps the step with the best validation score of the metric it reports
        tasks.reporting_metric("epoch", tasks.target_kind(num_classes)), max_steps=max_steps, eval_every=min(eval_every, max_steps),
        lr=lr, weight_decay=1e-2)
    model.eval()
    return model, {"param": "step", "best": selection.best_step, "best_val_score": selection.best_score,
                   "history": selection.history}


# --- entry point ----------------------------------------------------------------------------------
@dataclass
class CeilingResult:
    """One ceiling run: test metrics as ``evaluate_predictions`` returns them, and where its predictions are."""

    kind: str
    preset: str
    task: str
    metrics: dict[str, Any]
    selection: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    train_seconds: float = 0.0
    predictions_path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record."""
        d = asdict(self)
        d["predictions_path"] = None if self.predictions_path is None else str(self.predictions_path)
        return d


def _predict(kind: str, store_dir: str | Path, splits: dict[str, SplitArrays], num_classes: int, keep: np.ndarray,
             seed: int, max_steps: int, feature_cache_dir: str | Path | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Fit the ``kind`` model on train (selected on val); its val and test probabilities and selection record."""
    if kind == "power48":
        feats = {s: power48_features(a.signal, a.channel_mask & keep) for s, a in splits.items()}
        model, selection = fit_handcrafted(feats, {s: a.labels for s, a in splits.items()}, seed)
        return {s: model.predict_proba(feats[s]) for s in ("val", "test")}, selection
    if kind == "handcrafted":
        feats = preset_features(EpochStore(store_dir), splits, keep, feature_cache_dir)
        model, selection = fit_handcrafted(feats, {s: a.labels for s, a in splits.items()}, seed)
        return {s: model.predict_proba(feats[s]) for s in ("val", "test")}, selection
    model, selection = fit_cnn(splits, num_classes, keep, seed=seed, max_steps=max_steps)
    return {s: cnn_proba(model, splits[s]) for s in ("val", "test")}, selection


@dataclass
class CeilingConfig:
    """One ceiling run (the flags of ``main_pipelines/main_ceiling.py``)."""

    kind: str | None = option(None, required=True, choices=KINDS, help="handcrafted features + logistic regression, "
                              "power48 (the 48-number power summary + logistic regression), or a supervised CNN")
    data_dir: str | None = option(None, required=True, help="epoch store")
    eval_channels: str = option("full", help="channel preset")
    eval_label: str = option("Stage", help=f"the task: {', '.join(TASKS)}")
    seed: int = option(0, help="seed")
    n_boot: int = option(200, help="subject-bootstrap resamples of the CIs")
    max_steps: int = option(400, help="training steps of the supervised CNN")
    output_dir: str | None = option(None, help="where the result and predictions go")
    feature_cache_dir: str | None = option(None, help="handcrafted: cache of the store's full-montage features, shared "
                                           "by every preset and task (default: none, computed for this run)")


_DEFAULTS = CeilingConfig()


def run_ceiling(kind: str, store_dir: str | Path, preset: str, task: str, *, seed: int = _DEFAULTS.seed,
                n_boot: int = _DEFAULTS.n_boot, max_steps: int = _DEFAULTS.max_steps,
                output_dir: str | Path | None = None, feature_cache_dir: str | Path | None = None) -> CeilingResult:
    """Train the ``kind`` ceiling ("handcrafted" | "supervised") on ``preset``'s channels and score it on test.

    Defaults are :class:`CeilingConfig`'s. ``feature_cache_dir``: where the handcrafted kind caches the store's
    full-montage features (shared by every preset and task); None computes them for this run only.
    """
    channels = check_ceiling_args(kind, preset, task)
    splits, class_names = load_task_splits(store_dir, preset, task)
    t0 = time.perf_counter()
    proba, selection = _predict(kind, store_dir, splits, len(class_names), channels.mask, seed, max_steps,
                                feature_cache_dir)
    seconds = time.perf_counter() - t0
    val, test = splits["val"], splits["test"]
    threshold = choose_threshold(val.labels, proba["val"]) if len(class_names) == 2 else None
    metrics = evaluate_predictions(test.labels, proba["test"], test.subject_ids, test.recording_ids, class_names,
                                   threshold=threshold, n_boot=n_boot, seed=seed)
    result = CeilingResult(kind, preset, task, metrics, selection, seed, seconds)
    if output_dir is not None:
        out = Path(output_dir)
        pred = {"labels": test.labels, "proba": proba["test"].astype(np.float32), "subject_ids": test.subject_ids,
                "recording_ids": test.recording_ids, "epoch_index": test.epoch_index}
        result.predictions_path = save_predictions(pred, out / PREDICTIONS_FILE, threshold)
        atomic_write_text(out / RESULT_FILE, json.dumps(result.to_dict(), indent=1, default=float) + "\n")
    return result

"""Frozen-backbone feature extraction with an on-disk cache keyed by backbone and data-split hashes.

A linear probe needs the backbone once per epoch of data, not once per optimisation step: features
are extracted once (CLS token or mean of patch tokens), stored as ``.npz`` under a key that hashes
the backbone weights, the exact epochs of the split (recording, epoch index, label), the pooling and
the channels shown to the backbone, and reused by every probe / k-shot seed / learning rate after.

A cache entry is a folder of ``.npy`` files: the features are written batch by batch into a
pre-allocated file (the process never holds them all) and opened memory-mapped, so a probe reads
only the rows it uses (16 M epochs x 768 float32 is 49 GB).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange
from torch import nn

from osf.datasets.channelset import ChannelSet
from osf.utils.atomic import atomic_write_text

# cls: the CLS token; mean: mean of all patch tokens; groups: mean of the patch tokens of each channel
# group (lead_wise=1: ECG+EMG, respiration, EEG+EOG), concatenated. The final LayerNorm leaves each token
# only its direction, so pooling over groups keeps apart what the CLS and a global mean blend: a chin-EMG
# burst changes the cardio-EMG group's tokens without being averaged with the 60 others (benchmarks/README).
# cls_groups: the CLS token and the group means side by side; after the small recipe's masked-patch
# (iBOT) training the CLS carries staging and breathing, while a random backbone's cues sit in the groups.
# groups_std: each group's mean and standard deviation over its time tokens. A mean over the epoch blurs
# what changes within it (a 10-40 s fall of flow in a hypopnea, an arousal's few seconds of EMG); the
# spread keeps it (hypopnea AUROC ~0.78 -> ~0.88 for both backbones, benchmarks/README.md).
POOLINGS: tuple[str, ...] = ("cls", "mean", "groups", "cls_groups", "groups_std")


def check_pooling(pooling: str) -> str:
    """``pooling`` if it is one of :data:`POOLINGS`, else a ValueError naming the choices."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {list(POOLINGS)}")
    return pooling


def pooled_width(backbone: nn.Module, pooling: str) -> int:
    """Width of :func:`encode`'s output: ``width``, ``width x channel groups`` for ``groups``, one more
    ``width`` for ``cls_groups``, twice ``groups`` for ``groups_std``."""
    if check_pooling(pooling) in ("cls", "mean"):
        return int(backbone.width)
    groups = int(getattr(backbone, "num_groups", 1))
    return int(backbone.width) * {"groups": groups, "cls_groups": groups + 1, "groups_std": 2 * groups}[pooling]


def pool_tokens(cls: torch.Tensor, patches: torch.Tensor, pooling: str, num_groups: int = 1) -> torch.Tensor:
    """Pool ``cls [B, D]`` and group-major ``patches [B, N, D]`` into ``[B, D]``, ``[B, G*D]`` (groups),
    ``[B, (1+G)*D]`` (cls_groups) or ``[B, 2*G*D]`` (groups_std: the G means, then the G stds)."""
    if check_pooling(pooling) == "cls":
        return cls
    if pooling == "mean":
        return patches.mean(1)
    per_group = rearrange(patches, "b (g t) d -> b g t d", g=num_groups)
    groups = per_group.mean(2).flatten(1)
    if pooling == "groups_std":
        return torch.cat([groups, per_group.std(2, correction=0).flatten(1)], dim=1)
    return torch.cat([cls, groups], dim=1) if pooling == "cls_groups" else groups


def encode(backbone: nn.Module, signal: torch.Tensor, channel_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Backbone embedding: CLS token, mean of the patch tokens, or per-channel-group means (see POOLINGS)."""
    return encode_poolings(backbone, signal, channel_mask, (pooling,))[0]


def encode_poolings(backbone: nn.Module, signal: torch.Tensor, channel_mask: torch.Tensor,
                    poolings: Sequence[str]) -> list[torch.Tensor]:
    """One backbone pass pooled several ways (see :func:`encode`), in the order of ``poolings``."""
    for pooling in poolings:
        check_pooling(pooling)
    cls, patches = backbone.forward_encoding(signal, return_sequence=False, channel_mask=channel_mask)
    groups = int(getattr(backbone, "num_groups", 1))
    return [pool_tokens(cls, patches, p, groups) for p in poolings]


@dataclass
class FeatureSet:
    """Features of one split and the epoch identity of every row."""

    features: np.ndarray  # float32 [N, D]
    labels: np.ndarray  # int64 [N], -1 unknown
    subject_ids: np.ndarray  # str [N]
    recording_ids: np.ndarray  # str [N]
    epoch_index: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def subset(self, idx: np.ndarray) -> FeatureSet:
        """Rows ``idx`` (e.g. a k-shot draw)."""
        return FeatureSet(
            self.features[idx], self.labels[idx], self.subject_ids[idx], self.recording_ids[idx], self.epoch_index[idx]
        )

    @classmethod
    def concat(cls, parts: list[FeatureSet]) -> FeatureSet:
        """The rows of ``parts`` one after another (e.g. the same epochs through several channel presets)."""
        if len(parts) == 1:  # the probe without presets: keep the memory-mapped arrays, no copy
            return parts[0]
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in FEATURE_FILES))

    def save(self, path: str | Path) -> Path:
        """Write as a folder of ``.npy`` files (``FEATURE_FILES``) built under a temp name, then renamed
        (a killed run leaves no partial cache). Features already in a file of the folder's temp twin
        (``run_over_loader``'s pre-allocated array) are moved, not copied."""
        return _save_folder(Path(path), self)

    @classmethod
    def load(cls, path: str | Path) -> FeatureSet:
        """Open a cached feature folder, every array memory-mapped read-only (read lazily); ``.npz`` too."""
        path = Path(path)
        try:
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as z:
                    return cls(*(z[k] for k in FEATURE_FILES))
            return cls(*(np.load(path / f"{k}.npy", mmap_mode="r", allow_pickle=False) for k in FEATURE_FILES))
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:  # a truncated .npz is a BadZipFile
            raise ValueError(f"feature cache {path} is unreadable or incomplete: {err}") from err


# The arrays of a FeatureSet, in field order: one .npy file each in a cache folder.
FEATURE_FILES: tuple[str, ...] = ("features", "labels", "subject_ids", "recording_ids", "epoch_index")


def _save_folder(path: Path, fs: FeatureSet, staged: Path | None = None) -> Path:
    """``fs`` into folder ``path`` atomically; ``staged``: a temp folder already holding ``features.npy``."""
    tmp = staged or Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        for name in FEATURE_FILES:
            if name == "features" and (tmp / "features.npy").is_file():  # written there batch by batch
                continue
            value = getattr(fs, name)
            value = value.astype(str) if name in ("subject_ids", "recording_ids") else value
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(value), allow_pickle=False)
        if path.is_dir():  # another run wrote the same features meanwhile: theirs stay
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


class RowSink:
    """Float32 rows ``[n, d]`` written batch by batch into one pre-allocated array: a ``.npy`` file
    (written with ``pwrite``, never mapped, so the process holds no copy) or memory."""

    def __init__(self, n: int, width: int, path: Path | None = None):
        """``n`` rows of ``width``; ``path``: the ``.npy`` file to pre-allocate (None: in memory)."""
        self.n, self.width, self.path = int(n), int(width), path
        if path is None:
            self.array: np.ndarray | None = np.empty((self.n, self.width), dtype=np.float32)
            return
        self.array = None
        with open(path, "wb") as fh:
            np.lib.format.write_array_header_1_0(
                fh, {"descr": "<f4", "fortran_order": False, "shape": (self.n, self.width)})
            self.offset = fh.tell()
            fh.truncate(self.offset + self.n * self.width * 4)
        self.fd = os.open(path, os.O_WRONLY)

    def write(self, start: int, rows: np.ndarray) -> None:
        """Rows ``start .. start + len(rows)``."""
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if start + rows.shape[0] > self.n:
            raise ValueError(f"the loader gave more than the {self.n} rows its sampler announced")
        if self.array is not None:
            self.array[start : start + rows.shape[0]] = rows
            return
        data = memoryview(rows).cast("B")
        pos = self.offset + start * self.width * 4
        while data:
            done = os.pwrite(self.fd, data, pos)
            data, pos = data[done:], pos + done

    def close(self) -> np.ndarray:
        """The rows: the in-memory array, or the file memory-mapped read-only."""
        if self.array is not None:
            return self.array
        os.fsync(self.fd)
        os.close(self.fd)
        return np.load(self.path, mmap_mode="r")


def backbone_hash(model: nn.Module) -> str:
    """SHA-256 (16 hex) of the parameter names, shapes, dtypes and values."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def split_hash(recording_ids: Iterable, epoch_index: Iterable, labels: Iterable) -> str:
    """SHA-256 (16 hex) of the ordered (recording, epoch, label) triples of a split."""
    h = hashlib.sha256()
    h.update("\x1f".join(map(str, recording_ids)).encode())
    h.update(np.ascontiguousarray(np.asarray(list(epoch_index), dtype=np.int64)).tobytes())
    h.update(np.ascontiguousarray(np.asarray(list(labels), dtype=np.int64)).tobytes())
    return h.hexdigest()[:16]


def cache_key(parts: Mapping[str, object]) -> str:
    """Stable short hash of the things that determine a feature file."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def planned_rows(loader: Iterable[Mapping]) -> int | None:
    """Rows a DataLoader will yield (its sampler's length, nothing dropped), None when it cannot say."""
    sampler = getattr(loader, "sampler", None)
    if sampler is None or getattr(loader, "drop_last", False) or getattr(loader, "batch_size", None) is None:
        return None
    try:
        return len(sampler)
    except TypeError:
        return None


@torch.no_grad()
def run_over_loader(
    loader: Iterable[Mapping],
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    channels: ChannelSet | Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    widths: Sequence[int] | None = None,
    files: Sequence[Path | None] | None = None,
) -> dict[str, Any]:
    """``forward(signal, channel_mask)`` over every batch of ``loader``, with each row's epoch identity.

    ``channels``: if given, channels outside it are zeroed and masked first. Returns ``outputs``
    (float32 ``[N, ...]``), ``labels``, ``subject_ids``, ``recording_ids`` and ``epoch_index``.
    Outputs go straight into arrays pre-allocated for the loader's rows (no list of batches to
    concatenate); ``widths`` splits the output's columns into ``parts`` (one array each), written to
    ``files`` (pre-allocated ``.npy``, returned memory-mapped) where one is given.
    """
    keep = None if channels is None else ChannelSet.coerce(channels)
    n = planned_rows(loader)
    sinks: list[RowSink] | None = None
    chunks: list[torch.Tensor] = []
    # Per-row identity in Python lists / one array each: per-batch numpy arrays kept between the large
    # per-batch outputs fragment the heap, which then grows by about one output per batch.
    labels: list[int] = []
    epochs: list[int] = []
    subjects: list[str] = []
    recordings: list[str] = []
    pos = 0
    for batch in loader:
        signal, mask = batch["signal"], batch["channel_mask"].bool()
        if keep is not None:
            signal, mask = keep.apply(signal, mask)
        out = forward(signal.to(device, non_blocking=True), mask.to(device, non_blocking=True)).float().cpu()
        if n is None or out.dim() != 2:
            chunks.append(out)
        else:
            if sinks is None:
                parts = list(widths or [out.shape[1]])
                sinks = [RowSink(n, w, None if files is None else files[i]) for i, w in enumerate(parts)]
            bounds = np.cumsum([0, *(s.width for s in sinks)])
            for sink, lo, hi in zip(sinks, bounds[:-1], bounds[1:]):
                sink.write(pos, out[:, lo:hi].numpy())
        pos += out.shape[0]
        del out
        labels.extend(torch.as_tensor(batch["label"]).long().tolist())
        epochs.extend(torch.as_tensor(batch["epoch_index"]).long().tolist())
        subjects.extend(map(str, batch["subject_id"]))
        recordings.extend(map(str, batch["recording_id"]))
    if not pos:
        raise ValueError("the data loader produced no batches: the split is empty")
    if sinks is not None and pos != n:
        raise ValueError(f"the loader gave {pos} rows, its sampler announced {n}")
    if sinks is None:
        outputs = torch.cat(chunks).numpy()
        bounds = np.cumsum(list(widths or []))[:-1]
        parts = np.split(outputs, bounds, axis=1) if widths else [outputs]
    else:
        parts = [s.close() for s in sinks]
    return {
        "outputs": parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1),
        "parts": parts,
        "labels": np.asarray(labels, dtype=np.int64),
        "subject_ids": np.asarray(subjects),
        "recording_ids": np.asarray(recordings),
        "epoch_index": np.asarray(epochs, dtype=np.int64),
    }


def extract_features(
    backbone: nn.Module,
    loader: Iterable[Mapping],
    pooling: str = "cls",
    channels: ChannelSet | Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> FeatureSet:
    """Run the frozen backbone over every batch of ``loader`` (batch dicts, see the architecture doc).

    ``channels``: if given, channels outside it are zeroed and masked before the backbone sees them.
    """
    return extract_poolings(backbone, loader, (pooling,), channels, device, autocast_dtype)[pooling]


def extract_poolings(
    backbone: nn.Module,
    loader: Iterable[Mapping],
    poolings: Sequence[str],
    channels: ChannelSet | Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
    folders: Mapping[str, Path] | None = None,
) -> dict[str, FeatureSet]:
    """:func:`extract_features` of several poolings from one backbone pass over ``loader``.

    ``folders`` (pooling -> an existing folder): each pooling's features are written into a
    pre-allocated ``features.npy`` there as the batches come, and returned memory-mapped.
    """
    poolings = list(dict.fromkeys(poolings))  # a pooling named twice is extracted once
    device_type = torch.device(device).type

    def embed(signal: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            return torch.cat(encode_poolings(backbone, signal, mask, poolings), dim=1)

    was_training = backbone.training
    backbone.eval().to(device)
    widths = [pooled_width(backbone, p) for p in poolings]
    files = None if folders is None else [Path(folders[p]) / "features.npy" for p in poolings]
    try:
        out = run_over_loader(loader, embed, channels, device, widths=widths, files=files)
    finally:
        backbone.train(was_training)
    return {p: FeatureSet(np.ascontiguousarray(f) if files is None else f, out["labels"], out["subject_ids"],
                          out["recording_ids"], out["epoch_index"])
            for p, f in zip(poolings, out["parts"])}


@dataclass
class CacheInfo:
    """Whether a feature file came from the cache, where it lives and how long it took."""

    path: Path | None  # None when caching is disabled
    hit: bool
    seconds: float


def cached_features(
    cache_dir: str | Path | None,
    key_parts: Mapping[str, object],
    backbone: nn.Module,
    loader: Iterable[Mapping],
    pooling: str = "cls",
    channels: ChannelSet | Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
    also_poolings: Sequence[str] = (),
) -> tuple[FeatureSet, CacheInfo]:
    """Features from ``<cache_dir>/<key>.npz`` when present, else extracted and stored there.

    ``key_parts`` must identify the backbone (hash) and the split (hash); pooling, channels and the
    autocast dtype are added here. ``cache_dir=None`` disables caching. ``also_poolings``: on a miss,
    these poolings' files are written too, from the same backbone pass (a later run with one of them hits).
    """
    t0 = time.perf_counter()
    # Reduced-precision features are not the float32 ones: the autocast dtype is part of the key.
    shown = "store" if channels is None else list(ChannelSet.coerce(channels).names)
    base = dict(key_parts, channels=shown, autocast=str(autocast_dtype) if autocast_dtype is not None else "off")
    if not {"backbone_hash", "split_hash"} <= base.keys():
        raise ValueError(f"feature cache key needs backbone_hash and split_hash, got {sorted(base)}")
    parts = {p: dict(base, pooling=p) for p in (pooling, *also_poolings)}
    paths = {p: None if cache_dir is None else Path(cache_dir) / f"features_{cache_key(q)}" for p, q in parts.items()}
    path = paths[pooling]
    if path is not None and path.is_dir():
        return FeatureSet.load(path), CacheInfo(path, True, time.perf_counter() - t0)
    # without a cache the other poolings would be thrown away: extract only the one asked for
    wanted = [p for p, q in paths.items() if p == pooling or (q is not None and not q.is_dir())]
    if cache_dir is None:
        extracted = extract_poolings(backbone, loader, wanted, channels, device, autocast_dtype)
        return extracted[pooling], CacheInfo(path, False, time.perf_counter() - t0)
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    staged = {p: Path(tempfile.mkdtemp(prefix=f".{paths[p].name}.", suffix=".tmp", dir=cache_dir)) for p in wanted}
    try:  # features written straight into the cache's pre-allocated files, then the folders renamed
        extracted = extract_poolings(backbone, loader, wanted, channels, device, autocast_dtype, folders=staged)
        for p in wanted:
            _save_folder(paths[p], extracted[p], staged=staged[p])
            atomic_write_text(paths[p].with_suffix(".json"), json.dumps(parts[p], indent=1, default=str))
    finally:
        for folder in staged.values():
            shutil.rmtree(folder, ignore_errors=True)
    return FeatureSet.load(path), CacheInfo(path, False, time.perf_counter() - t0)

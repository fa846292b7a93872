"""Frozen-backbone feature extraction with an on-disk cache keyed by backbone and data-split hashes.

A linear probe needs the backbone once per epoch of data, not once per optimisation step: features
are extracted once (CLS token or mean of patch tokens), stored as ``.npz`` under a key that hashes
the backbone weights, the exact epochs of the split (recording, epoch index, label), the pooling and
the channels shown to the backbone, and reused by every probe / k-shot seed / learning rate after.
"""

from __future__ import annotations

import hashlib
import json
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from torch import nn

from osf.datasets.channelset import ChannelSet
from osf.utils.atomic import atomic_path, atomic_write_text

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

    def save(self, path: str | Path) -> Path:
        """Write as ``.npz`` to a temp file, then rename (a killed run leaves no partial cache)."""
        path = Path(path)
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(
                tmp,
                features=self.features,
                labels=self.labels,
                subject_ids=self.subject_ids.astype(str),
                recording_ids=self.recording_ids.astype(str),
                epoch_index=self.epoch_index,
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> FeatureSet:
        """Read a cached ``.npz`` (no pickles)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(z["features"], z["labels"], z["subject_ids"], z["recording_ids"], z["epoch_index"])
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:  # a truncated .npz is a BadZipFile
            raise ValueError(f"feature cache {path} is unreadable or incomplete: {err}") from err


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


@torch.no_grad()
def run_over_loader(
    loader: Iterable[Mapping],
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    channels: ChannelSet | Sequence[str] | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, np.ndarray]:
    """``forward(signal, channel_mask)`` over every batch of ``loader``, with each row's epoch identity.

    ``channels``: if given, channels outside it are zeroed and masked first. Returns ``outputs``
    (float32 ``[N, ...]``), ``labels``, ``subject_ids``, ``recording_ids`` and ``epoch_index``.
    """
    keep = None if channels is None else ChannelSet.coerce(channels)
    outputs, labels, subjects, recordings, epochs = [], [], [], [], []
    for batch in loader:
        signal, mask = batch["signal"], batch["channel_mask"].bool()
        if keep is not None:
            signal, mask = keep.apply(signal, mask)
        out = forward(signal.to(device, non_blocking=True), mask.to(device, non_blocking=True))
        outputs.append(out.float().cpu())
        labels.append(torch.as_tensor(batch["label"]).long().cpu())
        subjects.extend(map(str, batch["subject_id"]))
        recordings.extend(map(str, batch["recording_id"]))
        epochs.append(torch.as_tensor(batch["epoch_index"]).long().cpu())
    if not outputs:
        raise ValueError("the data loader produced no batches: the split is empty")
    return {
        "outputs": torch.cat(outputs).numpy(),
        "labels": torch.cat(labels).numpy(),
        "subject_ids": np.asarray(subjects),
        "recording_ids": np.asarray(recordings),
        "epoch_index": torch.cat(epochs).numpy(),
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
) -> dict[str, FeatureSet]:
    """:func:`extract_features` of several poolings from one backbone pass over ``loader``."""
    poolings = list(dict.fromkeys(poolings))  # a pooling named twice is extracted once
    device_type = torch.device(device).type

    def embed(signal: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            return torch.cat(encode_poolings(backbone, signal, mask, poolings), dim=1)

    was_training = backbone.training
    backbone.eval().to(device)
    try:
        out = run_over_loader(loader, embed, channels, device)
    finally:
        backbone.train(was_training)
    bounds = np.cumsum([pooled_width(backbone, p) for p in poolings])[:-1]
    return {p: FeatureSet(np.ascontiguousarray(f), out["labels"], out["subject_ids"], out["recording_ids"],
                          out["epoch_index"])
            for p, f in zip(poolings, np.split(out["outputs"], bounds, axis=1))}


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
    paths = {p: None if cache_dir is None else Path(cache_dir) / f"features_{cache_key(q)}.npz" for p, q in parts.items()}
    path = paths[pooling]
    if path is not None and path.is_file():
        return FeatureSet.load(path), CacheInfo(path, True, time.perf_counter() - t0)
    # without a cache the other poolings would be thrown away: extract only the one asked for
    wanted = [p for p, q in paths.items() if p == pooling or (q is not None and not q.is_file())]
    extracted = extract_poolings(backbone, loader, wanted, channels, device, autocast_dtype)
    if cache_dir is not None:
        for p in wanted:
            extracted[p].save(paths[p])
            atomic_write_text(paths[p].with_suffix(".json"), json.dumps(parts[p], indent=1, default=str))
    return extracted[pooling], CacheInfo(path, False, time.perf_counter() - t0)

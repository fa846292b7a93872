"""A deployable classifier: one backbone, one linear head per task, its label names and channel contract.

The file written by :func:`save_classifier` is a plain dict of tensors and Python values, loadable
with ``torch.load(..., weights_only=True)``. Several probes trained on the *same* backbone (e.g.
stage and arousal) merge into one file with :func:`merge_classifiers`, so one forward pass of the
backbone serves every task at prediction time.

Task keys are the store's label columns (``"stage"``, ``"arousal"``, ``"hypopnea"``,
``"oxygen_desaturation"``, ``"apnea"``). Binary tasks have two classes (column 1 = event present)
and carry the decision threshold chosen on validation.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from osf import config
from osf.backbone.checkpoint import METADATA_KEYS, CheckpointError
from osf.backbone.vit1d_cls import create_backbone, state_has_mask_token
from osf.datasets.channelset import ChannelSet
from osf.downstream.features import check_pooling, encode
from osf.downstream.sequence.heads import sequence_head_from_payload, sequence_head_payload
from osf.utils.atomic import atomic_path

CLASSIFIER_FORMAT = "osf_classifier"
CLASSIFIER_VERSION = 1
# Entries load_classifier needs (thresholds and info are optional).
CLASSIFIER_KEYS: tuple[str, ...] = ("backbone_state", "backbone_metadata", "heads", "label_names", "pooling", "channels")


class SleepClassifier(nn.Module):
    """Backbone + per-task linear heads; ``predict_proba(signal, channel_mask) -> {task: [B, C]}``."""

    def __init__(
        self,
        backbone: nn.Module,
        heads: Mapping[str, nn.Linear],
        label_names: Mapping[str, Sequence[str]],
        pooling: str = "cls",
        channels: ChannelSet | Sequence[str] = config.CHANNELS,
        backbone_metadata: Mapping[str, Any] | None = None,
        thresholds: Mapping[str, float] | None = None,
        info: Mapping[str, Any] | None = None,
        sequence_heads: Mapping[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        check_pooling(pooling)
        if set(heads) != set(label_names):
            raise ValueError(f"heads {sorted(heads)} and label names {sorted(label_names)} name different tasks")
        for task, head in heads.items():
            if head.out_features != len(label_names[task]):
                raise ValueError(
                    f"task {task!r}: head has {head.out_features} outputs but {len(label_names[task])} label names"
                )
        self.backbone = backbone
        self.heads = nn.ModuleDict(dict(heads))
        self.label_names = {t: list(v) for t, v in label_names.items()}
        self.pooling = pooling
        self.channel_set = ChannelSet.coerce(channels)  # the training contract: channels the heads may use
        self.channels = list(self.channel_set.names)
        self.backbone_metadata = dict(backbone_metadata or {})
        self.thresholds = {t: float(v) for t, v in (thresholds or {}).items()}
        self.info = dict(info or {})
        # Sequence-context heads (osf/downstream/sequence/heads.py) replace a task's linear head over a whole night.
        unknown = sorted(set(sequence_heads or {}) - set(heads))
        if unknown:
            raise ValueError(f"sequence heads {unknown} have no linear head / label names")
        self.sequence_heads = nn.ModuleDict(dict(sequence_heads or {}))

    @property
    def tasks(self) -> list[str]:
        """Task names in head order."""
        return list(self.heads)

    def missing_channels(self, channel_mask: torch.Tensor) -> list[str]:
        """Contract channels absent from every row of ``channel_mask`` (for QC warnings)."""
        present = channel_mask.bool().any(0).cpu()
        return [c for c, p in zip(config.CHANNELS, present.tolist()) if not p and c in self.channel_set]

    def embed(self, signal: torch.Tensor, channel_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled backbone features ``[B, width]`` (``[B, width x groups]`` with ``groups`` pooling)."""
        if channel_mask is None:
            channel_mask = torch.ones(signal.shape[0], config.NUM_CHANNELS, dtype=torch.bool, device=signal.device)
        # Channels absent from the input or outside the contract are hidden (encode zero-fills them).
        return encode(self.backbone, signal, self.channel_set.restrict(channel_mask), self.pooling)

    def forward(self, signal: torch.Tensor, channel_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Logits per task."""
        feats = self.embed(signal, channel_mask)
        return {task: head(feats) for task, head in self.heads.items()}

    @torch.no_grad()
    def night_proba(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Probabilities ``{task: [T, C]}`` from one night's embeddings ``[T, width]`` (time order).

        Tasks with a sequence head read each epoch's +-K neighbours; the others use their linear head.
        """
        was_training = self.training
        self.eval()
        try:
            return {task: (self.sequence_heads[task].predict_night(features) if task in self.sequence_heads
                           else head(features).softmax(-1)) for task, head in self.heads.items()}
        finally:
            self.train(was_training)

    @torch.no_grad()
    def predict_proba(self, signal: torch.Tensor, channel_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Class probabilities ``{task: [B, C]}`` (eval mode for the call)."""
        was_training = self.training
        self.eval()
        try:
            return {task: logits.softmax(-1) for task, logits in self(signal, channel_mask).items()}
        finally:
            self.train(was_training)


def _plain(obj: Any) -> Any:
    """Restrict to types ``torch.load(weights_only=True)`` accepts."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "item"):  # numpy scalar
        return obj.item()
    return str(obj)


def classifier_payload(clf: SleepClassifier) -> dict:
    """The dict :func:`save_classifier` writes."""
    return {
        "format": CLASSIFIER_FORMAT,
        "version": CLASSIFIER_VERSION,
        "backbone_state": {k: v.detach().cpu().clone() for k, v in clf.backbone.state_dict().items()},
        "backbone_metadata": _plain(clf.backbone_metadata),
        "heads": {t: {"weight": h.weight.detach().cpu().clone(), "bias": h.bias.detach().cpu().clone()}
                  for t, h in clf.heads.items()},
        "label_names": _plain(clf.label_names),
        "pooling": clf.pooling,
        "channels": list(clf.channels),
        "thresholds": _plain(clf.thresholds),
        "info": _plain(clf.info),
        **({"sequence_heads": {t: sequence_head_payload(h) for t, h in clf.sequence_heads.items()}}
           if len(clf.sequence_heads) else {}),
    }


def save_classifier(clf: SleepClassifier, path: str | os.PathLike) -> Path:
    """Write ``clf`` as a weights-only loadable ``.pt`` (temp file, then rename)."""
    missing = [k for k in METADATA_KEYS if k not in clf.backbone_metadata]
    if missing:
        raise ValueError(f"classifier for {path}: backbone metadata lacks {missing}; cannot rebuild it later")
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(classifier_payload(clf), tmp)
    return path


def load_classifier(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> SleepClassifier:
    """Rebuild a :class:`SleepClassifier` from :func:`save_classifier` output (weights-only load)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "classifier file not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(path, f"not a weights-only classifier file ({str(err).splitlines()[0]})") from err
    except Exception as err:
        raise CheckpointError(path, f"cannot be read by torch.load ({type(err).__name__}: {err})") from err
    if not isinstance(payload, dict) or payload.get("format") != CLASSIFIER_FORMAT:
        kind = sorted(payload)[:8] if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(path, f"is not an OSF classifier (format tag missing; found {kind})")
    if payload.get("version", 0) > CLASSIFIER_VERSION:
        raise CheckpointError(path, f"classifier format version {payload['version']} is newer than this code ({CLASSIFIER_VERSION})")
    missing = [k for k in CLASSIFIER_KEYS if k not in payload]
    if missing:
        raise CheckpointError(path, f"classifier file lacks {missing} (truncated or written by other code?)")
    meta = payload["backbone_metadata"]
    try:
        backbone = create_backbone(
            meta["encoder_name"],
            num_leads=int(meta["num_leads"]),
            seq_len=int(meta["seq_len"]),
            patch_size=int(meta["patch_size_time"]),
            lead_wise=int(meta["lead_wise"]),
            patch_size_ch=int(meta["patch_size_ch"]),
        )
        if state_has_mask_token(payload["backbone_state"]):
            backbone.add_mask_token()
        backbone.load_state_dict(payload["backbone_state"], strict=True)
    except (KeyError, ValueError, RuntimeError) as err:
        raise CheckpointError(path, f"backbone does not match its metadata: {err}") from err
    heads = {}
    for task, hw in payload["heads"].items():
        head = nn.Linear(hw["weight"].shape[1], hw["weight"].shape[0])
        head.load_state_dict(hw)
        heads[task] = head
    clf = SleepClassifier(
        backbone,
        heads,
        payload["label_names"],
        pooling=payload["pooling"],
        channels=payload["channels"],
        backbone_metadata=meta,
        thresholds=payload.get("thresholds"),
        info=payload.get("info"),
        sequence_heads=_sequence_heads(path, payload.get("sequence_heads") or {}),
    )
    return clf.to(map_location).eval()


def _sequence_heads(path: Path, payloads: Mapping[str, Any]) -> dict[str, nn.Module]:
    try:
        return {t: sequence_head_from_payload(p) for t, p in payloads.items()}
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(path, f"sequence head does not match its config: {err}") from err


def merge_classifiers(classifiers: Sequence[SleepClassifier]) -> SleepClassifier:
    """One classifier with the heads of all ``classifiers``, which must share an identical backbone.

    Identical means same weights, pooling and channel contract (e.g. several linear probes of one
    pre-trained backbone). Fine-tuned classifiers have different backbones and cannot be merged.
    """
    if not classifiers:
        raise ValueError("nothing to merge")
    first = classifiers[0]
    ref_state = first.backbone.state_dict()
    heads: dict[str, nn.Linear] = {}
    names: dict[str, list[str]] = {}
    thresholds: dict[str, float] = {}
    sequence_heads: dict[str, nn.Module] = {}
    info: dict[str, Any] = {}
    for i, clf in enumerate(classifiers):
        if clf.pooling != first.pooling or clf.channels != first.channels:
            raise ValueError(
                f"classifier {i} uses pooling={clf.pooling!r} channels={clf.channels}, classifier 0 uses "
                f"pooling={first.pooling!r} channels={first.channels}; only identical setups merge"
            )
        state = clf.backbone.state_dict()
        if state.keys() != ref_state.keys() or any(not torch.equal(state[k], ref_state[k]) for k in ref_state):
            raise ValueError(f"classifier {i} has a different backbone from classifier 0 (fine-tuned?); cannot merge")
        for task in clf.tasks:
            if task in heads:
                raise ValueError(f"task {task!r} appears in more than one classifier")
            heads[task] = clf.heads[task]
            names[task] = clf.label_names[task]
            if task in clf.thresholds:
                thresholds[task] = clf.thresholds[task]
            if task in clf.sequence_heads:
                sequence_heads[task] = clf.sequence_heads[task]
            info[task] = clf.info
    return SleepClassifier(
        first.backbone, heads, names, first.pooling, first.channels, first.backbone_metadata, thresholds, info,
        sequence_heads=sequence_heads,
    )


# info key of the validation kappa per channel preset (osf.downstream.epoch.presets writes it, prediction reads it)
VALIDATION_KEY = "validation_kappa_by_preset"


def closest_validated_preset(validated: dict[str, float], present: Sequence[str], contract: Sequence[str]) -> dict | None:
    """The validated preset a night is closest to, and what it lacks of it (None without per-preset scores).

    The night's channels (``present``, within the classifier's ``contract``) are compared with each
    preset's: the largest preset the night covers wins; if it covers none, the one with the largest
    overlap (Jaccard), with the channels the night lacks named.
    """
    if not validated:
        return None
    night = set(present) & set(contract)

    def rank(preset: str) -> tuple[bool, float, int]:
        channels = set(ChannelSet.from_spec(preset).names) & set(contract)
        union = channels | night
        return channels <= night, len(channels & night) / max(len(union), 1), len(channels)

    best = max(validated, key=rank)
    channels = [c for c in ChannelSet.from_spec(best).names if c in contract]
    return {
        "preset": best,
        "validation_kappa": float(validated[best]),
        "preset_channels": channels,
        "night_lacks": [c for c in channels if c not in night],
        "night_adds": sorted(night - set(channels)),
        "all_validated": {p: float(k) for p, k in validated.items()},
    }

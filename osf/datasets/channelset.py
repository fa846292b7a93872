"""`ChannelSet`: a subset of the model's 12 channels, the one type for channel presets and contracts.

Built from a preset name or a comma-separated list (the ``--channel_preset`` / ``--eval_channels``
spelling), from channel names, or from a boolean mask over ``config.CHANNELS``. The data module
(which channels a split shows), the feature cache (which channels the backbone sees), the
classifier (its training contract) and prediction all ask it the same questions: ``.mask``,
``.names``, ``.keep_indices``, and ``.apply`` / ``.restrict`` on a batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from osf import config


@dataclass(frozen=True)
class ChannelSet:
    """Channels kept, by name (in the order given); ``preset`` is set when built from a preset name.

    Two sets are equal when they name the same channels in the same order, however they were built.
    """

    names: tuple[str, ...]
    preset: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        names = tuple(self.names)
        object.__setattr__(self, "names", names)
        if not names:
            raise ValueError("empty channel set: at least one channel must be present")
        unknown = [n for n in names if n not in config.CHANNEL_INDEX]
        if unknown:
            raise ValueError(f"unknown channel(s) {unknown}; channels are {list(config.CHANNELS)}")
        if self.preset is not None and self.preset not in config.CHANNEL_PRESETS:
            raise ValueError(f"unknown channel preset {self.preset!r}; known presets: {sorted(config.CHANNEL_PRESETS)}")
        if self.preset is not None and names != config.CHANNEL_PRESETS[self.preset]:
            raise ValueError(f"channels {list(names)} are not those of preset {self.preset!r}")

    # --- construction ---------------------------------------------------------------------------
    @classmethod
    def full(cls) -> ChannelSet:
        """All 12 model channels (the ``full`` preset)."""
        return cls(config.CHANNELS, "full")

    @classmethod
    def from_spec(cls, spec: str) -> ChannelSet:
        """A preset name (``cardio_respiratory``) or a comma-separated channel list (``ECG,ABD``)."""
        return cls(config.resolve_channel_preset(spec), spec if spec in config.CHANNEL_PRESETS else None)

    @classmethod
    def from_names(cls, names: Iterable[str]) -> ChannelSet:
        """Exactly the channels named (model channel names, ``config.CHANNELS``)."""
        return cls(tuple(names))

    @classmethod
    def from_mask(cls, mask: Any) -> ChannelSet:
        """The channels set in a bool mask ``[12]`` over ``config.CHANNELS`` (numpy array, tensor or list)."""
        keep = np.asarray(mask if isinstance(mask, (np.ndarray, list, tuple)) else mask.cpu())
        if keep.shape != (config.NUM_CHANNELS,):
            raise ValueError(f"a channel mask must be bool [{config.NUM_CHANNELS}], got shape {keep.shape}")
        return cls(tuple(c for c, k in zip(config.CHANNELS, keep.astype(bool)) if k))

    @classmethod
    def coerce(cls, channels: ChannelSet | str | Sequence[str] | np.ndarray) -> ChannelSet:
        """A ChannelSet from any accepted spelling: itself, a preset/list string, names, or a bool mask."""
        if isinstance(channels, ChannelSet):
            return channels
        if isinstance(channels, str):
            return cls.from_spec(channels)
        if "bool" in str(getattr(channels, "dtype", "")):  # a numpy or torch mask
            return cls.from_mask(channels)
        return cls.from_names(channels)

    # --- views ----------------------------------------------------------------------------------
    @property
    def mask(self) -> np.ndarray:
        """Bool ``[12]``: True for the channels kept (model order)."""
        keep = np.zeros(config.NUM_CHANNELS, dtype=bool)
        keep[self.keep_indices] = True
        return keep

    @property
    def keep_indices(self) -> np.ndarray:
        """Indices of the kept channels in ``config.CHANNELS``, ascending."""
        return np.sort(np.array([config.CHANNEL_INDEX[n] for n in self.names], dtype=np.int64))

    @property
    def is_full(self) -> bool:
        """True when every model channel is kept (applying the set changes nothing)."""
        return bool(self.mask.all())

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __len__(self) -> int:
        return len(self.names)

    def bits(self) -> str:
        """The mask as a 12-character ``0``/``1`` string (model order), e.g. for cache keys."""
        return "".join("1" if k else "0" for k in self.mask)

    # --- on batches -----------------------------------------------------------------------------
    def restrict(self, channel_mask: Any) -> Any:
        """``channel_mask [..., 12] & self``: presence limited to the set (numpy array or tensor)."""
        if isinstance(channel_mask, (np.ndarray, list, tuple)):
            return np.asarray(channel_mask, dtype=bool) & self.mask
        import torch  # only for tensors: the data side of the package does not need torch

        return channel_mask.bool() & torch.as_tensor(self.mask, device=channel_mask.device)

    def apply(self, signal: Any, channel_mask: Any) -> tuple[Any, Any]:
        """Zero and mask every channel outside the set (and every channel already absent) of a torch batch.

        ``signal [B, 12, T]``, ``channel_mask [B, 12]``; returns new tensors, the inputs are untouched.
        """
        mask = self.restrict(channel_mask)
        return signal.masked_fill(~mask.unsqueeze(-1), 0.0), mask

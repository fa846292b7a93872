"""Decide, for each of the 12 model channels, which EDF signal(s) provide it.

For every canonical channel in ``config.CHANNELS`` the answer is one of: a *direct* label (the
file already holds that signal), a *derived* pair ``label_a - label_b`` (a bipolar channel from two
single-ended electrodes, e.g. C3-A2 = C3 - M2), or *absent*. Sources, in order: a user channel
map (which then decides alone), the dataset's own aliases, ``config.CHANNEL_ALIASES``,
``config.DERIVATIONS`` over ``config.ELECTRODE_ALIASES``, ``config.UNREFERENCED_FALLBACK``, and last
the dataset's substitutions (``DatasetSpec.substitutions``: a signal that stands in for the channel,
with the reason kept in ``ChannelSource.note``; refused below its minimum rate when rates are given).
The subtraction itself is the signal pipeline's job (``osf.datasets.preprocess``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osf import config
from osf.datasets.io.errors import ChannelMapError, DuplicateLabelError


@dataclass(frozen=True)
class ChannelSource:
    """Where one canonical channel comes from."""

    kind: str  # "direct", "derived" or "absent"
    labels: tuple[str, ...] = ()  # (label,) for direct, (label_a, label_b) for derived = a - b
    rule: str = ""  # why: "channel_map", "dataset_alias", "alias", "derivation", "unreferenced", "substitution", "none"
    note: str = ""  # a substitution's reason (config.ChannelSubstitution.why), or why one was refused

    @property
    def present(self) -> bool:
        """True unless absent."""
        return self.kind != "absent"


@dataclass(frozen=True)
class ChannelResolution:
    """The source of each canonical channel for one EDF file."""

    sources: dict[str, ChannelSource]  # canonical channel -> source, keys in config.CHANNELS order
    dataset: str
    unused_labels: tuple[str, ...] = field(default=())  # EDF labels no channel uses
    unused_reasons: dict[str, str] = field(default_factory=dict)  # unused label -> why (registry, refused substitutes)

    @property
    def substitutions(self) -> dict[str, dict[str, Any]]:
        """Canonical channel -> {"labels", "why"} for every channel a substitute stands in for."""
        return {c: {"labels": list(s.labels), "why": s.note} for c, s in self.sources.items() if s.rule == "substitution"}

    @property
    def refused_substitutions(self) -> dict[str, str]:
        """Canonical channel -> why its substitute was not used (e.g. a 1 Hz EMG envelope)."""
        return {c: s.note for c, s in self.sources.items() if not s.present and s.note}

    @property
    def present(self) -> list[str]:
        """Canonical channels that have a source."""
        return [c for c, s in self.sources.items() if s.present]

    @property
    def missing(self) -> list[str]:
        """Canonical channels without a source."""
        return [c for c, s in self.sources.items() if not s.present]

    @property
    def needed_labels(self) -> list[str]:
        """Every EDF label to read, in first-use order (pass to ``read_edf``)."""
        seen: dict[str, None] = {}
        for s in self.sources.values():
            for lab in s.labels:
                seen.setdefault(lab, None)
        return list(seen)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly: canonical -> label, [label_a, label_b] or None (the channel-map format)."""
        out: dict[str, Any] = {}
        for c, s in self.sources.items():
            out[c] = None if not s.present else (s.labels[0] if s.kind == "direct" else list(s.labels))
        return out


def _index_labels(labels: list[str]) -> dict[str, list[str]]:
    index: dict[str, list[str]] = {}
    for lab in labels:
        index.setdefault(config.normalize_label(lab), []).append(lab)
    return index


def _pick(
    index: dict[str, list[str]], candidates: tuple[str, ...], path: str | Path | None, what: str
) -> str | None:
    """The EDF label matching the first candidate present; duplicates of a needed label are errors."""
    for cand in candidates:
        hits = index.get(config.normalize_label(cand))
        if hits:
            if len(hits) > 1:
                raise DuplicateLabelError(
                    path, f"{what}: label {cand!r} matches {len(hits)} signals {hits}; give a channel map"
                )
            return hits[0]
    return None


def load_channel_map(source: str | Path | Mapping[str, Any]) -> dict[str, str | tuple[str, str]]:
    """Validate a channel map given as a dict, a JSON string or a path to a JSON file.

    Keys are canonical channels (``config.CHANNELS``), values an EDF label or a ``[label_a,
    label_b]`` pair meaning ``a - b``. Duplicated keys, unknown channels, malformed values and a
    label used directly by two channels are errors.
    """
    raw, where = (dict(source), None) if isinstance(source, Mapping) else _parse_channel_map(source)
    unknown = [k for k in raw if k not in config.CHANNEL_INDEX]
    if unknown:
        raise ChannelMapError(where, f"unknown canonical channel(s) {unknown}; known: {list(config.CHANNELS)}")
    out = {key: _channel_source(where, key, value) for key, value in raw.items()}
    direct = Counter(v for v in out.values() if isinstance(v, str))
    pairs = Counter(v for v in out.values() if isinstance(v, tuple))
    dup = [v for v, n in direct.items() if n > 1] + [list(v) for v, n in pairs.items() if n > 1]
    if dup:
        raise ChannelMapError(where, f"channel map gives the same source {dup} to more than one channel")
    return out


def _parse_channel_map(source: str | Path) -> tuple[dict[str, Any], Path | None]:
    """The JSON object of a channel map given as text or as a file path, and the file (None for text)."""
    where: Path | None = None
    text = str(source)
    if isinstance(source, Path) or (not text.lstrip().startswith("{") and Path(text).is_file()):
        where = Path(text)
        text = where.read_text()

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        dup = [k for k, n in Counter(k for k, _ in pairs).items() if n > 1]
        if dup:
            raise ChannelMapError(where, f"channel map names {dup} more than once")
        return dict(pairs)

    try:
        raw = json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as err:
        raise ChannelMapError(where, f"channel map is not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise ChannelMapError(where, f"channel map must be a JSON object, got {type(raw).__name__}")
    return raw, where


def _channel_source(where: Path | None, key: str, value: Any) -> str | tuple[str, str]:
    """One map entry: an EDF label, or a pair ``(a, b)`` of two different labels for ``a - b``."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    is_pair = isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, str) and v.strip() for v in value)
    if is_pair and value[0].strip() != value[1].strip():
        return (value[0].strip(), value[1].strip())
    raise ChannelMapError(where, f"{key}: expected an EDF label or a pair of two different labels [a, b], got {value!r}")


def resolve_channels(
    labels: list[str] | tuple[str, ...],
    dataset: str = "generic",
    channel_map: str | Path | Mapping[str, Any] | None = None,
    path: str | Path | None = None,
    rates: Mapping[str, float] | None = None,
) -> ChannelResolution:
    """Map EDF ``labels`` to the 12 canonical channels (``path`` only names the file in errors).

    With a ``channel_map`` the registry is not consulted: listed channels must exist in the file
    and the others are absent. ``rates`` (label -> Hz) lets substitutions refuse a signal sampled
    below their minimum rate; without it they are not rate-checked.
    """
    spec = config.get_dataset(dataset)
    index = _index_labels(list(labels))
    sources: dict[str, ChannelSource] = {}
    if channel_map is not None:
        cmap = load_channel_map(channel_map)
        for canonical in config.CHANNELS:
            value = cmap.get(canonical)
            if value is None:
                sources[canonical] = ChannelSource("absent", (), "channel_map")
                continue
            wanted = (value,) if isinstance(value, str) else value
            found = []
            for lab in wanted:
                hit = _pick(index, (lab,), path, canonical)
                if hit is None:
                    raise ChannelMapError(
                        path,
                        f"channel map: {canonical} uses {lab!r}, which is not in the file; labels: {list(labels)}",
                    )
                found.append(hit)
            sources[canonical] = ChannelSource(
                "direct" if len(found) == 1 else "derived", tuple(found), "channel_map"
            )
    else:
        for canonical in config.CHANNELS:
            source = _resolve_one(canonical, index, spec.aliases, path)
            sources[canonical] = source if source.present else _substitute(canonical, index, spec, rates or {}, path)
    used = {lab for s in sources.values() for lab in s.labels}
    unused = tuple(lab for lab in labels if lab not in used)
    return ChannelResolution(
        sources=sources, dataset=spec.name, unused_labels=unused, unused_reasons=_unused_reasons(unused, spec, sources)
    )


def _substitute(
    canonical: str, index: dict[str, list[str]], spec: config.DatasetSpec, rates: Mapping[str, float], path: str | Path | None
) -> ChannelSource:
    """The dataset's stand-in for an absent channel, or absent (with why, when one was refused for its rate)."""
    for sub in (s for s in spec.substitutions if s.channel == canonical):
        hit = _pick(index, sub.labels, path, canonical)
        if hit is None:
            continue
        rate = rates.get(hit)
        if rate is not None and rate < sub.min_rate_hz:
            return ChannelSource(
                "absent", (), "none",
                f"{hit!r} at {rate:g} Hz is not used (needs >= {sub.min_rate_hz:g} Hz): {sub.why}",
            )
        return ChannelSource("direct", (hit,), "substitution", sub.why)
    return ChannelSource("absent", (), "none")


def _unused_reasons(
    unused: tuple[str, ...], spec: config.DatasetSpec, sources: Mapping[str, ChannelSource]
) -> dict[str, str]:
    """Why each unused label feeds no channel, where the registry or a refused substitution says."""
    known = {config.normalize_label(lab): why for lab, why in spec.unused_signals}
    for canonical, src in sources.items():
        for sub in spec.substitutions:
            if sub.channel == canonical and src.note and not src.present:
                known.update({config.normalize_label(lab): src.note for lab in sub.labels})
    return {lab: known[config.normalize_label(lab)] for lab in unused if config.normalize_label(lab) in known}


def _resolve_one(
    canonical: str,
    index: dict[str, list[str]],
    dataset_aliases: dict[str, tuple[str, ...]],
    path: str | Path | None,
) -> ChannelSource:
    hit = _pick(index, dataset_aliases.get(canonical, ()), path, canonical)
    if hit:
        return ChannelSource("direct", (hit,), "dataset_alias")
    hit = _pick(index, config.CHANNEL_ALIASES.get(canonical, ()), path, canonical)
    if hit:
        return ChannelSource("direct", (hit,), "alias")
    for a, b in config.DERIVATIONS.get(canonical, ()):
        la = _pick(index, config.ELECTRODE_ALIASES[a], path, f"{canonical} ({a})")
        lb = _pick(index, config.ELECTRODE_ALIASES[b], path, f"{canonical} ({b})") if la else None
        if la and lb:
            return ChannelSource("derived", (la, lb), "derivation")
    for electrode in config.UNREFERENCED_FALLBACK.get(canonical, ()):
        hit = _pick(index, config.ELECTRODE_ALIASES[electrode], path, canonical)
        if hit:
            return ChannelSource("direct", (hit,), "unreferenced")
    return ChannelSource("absent", (), "none")

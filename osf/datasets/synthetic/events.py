"""Scheduling of scored events: respiratory events, desaturations, arousals and limb movements.

Events are drawn first (from the hypnogram and the subject's severity), then rendered into the
signals by ``physiology.py``; the XML lists exactly these events, so every scored event is one that
is visible in the signals, with its exact onset and duration.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from osf.datasets.synthetic.hypnogram import EPOCH_SEC, N3, REM, W
from osf.datasets.synthetic.subjects import SubjectProfile

APNEA_KINDS = ("obstructive_apnea", "central_apnea")
RESPIRATORY_KINDS = APNEA_KINDS + ("hypopnea",)

# kind -> (NSRR EventType, NSRR EventConcept, Scoring label of the pinned interface)
EVENT_XML: dict[str, tuple[str, str, str]] = {
    "obstructive_apnea": ("Respiratory|Respiratory", "Obstructive apnea|Obstructive Apnea", "Apnea"),
    "central_apnea": ("Respiratory|Respiratory", "Central apnea|Central Apnea", "Apnea"),
    "hypopnea": ("Respiratory|Respiratory", "Hypopnea|Hypopnea", "Hypopnea"),
    "desaturation": ("Respiratory|Respiratory", "SpO2 desaturation|SpO2 desaturation", "Oxygen Desaturation"),
    "arousal": ("Arousals|Arousals", "Arousal|Arousal ()", "Arousal"),
    "limb_left": (
        "Limb Movement|Limb Movement",
        "Limb movement - left|Limb Movement (Left)",
        "Limb Movement",
    ),
    "limb_right": (
        "Limb Movement|Limb Movement",
        "Limb movement - right|Limb Movement (Right)",
        "Limb Movement",
    ),
}


@dataclass(frozen=True)
class ScoredEvent:
    """One scored event; times in seconds from the EDF start."""

    kind: str  # key of EVENT_XML
    onset: float
    duration: float
    depth: float = 0.0  # respiratory: fraction of flow left (0..1); desaturation: configured drop (%)
    nadir: float | None = None  # desaturation: lowest SpO2 (%) in the rendered signal
    baseline: float | None = None  # desaturation: SpO2 (%) before the drop
    cause: int = -1  # index of the event that caused this one (desaturation / arousal), -1 if none

    @property
    def end(self) -> float:
        """Offset in seconds."""
        return self.onset + self.duration

    @property
    def label(self) -> str:
        """Event label of the pinned Scoring interface (Apnea, Hypopnea, ...)."""
        return EVENT_XML[self.kind][2]


def _sleep_mask(stages: np.ndarray, t0: float, t1: float) -> bool:
    """True when [t0, t1] lies inside the record and only in sleep epochs."""
    a, b = int(t0 // EPOCH_SEC), int(np.ceil(t1 / EPOCH_SEC))
    return t0 >= 0 and b <= len(stages) and bool(np.all(stages[a:b] != W))


class _Timeline:
    """Busy intervals for non-overlap checks (few hundred events: a sorted list is plenty)."""

    def __init__(self) -> None:
        self.iv: list[tuple[float, float]] = []

    def free(self, t0: float, t1: float) -> bool:
        return all(t1 <= a or t0 >= b for a, b in self.iv)

    def add(self, t0: float, t1: float) -> None:
        self.iv.append((t0, t1))


# Flow left in a hypopnea (fraction of the pre-event baseline): generator 1 drew 0.3-0.6; generator 2 spans the
# whole AASM range, a >= 30 % drop (flow left <= 0.7) for >= 10 s.
HYPOPNEA_FLOW_LEFT = {1: (0.3, 0.6), 2: (0.3, 0.7)}


def schedule_respiratory(
    profile: SubjectProfile, stages: np.ndarray, rng: np.random.Generator, generator: int = 1
) -> list[ScoredEvent]:
    """Apneas and hypopneas: AHI events per hour of sleep, more in REM, fewer in N3."""
    tst_h = float(np.sum(stages != W)) * EPOCH_SEC / 3600.0
    n_target = round(profile.ahi_target * tst_h)
    sleep_epochs = np.flatnonzero(stages != W)
    if n_target == 0 or sleep_epochs.size == 0:
        return []
    weights = np.where(stages[sleep_epochs] == REM, 2.0, np.where(stages[sleep_epochs] == N3, 0.4, 1.0))
    weights /= weights.sum()
    sev = ["none", "mild", "moderate", "severe"].index(profile.severity_target)
    p_obs, p_cen = 0.18 + 0.07 * sev, 0.06 + (0.0 if profile.cohort != "chat" else -0.03)
    busy = _Timeline()
    events: list[ScoredEvent] = []
    for _ in range(n_target * 40):
        if len(events) >= n_target:
            break
        e = int(rng.choice(sleep_epochs, p=weights))
        onset = round(float(e * EPOCH_SEC + rng.uniform(0, EPOCH_SEC)), 1)
        u = rng.random()
        if u < p_obs:
            kind, dur, depth = "obstructive_apnea", rng.uniform(10, 35), rng.uniform(0.0, 0.08)
        elif u < p_obs + p_cen:
            kind, dur, depth = "central_apnea", rng.uniform(10, 25), rng.uniform(0.0, 0.06)
        else:
            kind, dur, depth = "hypopnea", rng.uniform(10, 40), rng.uniform(*HYPOPNEA_FLOW_LEFT[generator])
        dur = round(float(dur), 1)
        # an event needs 8 s of normal breathing before it and ~15 s of recovery breathing after it
        if _sleep_mask(stages, onset - 8, onset + dur + 15) and busy.free(onset - 8, onset + dur + 15):
            busy.add(onset - 8, onset + dur + 15)
            events.append(ScoredEvent(kind, onset, dur, depth=float(depth)))
    events.sort(key=lambda ev: ev.onset)
    return events


def draw_desaturations(
    resp: list[ScoredEvent], profile: SubjectProfile, rng: np.random.Generator
) -> list[ScoredEvent]:
    """Desaturations caused by respiratory events: the drop reaches its nadir 10-30 s after the event end."""
    out = []
    sev = ["none", "mild", "moderate", "severe"].index(profile.severity_target)
    for i, ev in enumerate(resp):
        apnea = ev.kind in APNEA_KINDS
        if rng.random() > (0.92 if apnea else 0.7):
            continue
        lag = float(rng.uniform(10, 30))
        depth = float(rng.uniform(5, 10 + 2 * sev) if apnea else rng.uniform(4, 8))
        out.append(ScoredEvent("desaturation", round(ev.onset + lag, 1), ev.duration, depth=depth, cause=i))
    return out


def render_spo2_track(
    duration_s: float, profile: SubjectProfile, desats: list[ScoredEvent], rng: np.random.Generator
) -> np.ndarray:
    """SpO2 at 1 Hz, integer percent like an oximeter; drops follow the scheduled desaturations."""
    n = int(duration_s)
    t = np.arange(n, dtype=float)
    slow = np.convolve(rng.normal(0, 1, n + 120), np.ones(120) / np.sqrt(120), mode="valid")[:n]
    spo2 = profile.spo2_baseline + 0.35 * slow / max(np.std(slow), 1e-9)
    drop = np.zeros(n)
    for d in desats:
        t1, t2 = d.onset, d.end  # drop starts, nadir
        fall = (t >= t1) & (t < t2)
        drop[fall] = np.maximum(drop[fall], d.depth * 0.5 * (1 - np.cos(np.pi * (t[fall] - t1) / (t2 - t1))))
        rec = (t >= t2) & (t < t2 + 12.0)
        drop[rec] = np.maximum(drop[rec], d.depth * 0.5 * (1 + np.cos(np.pi * (t[rec] - t2) / 12.0)))
    return np.clip(np.round(spo2 - drop), 50, 100)


def measure_desaturations(spo2: np.ndarray, desats: list[ScoredEvent]) -> list[ScoredEvent]:
    """Fill nadir/baseline from the rendered SpO2 and keep only drops of >= 3 %, as a scorer would."""
    kept = []
    for d in desats:
        a, b = int(d.onset), min(int(np.ceil(d.end)) + 3, len(spo2))
        if b - a < 2 or a < 1:
            continue
        baseline = float(np.max(spo2[max(0, a - 5) : a + 1]))
        nadir = float(np.min(spo2[a:b]))
        if baseline - nadir >= 3.0:
            t_nadir = a + int(np.argmin(spo2[a:b]))
            dur = max(float(t_nadir - d.onset) + 1.0, 3.0)
            kept.append(replace(d, duration=round(dur, 1), nadir=nadir, baseline=baseline))
    return kept


def schedule_arousals(
    profile: SubjectProfile,
    stages: np.ndarray,
    resp: list[ScoredEvent],
    desats: list[ScoredEvent],
    limbs: list[ScoredEvent],
    rng: np.random.Generator,
) -> list[ScoredEvent]:
    """Arousals after respiratory events, some limb movements, and spontaneously."""
    busy = _Timeline()
    out: list[ScoredEvent] = []
    desat_causes = {d.cause for d in desats}

    def add(onset: float, dur: float, cause: int) -> None:
        onset, dur = round(onset, 1), round(dur, 1)
        if _sleep_mask(stages, onset - 10, onset + dur) and busy.free(onset - 10, onset + dur + 10):
            busy.add(onset - 10, onset + dur + 10)
            out.append(ScoredEvent("arousal", onset, dur, cause=cause))

    for i, ev in enumerate(resp):
        # AASM 3 % rule: a hypopnea without a desaturation needs an arousal to be scored at all
        must = ev.kind == "hypopnea" and i not in desat_causes
        if must or rng.random() < (0.7 if ev.kind in APNEA_KINDS else 0.45):
            add(ev.end + rng.uniform(-1.0, 2.0), rng.uniform(3.0, 15.0), i)
    for lm in limbs:
        if rng.random() < 0.2:
            add(lm.onset + rng.uniform(-0.5, 0.5), rng.uniform(3.0, 10.0), -1)
    tst_h = float(np.sum(stages != W)) * EPOCH_SEC / 3600.0
    sleep_epochs = np.flatnonzero(stages != W)
    if sleep_epochs.size:
        for _ in range(rng.poisson(profile.spont_arousal_rate * tst_h)):
            e = int(rng.choice(sleep_epochs))
            add(e * EPOCH_SEC + rng.uniform(0, EPOCH_SEC), rng.uniform(3.0, 15.0), -1)
    out.sort(key=lambda ev: ev.onset)
    return out


def schedule_limb_movements(
    profile: SubjectProfile, stages: np.ndarray, rng: np.random.Generator
) -> list[ScoredEvent]:
    """Isolated limb movements, and periodic series (PLMS) in NREM for subjects with PLM."""
    duration_s = len(stages) * EPOCH_SEC
    hours = duration_s / 3600.0
    out: list[ScoredEvent] = []
    busy = {"limb_left": _Timeline(), "limb_right": _Timeline()}

    def add(kind: str, onset: float, dur: float) -> None:
        onset, dur = round(onset, 1), round(dur, 1)
        if 0 <= onset and onset + dur <= duration_s and busy[kind].free(onset - 1, onset + dur + 1):
            busy[kind].add(onset - 1, onset + dur + 1)
            out.append(ScoredEvent(kind, onset, dur))

    def sides() -> list[str]:
        u = rng.random()
        return ["limb_left"] if u < 0.4 else (["limb_right"] if u < 0.8 else ["limb_left", "limb_right"])

    for _ in range(rng.poisson(4.0 * hours)):
        t = rng.uniform(0, duration_s - 10)
        for k in sides():
            add(k, t + rng.uniform(0, 0.3), rng.uniform(0.5, 5.0))
    if profile.plm:
        nrem = np.flatnonzero((stages != W) & (stages != REM))
        for _ in range(rng.poisson(1.5 * hours) + 1 if nrem.size else 0):
            t = float(rng.choice(nrem) * EPOCH_SEC)
            interval = rng.uniform(20, 40)
            for _ in range(int(rng.integers(4, 25))):
                e = int(t // EPOCH_SEC)
                if e >= len(stages) or stages[e] in (W, REM):
                    break
                for k in sides():
                    add(k, t, rng.uniform(0.5, 4.0))
                t += interval * rng.uniform(0.85, 1.15)
    out.sort(key=lambda ev: (ev.onset, ev.kind))
    return out

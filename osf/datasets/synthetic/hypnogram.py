"""Night structure: a hypnogram of 30 s epochs with NREM/REM cycles and brief awakenings.

The model is the textbook night (Carskadon & Dement): a sleep-onset latency, ~90 min NREM/REM
cycles whose N3 shrinks and whose REM lengthens across the night, and brief awakenings / N1
intrusions / N3<->N2 fluctuations scattered over the night. Recordings shorter than a full night
compress the cycle time-scale (to at most 0.45x) so that a 1-2 h night still holds every stage.
"""

from __future__ import annotations

import numpy as np

from osf.datasets.synthetic.subjects import SubjectProfile

W, N1, N2, N3, REM = 0, 1, 2, 3, 4
EPOCH_SEC = 30.0
FULL_NIGHT_H = 7.5

# Scored stages are a continuum cut into classes: epoch by epoch, expert scorers agree on ~83 % of
# epochs (Rosenberg & Van Hout 2013, AASM inter-scorer reliability programme: 82.6 % overall; N1 63 %,
# N3 67 %, N2 85 %, W 84 %, REM 90 %; Cohen's kappa ~0.76, Danker-Hopfe 2009), and the disagreements sit
# at transitions and on the W/N1, N1/N2 and N2/N3 boundaries. The latent physiology of such an epoch lies
# between its scored stage and a neighbour: it is a mixture whose majority is the scored stage.
MIX_NEIGHBOURS: dict[int, tuple[int, ...]] = {W: (N1,), N1: (W, N2), N2: (N1, N3), N3: (N2,), REM: (N1,)}
MIX_PROB = (0.2, 0.6, 0.25, 0.45, 0.15)  # chance that an epoch away from a transition is mixed, W..REM
MIX_SHARE = (0.05, 0.5)  # share of the neighbour's physiology in a mixed epoch (< 0.5: the label is the majority)


def latent_stage_mix(stages: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-epoch weights ``[n, 5]`` of each stage's physiology: one-hot, or a mixture at ambiguous epochs.

    Epochs next to a stage change borrow from the stage across the boundary; others are mixed with a
    neighbour on the scoring continuum (``MIX_NEIGHBOURS``) with probability ``MIX_PROB`` of their stage.
    """
    stages = np.asarray(stages, dtype=np.int64)
    n = stages.size
    w = np.eye(5)[stages]
    if n == 0:
        return w
    prev, nxt = np.r_[stages[0], stages[:-1]], np.r_[stages[1:], stages[-1]]
    draw, pick = rng.random(n), rng.random(n)
    share = rng.uniform(*MIX_SHARE, n)
    for e in range(n):
        s = int(stages[e])
        if prev[e] != s or nxt[e] != s:
            other = int(prev[e] if prev[e] != s else nxt[e])
        elif draw[e] < MIX_PROB[s]:
            options = MIX_NEIGHBOURS[s]
            other = options[int(pick[e] * len(options))]
        else:
            continue
        w[e, s] -= share[e]
        w[e, other] += share[e]
    return w


def cycle_compression(hours: float) -> float:
    """Time-scale factor of the sleep cycles for a recording of ``hours`` (1 for a full night)."""
    return float(np.clip(hours / FULL_NIGHT_H, 0.45, 1.0))


def _epochs(minutes: float, c: float = 1.0) -> int:
    return max(1, round(minutes * c * 2))


def generate_hypnogram(profile: SubjectProfile, n_epochs: int, rng: np.random.Generator) -> np.ndarray:
    """Stages (0 W, 1 N1, 2 N2, 3 N3, 4 REM) of ``n_epochs`` 30 s epochs from lights off."""
    hours = n_epochs * EPOCH_SEC / 3600.0
    c = cycle_compression(hours)
    age = profile.age
    sol_median = 18.0 if age < 13 else (10.0 + 0.08 * max(age - 30.0, 0.0))
    stages: list[int] = [W] * _epochs(rng.lognormal(np.log(sol_median), 0.45), max(c, 0.6))
    cycle = 0
    while len(stages) < n_epochs:
        length = rng.normal(92.0, 10.0) if cycle else rng.normal(80.0, 10.0)
        rem = min(6.0 + 9.0 * cycle, 40.0) * rng.uniform(0.7, 1.3) * (0.6 if cycle == 0 else 1.0)
        rem *= profile.rem_scale
        n3 = max(0.0, 38.0 - 17.0 * cycle) * profile.n3_scale * rng.uniform(0.7, 1.3)
        if cycle >= 2 and rng.random() < 0.35:  # a little slow-wave sleep late in the night too
            n3 += rng.uniform(2.0, 8.0) * profile.n3_scale
        n1 = rng.uniform(3.0, 7.0) if cycle == 0 else rng.uniform(1.0, 4.0)
        n2 = max(length - rem - n3 - n1, 10.0)
        n2_before = n2 * rng.uniform(0.45, 0.7)
        seq = [(N1, n1), (N2, n2_before), (N3, n3), (N2, n2 - n2_before), (REM, rem)]
        for st, minutes in seq:
            if minutes > 0.5:
                stages += [st] * _epochs(minutes, c)
        cycle += 1
    hyp = np.asarray(stages[:n_epochs], dtype=np.int8)
    return _interrupt(hyp, profile, rng, n1_rate=3.0, n3_flip_rate=4.0)


def _interrupt(hyp: np.ndarray, profile: SubjectProfile, rng: np.random.Generator, n1_rate: float,
               n3_flip_rate: float) -> np.ndarray:
    """Brief awakenings (``profile.waso_rate``/h), N1 intrusions and N3 -> N2 flips scattered after sleep onset."""
    n_epochs = hyp.size
    hours = n_epochs * EPOCH_SEC / 3600.0
    sleep_start = int(np.argmax(hyp != W)) if np.any(hyp != W) else n_epochs

    def scatter(rate_per_h: float, allowed: tuple[int, ...], make) -> None:
        n = rng.poisson(rate_per_h * hours)
        for _ in range(n):
            i = int(rng.integers(sleep_start + 4, max(sleep_start + 5, n_epochs)))
            if i < n_epochs and hyp[i] in allowed:
                make(i)

    def awakening(i: int) -> None:
        prev = int(hyp[i])
        k = int(rng.choice([1, 1, 2, 2, 3, 4, 6]))
        hyp[i : i + k] = W
        j = i + k
        if prev != REM and j < n_epochs:  # falling back asleep passes through N1
            hyp[j : j + int(rng.integers(1, 3))] = N1

    def n1_intrusion(i: int) -> None:
        hyp[i : i + int(rng.integers(1, 3))] = N1

    def n3_flip(i: int) -> None:
        hyp[i : i + int(rng.integers(1, 4))] = N2

    scatter(profile.waso_rate, (N2, N3, REM, N1), awakening)
    scatter(n1_rate, (N2, REM), n1_intrusion)
    scatter(n3_flip_rate, (N3,), n3_flip)
    hyp[:sleep_start] = W
    return hyp


# --- generator 2: whole nights with age-dependent architecture ------------------------------------
# Ohayon et al. 2004 (Sleep 27:1255, meta-analysis of 65 studies, 3,577 subjects): from 20 to 70 y slow-wave
# sleep falls from ~20 % to ~8 % of total sleep time (~ -2.4 %/decade, levelling after 60), REM from ~23 %
# to ~18 %, N1 rises from ~5 % to ~8 %, sleep efficiency falls from ~95 % to ~85 % (WASO from ~10 to ~60 min);
# children (5-12 y) spend ~25-30 % in slow-wave sleep and ~20 % in REM (Ohayon 2004, Scholle 2011).
TIME_IN_BED_H = (7.0, 9.0)  # lights off to lights on
CYCLE_MIN = (90.0, 10.0)  # NREM-REM cycle length, mean and sd (Carskadon & Dement; Feinberg & Floyd 1979)
REM_CYCLE_WEIGHTS = (0.45, 0.9, 1.1, 1.3, 1.4, 1.4, 1.4)  # REM periods lengthen towards morning
N3_CYCLE_WEIGHTS = (1.0, 0.55, 0.2, 0.08, 0.04, 0.0, 0.0)  # slow-wave sleep front-loaded


def architecture_targets(age: float, paediatric: bool) -> dict[str, float]:
    """Fractions of total sleep time in REM, N3 and N1 at ``age`` (Ohayon 2004), before per-subject scaling."""
    if paediatric:
        return {"rem": 0.21, "n3": 0.27, "n1": 0.05}
    a = float(np.clip(age, 20.0, 90.0))
    n3 = 0.20 - 0.0024 * min(a - 20.0, 40.0) - 0.0005 * max(a - 60.0, 0.0)
    return {"rem": 0.235 - 0.001 * (a - 20.0), "n3": max(n3, 0.04), "n1": 0.05 + 0.0006 * (a - 20.0)}


def whole_night_hypnogram(profile: SubjectProfile, rng: np.random.Generator, paediatric: bool = False
                          ) -> np.ndarray:
    """Stages of one whole night (7-9 h in bed) with the age-dependent architecture of :func:`architecture_targets`.

    Cycles of ~90 min; REM minutes per cycle grow towards morning, N3 minutes are front-loaded, both spread
    between subjects (and by sex) around the age targets; brief awakenings at the subject's rate.
    """
    hours = float(rng.uniform(*TIME_IN_BED_H))
    n_epochs = round(hours * 3600.0 / EPOCH_SEC)
    age = profile.age
    target = architecture_targets(age, paediatric)
    sol_median = 18.0 if paediatric else 10.0 + 0.08 * max(age - 30.0, 0.0)
    stages: list[int] = [W] * _epochs(rng.lognormal(np.log(sol_median), 0.45))
    sleep_min = n_epochs / 2 - len(stages) / 2
    # the last cycle is cut by lights on and awakenings replace some sleep: aim the cycles' sleep a little higher
    n_cycles = max(round(sleep_min / CYCLE_MIN[0]), 1)
    sleep_min *= 1.12
    rem_w = np.asarray(REM_CYCLE_WEIGHTS[:n_cycles] + (1.4,) * max(n_cycles - 7, 0))
    n3_w = np.asarray(N3_CYCLE_WEIGHTS[:n_cycles] + (0.0,) * max(n_cycles - 7, 0))
    # between-subject spread around the age targets; men have less slow-wave sleep (Redline 2004, SHHS)
    sex_n3 = {"M": 0.85, "F": 1.15}.get(profile.sex, 1.0)
    rem_min = target["rem"] * sleep_min * rng.uniform(0.85, 1.15) * rem_w / rem_w.sum()
    n3_min = target["n3"] * sleep_min * sex_n3 * rng.uniform(0.7, 1.3) * n3_w / max(n3_w.sum(), 1e-9)
    for cycle in range(n_cycles + 1):
        if len(stages) >= n_epochs:
            break
        k = min(cycle, n_cycles - 1)
        length = rng.normal(*CYCLE_MIN) * (0.9 if cycle == 0 else 1.0)
        rem = rem_min[k] * rng.uniform(0.75, 1.25)
        n3 = n3_min[k] * rng.uniform(0.7, 1.3)
        n1 = target["n1"] * length * (1.2 if cycle == 0 else 0.3) * rng.uniform(0.6, 1.4)
        n2 = max(length - rem - n3 - n1, 10.0)
        n2_before = n2 * rng.uniform(0.45, 0.7)
        for st, minutes in ((N1, n1), (N2, n2_before), (N3, n3), (N2, n2 - n2_before), (REM, rem)):
            if minutes > 0.5:
                stages += [st] * _epochs(minutes)
    hyp = np.asarray((stages + [N2] * n_epochs)[:n_epochs], dtype=np.int8)
    hyp = _interrupt(hyp, profile, rng, n1_rate=0.7, n3_flip_rate=3.0)
    tail = int(rng.integers(0, 20))  # awake in the morning before lights on
    if tail:
        hyp[-tail:] = W
    return hyp


def night_window(n_night: int, n_window: int, rng: np.random.Generator) -> int:
    """First epoch of a window of ``n_window`` epochs drawn uniformly within a night of ``n_night`` epochs."""
    if n_window >= n_night:
        return 0
    return int(rng.integers(0, n_night - n_window + 1))

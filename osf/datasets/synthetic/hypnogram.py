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
    scatter(3.0, (N2, REM), n1_intrusion)
    scatter(4.0, (N3,), n3_flip)
    hyp[:sleep_start] = W
    return hyp

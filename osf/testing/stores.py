"""Small random epoch stores for tests, benchmarks and examples (not used by the library itself).

Signals depend on their labels (each stage has its own EEG rhythm and EMG/EOG levels, arousals raise
the chin EMG, hypopneas damp breathing), so probes and classifiers trained on them learn something.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from osf import config
from osf.datasets.recording import RecordingEpochs
from osf.datasets.store import StoreWriter

# Per-stage signatures: dominant EEG frequency (Hz), EEG amplitude, chin-EMG amplitude, EOG amplitude.
_STAGE_EEG_HZ = np.array([10.0, 6.0, 13.0, 1.5, 7.0])
_STAGE_EEG_AMP = np.array([0.6, 0.8, 1.0, 2.5, 0.7])
_STAGE_EMG_AMP = np.array([1.5, 0.8, 0.6, 0.5, 0.15])
_STAGE_EOG_AMP = np.array([1.0, 0.5, 0.2, 0.2, 2.0])


def random_recording(n_epochs: int, rng: np.random.Generator, missing: Sequence[str] = ()) -> RecordingEpochs:
    """A random `RecordingEpochs` whose signals depend on its labels (stage, arousal, hypopnea, desaturation).

    Stages come in short runs covering all five stages; each stage has its own EEG rhythm and EMG/EOG levels, arousals
    raise the chin EMG, hypopneas damp the respiratory channels, desaturations slow them. Some stages
    are -1 (unscored). Channels in `missing` are zero and masked out.
    """
    t = np.arange(config.EPOCH_SAMPLES) / config.SAMPLE_RATE
    # Runs of 2-5 epochs walking through shuffled rounds of all 5 stages: every stage is frequent
    # even in a short recording, so tiny stores still support k-shot and per-class metrics.
    n_rounds = n_epochs // 10 + 2
    cycle = np.concatenate([rng.permutation(5) for _ in range(n_rounds)])
    stage = np.repeat(cycle, rng.integers(2, 6, size=cycle.size))[:n_epochs].astype(np.int8)
    arousal = (rng.random(n_epochs) < 0.25).astype(np.int8)
    hypopnea = (rng.random(n_epochs) < 0.2).astype(np.int8)
    desat = np.where(hypopnea == 1, rng.random(n_epochs) < 0.8, rng.random(n_epochs) < 0.1).astype(np.int8)
    apnea = (rng.random(n_epochs) < 0.1).astype(np.int8)

    x = rng.normal(0.0, 0.3, size=(n_epochs, config.NUM_CHANNELS, config.EPOCH_SAMPLES)).astype(np.float32)
    ch = config.CHANNEL_INDEX
    phase = rng.uniform(0, 2 * np.pi, size=(n_epochs, 1))
    eeg = _STAGE_EEG_AMP[stage][:, None] * np.sin(2 * np.pi * _STAGE_EEG_HZ[stage][:, None] * t + phase)
    for name in ("EEG_C3_A2", "EEG_C4_A1"):
        x[:, ch[name]] += eeg
    eog = _STAGE_EOG_AMP[stage][:, None] * np.sin(2 * np.pi * 0.5 * t + phase)
    x[:, ch["EOG_E1_A2"]] += eog
    x[:, ch["EOG_E2_A1"]] -= eog
    emg_amp = _STAGE_EMG_AMP[stage] * (1.0 + 1.5 * arousal)
    x[:, ch["EMG_Chin"]] *= emg_amp[:, None] / 0.3
    heart = np.sin(2 * np.pi * 1.1 * t) ** 15
    x[:, ch["ECG"]] += 2.0 * heart
    resp_amp = np.where(hypopnea == 1, 0.3, 1.5)
    resp_hz = np.where(desat == 1, 0.15, 0.25)
    resp = resp_amp[:, None] * np.sin(2 * np.pi * resp_hz[:, None] * t + phase)
    for name in ("ABD", "THX", "NP", "SN"):
        x[:, ch[name]] += resp
    np.clip(x, -6, 6, out=x)

    stage[rng.random(n_epochs) < 0.05] = -1
    mask = np.ones((n_epochs, config.NUM_CHANNELS), dtype=bool)
    for name in missing:
        mask[:, ch[name]] = False
        x[:, ch[name]] = 0.0
    return RecordingEpochs(
        signals=x,
        channel_mask=mask,
        labels={
            "stage": stage,
            "arousal": arousal,
            "hypopnea": hypopnea,
            "oxygen_desaturation": desat,
            "apnea": apnea,
        },
        quality={"clipped_frac": (np.abs(x) >= 6).mean(axis=(1, 2)).astype(np.float32)},
        qc={"generator": "osf.testing.stores.random_recording", "missing_channels": list(missing)},
        source_path=None,
        duration_s=float(n_epochs * config.EPOCH_SEC),
    )


def make_random_store(
    root: str | os.PathLike,
    n_subjects: int = 6,
    n_epochs: int = 40,
    seed: int = 0,
    datasets: Sequence[str] = ("synth",),
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    cohort_groups: Mapping[str, str] | None = None,
) -> Path:
    """Write and finalize a small store of label-correlated random recordings; returns its root.

    Per dataset: `n_subjects` subjects with one `n_epochs` recording each; the first subject also has
    a second visit, and the second subject has no EEG (its EEG channels masked out).
    """
    rng = np.random.default_rng(seed)
    writer = StoreWriter(root, overwrite=True, pipeline={"generator": "make_random_store", "seed": seed})
    for dataset in datasets:
        for s in range(n_subjects):
            visits = 2 if s == 0 else 1
            missing = ("EEG_C3_A2", "EEG_C4_A1") if s == 1 else ()
            for v in range(1, visits + 1):
                rec = random_recording(n_epochs, rng, missing)
                writer.write_recording(dataset, f"{dataset}-s{s:03d}-v{v}", f"s{s:03d}", v, rec, source={})
    return writer.finalize(split_fractions=split_fractions, seed=seed, cohort_groups=cohort_groups)

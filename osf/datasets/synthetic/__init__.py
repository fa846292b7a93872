"""Synthetic PSG cohorts: real EDF + NSRR XML nights with physiology driven by a hypnogram."""

from osf.datasets.synthetic.cohorts import COHORT_PRESETS, ChannelSpec, CohortPreset, get_preset
from osf.datasets.synthetic.events import ScoredEvent
from osf.datasets.synthetic.generate import GENERATOR_VERSION, SyntheticNight, generate_cohort, generate_night

__all__ = [
    "COHORT_PRESETS",
    "GENERATOR_VERSION",
    "ChannelSpec",
    "CohortPreset",
    "ScoredEvent",
    "SyntheticNight",
    "generate_cohort",
    "generate_night",
    "get_preset",
]

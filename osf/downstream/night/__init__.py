"""Night-level prediction: a property of a night or a person (AHI >= 15, age, sex, a condition) from a frozen backbone.

Frozen backbone -> epoch embeddings per night (the linear probe's feature cache, same key, so a Stage
probe and a night-level run share one extraction) -> a night model trained in seconds. Splits are the
store's subject-level splits; confidence intervals resample subjects.

- :mod:`.tables`: targets from the cohorts' subject/visit tables (``NightTarget``, ``lookup_target``, ``encode_target``);
- :mod:`.nights`: nights assembled from cached epoch features (``NightSet``, ``group_nights``, ``night_sets``);
- :mod:`.models`: the night models, their training, prediction and files (``NightModel``, ``train_night_model``);
- :mod:`.metrics`: night-level metrics with subject-bootstrap CIs (``evaluate_nights``);
- :mod:`.run`: the run of ``main_finetune.py --eval_level night`` (``run_night_level``), set by
  :class:`osf.downstream.run_config.NightConfig`.
"""

from osf.downstream.night.metrics import classification_scalars, evaluate_nights, regression_scalars
from osf.downstream.night.models import (
    LINEAR_READOUT_MODELS,
    READOUT_PENALTIES,
    NightFit,
    NightModel,
    load_night_model,
    pad_nights,
    predict_nights,
    save_night_model,
    train_night_model,
)
from osf.downstream.night.nights import NightSet, check_night_counts, group_night_labels, group_nights, night_sets
from osf.downstream.night.run import check_night_config, run_night_level
from osf.downstream.night.tables import (
    EncodedTarget,
    NightTarget,
    SubjectTable,
    available_variables,
    encode_target,
    find_subject_tables,
    load_subject_tables,
    lookup_target,
    normalise_id,
)
from osf.downstream.run_config import NIGHT_MODELS, NightConfig

__all__ = [
    "LINEAR_READOUT_MODELS", "NIGHT_MODELS", "READOUT_PENALTIES", "EncodedTarget", "NightConfig", "NightFit",
    "NightModel", "NightSet", "NightTarget", "SubjectTable", "available_variables", "check_night_config",
    "check_night_counts", "classification_scalars", "encode_target", "evaluate_nights", "find_subject_tables",
    "group_night_labels", "group_nights", "load_night_model", "load_subject_tables", "lookup_target", "night_sets",
    "normalise_id", "pad_nights", "predict_nights", "regression_scalars", "run_night_level", "save_night_model",
    "train_night_model",
]

"""Sequence context: an epoch labelled from its +-K neighbours' cached embeddings (``--context_epochs K``).

- :mod:`.heads`: the sequence heads (transformer, bidirectional GRU), their windows, training and prediction;
- :mod:`.run`: the run beside the per-epoch probe (``run_sequence_level``), set by
  :class:`osf.downstream.run_config.SequenceConfig`.
"""

from osf.downstream.run_config import SEQUENCE_MODELS, SequenceConfig
from osf.downstream.sequence.heads import (
    ContextData,
    NightLayout,
    SequenceFit,
    SequenceHead,
    context_data,
    paired_difference,
    predict_sequence_proba,
    sequence_head_from_payload,
    sequence_head_payload,
    train_sequence_head,
)

__all__ = [
    "SEQUENCE_MODELS", "ContextData", "NightLayout", "SequenceConfig", "SequenceFit", "SequenceHead", "context_data",
    "paired_difference", "predict_sequence_proba", "sequence_head_from_payload", "sequence_head_payload",
    "train_sequence_head",
]

"""Downstream evaluation of pre-trained backbones on sleep tasks.

- ``loading.load_any_backbone``: Lightning ``.ckpt`` of any method, exported ``.pth``/``.safetensors``, or random init.
- ``features``: frozen-backbone features with an on-disk cache keyed by backbone and split hashes.
- ``linear_probe`` / ``finetune`` / ``fewshot``: the three settings; ``losses``: CE, focal, balanced softmax.
- ``metrics``: staging and event metrics with subject-level bootstrap CIs.
- ``classifier``: ``SleepClassifier`` files (weights-only) for ``main_predict.py``; ``merge_classifiers``.
- ``results`` / ``report``: run JSON, append-only ``results.csv``, benchmark table and figures.
- ``run_config.DownstreamConfig`` / ``inputs``: a run's flags, and what it loads once (backbone, store, splits, features).
- ``selection.train_with_validation``: the AdamW + cosine loop with model selection on validation (probe, sequence, night).
- ``pipeline.run_downstream``: one run end to end (``main_pipelines/main_finetune.py``); ``sequence_run`` and
  ``night`` the sequence-context and night-level runs it dispatches to.
"""

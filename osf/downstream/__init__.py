"""Downstream evaluation of pre-trained backbones on sleep tasks, by level.

Levels (each reads its own part of ``run_config.DownstreamConfig``):

- ``epoch``: each epoch from its own features: ``linear_probe`` / ``finetune`` / ``fewshot`` and the ``run``;
- ``sequence``: an epoch from its +-K neighbours' embeddings (``--context_epochs``): ``heads`` and the ``run``;
- ``night``: a property of the night or the person: ``tables``, ``nights``, ``models``, ``metrics`` and the ``run``.

Shared by the levels:

- ``run_config``: the typed configuration (``DownstreamConfig`` + ``ProbeConfig`` / ``FinetuneConfig`` /
  ``SequenceConfig`` / ``NightConfig``) and the flags of ``main_finetune.py`` built from it;
- ``inputs``: what a run loads once (backbone, store, splits, features); ``loading.load_any_backbone``: Lightning
  ``.ckpt`` of any method, exported ``.pth``/``.safetensors``, or random init;
- ``features``: frozen-backbone features with an on-disk cache keyed by backbone and split hashes;
- ``selection.train_with_validation``: the AdamW + cosine loop with model selection on validation; ``losses``;
- ``metrics``: staging and event metrics with subject-level bootstrap CIs;
- ``classifier``: ``SleepClassifier`` files (weights-only) for ``main_predict.py``; ``merge_classifiers``;
- ``results`` / ``report``: run JSON, append-only ``results.csv``, benchmark table and figures;
- ``ceilings``: handcrafted-feature and supervised-CNN ceilings (``main_ceiling.py``, ``CeilingConfig``);
- ``pipeline.run_downstream``: one run (``main_pipelines/main_finetune.py``), dispatched to its level.
"""

"""Epoch-level evaluation: each 30 s epoch labelled from its own backbone features.

- :mod:`.linear_probe`: a linear head on cached frozen features (``ProbeConfig``);
- :mod:`.finetune`: full fine-tuning with Lightning, layer-wise lr decay, LP-FT (``FinetuneConfig``);
- :mod:`.fewshot`: k labelled epochs per class, aggregated over seeds;
- :mod:`.run`: the run of ``main_finetune.py`` at the epoch level (``run_epoch_level``).
"""

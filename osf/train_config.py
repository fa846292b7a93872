"""Named training recipes and per-size settings, as typed overrides of the configurations.

A method's defaults are its configuration's (``osf.models.dino.DINOConfig``, ...; the shared ones in
``osf.models.base.MethodConfig``) and a run's are :class:`osf.models.pretrain_config.RunConfig`'s.
What is here only changes some of them, in this order (later wins): the method's defaults, the
backbone size's (:data:`BACKBONE_DEFAULTS`), the recipe's (:data:`RECIPES`, ``--recipe``), the
command-line flags. The repository-root ``train_config.py`` re-exports this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BACKBONE_DEFAULTS", "DOWNSTREAM_DEFAULTS", "RECIPES", "Recipe", "SizeDefaults", "get_recipe"]


# --- Pre-training (osf.models, main_pipelines/main_pretrain.py) --------------------------------
@dataclass(frozen=True)
class SizeDefaults:
    """Per backbone size: a per-device batch that fits an 80 GB GPU in bf16, and stochastic depth."""

    batch_size: int
    drop_path_rate: float


BACKBONE_DEFAULTS: dict[str, SizeDefaults] = {
    "vit_pico": SizeDefaults(batch_size=256, drop_path_rate=0.0),
    "vit_nano": SizeDefaults(batch_size=256, drop_path_rate=0.0),
    "vit_tiny": SizeDefaults(batch_size=256, drop_path_rate=0.0),
    "vit_small": SizeDefaults(batch_size=256, drop_path_rate=0.0),
    "vit_middle": SizeDefaults(batch_size=256, drop_path_rate=0.0),
    "vit_base": SizeDefaults(batch_size=256, drop_path_rate=0.0),
    "vit_large": SizeDefaults(batch_size=128, drop_path_rate=0.1),
    "vit_xl": SizeDefaults(batch_size=64, drop_path_rate=0.1),
}


@dataclass(frozen=True)
class Recipe:
    """A named set of overrides: of the run's fields (``RunConfig``) and of each method's config fields."""

    name: str
    summary: str
    run: Mapping[str, Any] = field(default_factory=dict)
    methods: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # The backbone main_export.py takes by default from a run of this recipe (methods without a teacher
    # always give their student): the one that probes better at the recipe's scale.
    export: str = "teacher"

    def method_overrides(self, method: str) -> dict[str, Any]:
        """The fields this recipe sets for ``method`` (canonical name)."""
        return dict(self.methods.get(method, {}))


# The small-scale recipe's DINO settings: the study behind them is in benchmarks/README.md
# ("Pre-training that learns at small scale"). Its lr is per 256 samples, scaled with the global batch.
_SMALL_DINO: dict[str, Any] = {
    "lr": 8e-3,  # per 256 samples: 1e-3 at batch 32; at 2.5e-4 the backbone barely leaves its init in 200 steps
    # At init CLS outputs are near-parallel: a CLS-reading teacher stays uniform. The patch mean trains what
    # CLS/mean probes read (SleepBench-mini); the quick start, whose probes read the channel groups, passes
    # --head_pooling groups (benchmarks/README.md, part 6: with it SleepBench's OSF row loses its event gains).
    "head_pooling": "mean",
    # iBOT (masked patch tokens through the head) is what makes the student's CLS probe well on staging and
    # on all three events; the DINO term alone teaches channel invariance that costs the events.
    "ibot_lambda": 2.0,
    "dino_hidden_dim": 512,  # 2048 is sized for ViT-S+; for vit_nano it made iBOT's per-token head cost a step
    "dino_out_dim": 256,
    "teacher_temp": 0.015,  # 0.02 ends at 0.84 log K with iBOT; 0.015 at 0.75 and probes as well or better
    "warmup_teacher_temp": 0.015,
    "momentum_base": 0.99,  # the teacher must move within a few hundred steps
    "warmup_frac": 0.1,
    "freeze_last_layer_frac": 0.1,
    "koleo_lambda": 0.1,
    "n_local_views": 0,  # 20-50% crops stretched 2-5x teach invariance to the respiratory events' cues
    "global_crop_scale": (0.8, 1.0),
}
# The baselines' published lr (1.5e-4 per 256 samples, MAE's) is for hundreds of epochs; scaled to
# batch 32 it barely moves a network in a few hundred steps. The small recipe gives them 2e-3 (DINO's
# small rate before the iBOT study raised it to 8e-3; not swept for the baselines, which learn at 2e-3).
_BASELINES: tuple[str, ...] = ("simclr", "sleepfm", "mae", "vqvae", "ar")
_SMALL_BASELINE: dict[str, Any] = {"lr": 2e-3, "warmup_frac": 0.1}
RECIPES: dict[str, Recipe] = {
    "osf": Recipe("osf", "the published recipe: every default as it is (vit_base on GPUs)"),
    "small": Recipe(
        "small", "minutes on a CPU (vit_nano, a few hundred steps), the quick start's",
        run={"lr_base_batch": 256, "batch_size": 32},
        methods={"dino_ours": _SMALL_DINO, "dino": _SMALL_DINO, **{m: _SMALL_BASELINE for m in _BASELINES}},
        export="student",  # a few hundred steps leave the EMA teacher behind: its student probes better
    ),
}


def get_recipe(name: str) -> Recipe:
    """The recipe ``name``; ``ValueError`` listing the choices otherwise."""
    if name not in RECIPES:
        raise ValueError(f"unknown --recipe {name!r}; choose one of {sorted(RECIPES)}")
    return RECIPES[name]


# --- Downstream evaluation (osf.downstream, main_pipelines/main_finetune.py) ---------------------
# Per setting; a flag given on the command line overrides each. The probe trains on standardised
# cached features (hence the large lr); fine-tuning gives the backbone lr * backbone_lr_scale.
DOWNSTREAM_DEFAULTS: dict[str, dict] = {
    "linear_probe": {"lr": 1e-2, "max_steps": 500, "batch_size": 256, "weight_decay": 1e-4, "eval_every": 50,
                     "layer_decay": 1.0, "warmup_steps": 0},
    "finetune": {"lr": 1e-3, "max_steps": 2000, "batch_size": 64, "weight_decay": 0.05, "eval_every": 100,
                 "layer_decay": 0.75, "warmup_steps": 100},
}

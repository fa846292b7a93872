"""Training defaults: per SSL method and per backbone size. Entry points read these; flags override."""

from __future__ import annotations

# --- Pre-training (osf.models, main_pipelines/main_pretrain.py) --------------------------------
# Run-level defaults of main_pretrain.py; a flag on the command line overrides each.
PRETRAIN_RUN_DEFAULTS: dict = {
    "batch_size": 256,  # per device
    "max_epochs": 30,
    "precision": "32-true",  # "bf16-mixed" on GPUs (the published recipe)
    "ckpt_every_n_steps": 1000,
    "log_every_n_steps": 50,
    "probe_label": "Stage",  # online linear probe target when the store has it
}

# Constructor kwargs of each method (osf.models.registry.METHODS[name]). Other methods add entries.
_DINO_COMMON: dict = {
    "lr": 5e-5,
    "min_lr_ratio": 0.0,
    "weight_decay": 0.2,
    "betas": (0.9, 0.95),
    "grad_clip": 3.0,
    # OSF's release states no LR warm-up; a short linear warm-up protects AdamW's first steps.
    "warmup_frac": 0.05,
    "dino_out_dim": 2048,
    "dino_hidden_dim": 2048,
    "dino_bottleneck_dim": 256,
    "student_temp": 0.1,
    "warmup_teacher_temp": 0.04,
    "teacher_temp": 0.07,
    "teacher_temp_warmup_frac": 0.1,
    "center_momentum": 0.9,
    "momentum_base": 0.996,
    "momentum_final": 1.0,
    "n_global_views": 2,
    "n_local_views": 2,
    "ibot_lambda": 0.0,
    "ibot_mask_ratio": 0.3,
    "koleo_lambda": 0.0,
    "head_pooling": "cls",  # what the DINO head reads (the released recipe trains the CLS token)
    "freeze_last_layer_frac": 0.0,  # DINO freezes the prototypes for its first epoch; the OSF release does not
}
METHOD_DEFAULTS: dict[str, dict] = {
    # OSF counts same-view (i, i) pairs in the DINO loss; standard DINO does not.
    "dino_ours": {**_DINO_COMMON, "same_view_pairs": True, "channel_drop_p": 0.5, "span_min_frac": 0.3, "span_max_frac": 0.6},
    "dino": {**_DINO_COMMON, "same_view_pairs": False},
}

# Baseline objectives of the SleepBench comparison (issue 7). AdamW recipes of MAE / MoCo v3 for ViTs
# (lr 1.5e-4 at batch 256, betas (0.9, 0.95)); the same warm-up and clipping as the DINO methods.
_BASELINE_COMMON: dict = {
    "lr": 1.5e-4,
    "min_lr_ratio": 0.0,
    "weight_decay": 0.05,
    "betas": (0.9, 0.95),
    "grad_clip": 3.0,
    "warmup_frac": 0.05,
}
METHOD_DEFAULTS.update({
    "simclr": {**_BASELINE_COMMON, "weight_decay": 0.1, "temperature": 0.1, "proj_hidden_dim": 2048,
               "proj_output_dim": 128, "crop_min_scale": 0.5, "noise_std": 0.05},
    "sleepfm": {**_BASELINE_COMMON, "proj_dim": 128, "init_temperature": 0.07, "learn_temperature": True,
                "separate_backbones": False},
    "mae": {**_BASELINE_COMMON, "mask_ratio": 0.75, "decoder_width": 256, "decoder_depth": 4, "decoder_heads": 8,
            "norm_target": False},
    "vqvae": {**_BASELINE_COMMON, "codebook_size": 8192, "code_dim": 32, "commitment_weight": 0.25, "vq_ema": True,
              "ema_decay": 0.99, "dead_code_threshold": 1.0, "decoder_width": 256, "decoder_depth": 4,
              "decoder_heads": 8},
    "ar": {**_BASELINE_COMMON},
})

# --- Named recipes (main_pretrain.py --recipe) -----------------------------------------------------
# Overrides of the defaults above, applied before the command-line flags. "osf" is the published recipe
# (the defaults as they are; the one for vit_base on GPUs). "small" is for runs of minutes on a CPU
# (vit_nano, a few hundred steps): the study behind its values is in benchmarks/README.md ("Pre-training
# that learns at small scale"). Its lr is per 256 samples and scaled with the global batch.
_SMALL_DINO: dict = {
    "lr": 2e-3,  # per 256 samples: 2.5e-4 at batch 32
    "head_pooling": "mean",  # at init CLS outputs are near-parallel: a CLS-reading teacher stays uniform
    "dino_out_dim": 256,
    "teacher_temp": 0.02,
    "warmup_teacher_temp": 0.02,
    "momentum_base": 0.99,  # the teacher must move within a few hundred steps
    "warmup_frac": 0.1,
    "freeze_last_layer_frac": 0.1,
    "koleo_lambda": 0.1,
    "n_local_views": 0,  # 20-50% crops stretched 2-5x teach invariance to the respiratory events' cues
    "global_crop_scale": (0.8, 1.0),
}
RECIPES: dict[str, dict] = {
    "osf": {"run": {}, "methods": {}},
    "small": {
        "run": {"lr_base_batch": 256, "batch_size": 32},
        "methods": {"dino_ours": dict(_SMALL_DINO), "dino": dict(_SMALL_DINO)},
    },
}

# Per backbone size: a per-device batch that fits a 80 GB GPU in bf16, and stochastic depth.
BACKBONE_DEFAULTS: dict[str, dict] = {
    "vit_nano": {"batch_size": 256, "drop_path_rate": 0.0},
    "vit_tiny": {"batch_size": 256, "drop_path_rate": 0.0},
    "vit_small": {"batch_size": 256, "drop_path_rate": 0.0},
    "vit_middle": {"batch_size": 256, "drop_path_rate": 0.0},
    "vit_base": {"batch_size": 256, "drop_path_rate": 0.0},
    "vit_large": {"batch_size": 128, "drop_path_rate": 0.1},
    "vit_xl": {"batch_size": 64, "drop_path_rate": 0.1},
}

# --- Downstream evaluation (osf.downstream, main_pipelines/main_finetune.py) ---------------------
# Per setting; a flag given on the command line overrides each. The probe trains on standardised
# cached features (hence the large lr); fine-tuning gives the backbone lr * backbone_lr_scale.
DOWNSTREAM_DEFAULTS: dict[str, dict] = {
    "linear_probe": {"lr": 1e-2, "max_steps": 500, "batch_size": 256, "weight_decay": 1e-4, "eval_every": 50,
                     "layer_decay": 1.0, "warmup_steps": 0},
    "finetune": {"lr": 1e-3, "max_steps": 2000, "batch_size": 64, "weight_decay": 0.05, "eval_every": 100,
                 "layer_decay": 0.75, "warmup_steps": 100},
}

"""Keep runs quiet: Lightning's banners and tips, and third-party deprecations a user cannot act on.

Called where OSF builds a ``Trainer``. What stays: every warning about the user's data, flags or
results (OSF's own, and Lightning's about e.g. checkpoints), and Lightning's informative lines
(the DDP start-up banner, checkpoint restores).
"""

from __future__ import annotations

import logging
import re
import warnings

# Loggers Lightning's info lines come from (rank_zero_info goes through whichever of the first two
# was imported last; seed_everything logs through the third).
LIGHTNING_INFO_LOGGERS: tuple[str, ...] = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
    "lightning_fabric.utilities.seed",
)
# Parents of every Lightning logger (for tests that collect what would be printed).
LIGHTNING_LOGGERS: tuple[str, ...] = ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric")

# Info lines that are banners or advertising, not news about the run.
NOISE_LOG_LINES = re.compile(
    r"^(💡 Tip:"  # litlogger / litmodels advertising
    r"|(GPU|TPU|HPU|IPU) available:"  # accelerator banners (OSF prints its own device)
    r"|Seed set to"
    r"|`Trainer\.fit` stopped: `max_(steps|epochs)=\d+` reached"
    r"|`Trainer\(\w+=.*\)` was configured"  # echoes of OSF's own Trainer flags
    r"|LOCAL_RANK: \d+ - CUDA_VISIBLE_DEVICES"
    r"|You are using a CUDA device .* Tensor Cores"  # set_float32_matmul_precision advice; OSF trains in bf16
    r"|Using (16bit|bfloat16) .*Mixed Precision"
    r"|Loading `train_dataloader` to estimate number of stepping batches)"
)

# (message regex, category): advice and deprecations inside Lightning / torch, not about the user's run.
NOISE_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    # Lightning's DataLoader advice; OSF chooses workers per entry point (--num_workers).
    (r".*does not have many workers.*", UserWarning),
    # torch 2.13 deprecates LeafSpec, which pytorch_lightning.utilities._pytree still uses.
    (r".*isinstance\(treespec, LeafSpec\).* is deprecated.*", FutureWarning),
    # Lightning's suggestion to install tensorboardX when no logger is configured.
    (r".*`tensorboardX` has been removed as a dependency.*", UserWarning),
    # Lightning's advice for epochs shorter than log_every_n_steps (tiny stores); OSF logs per step.
    (r".*is smaller than the logging interval.*", UserWarning),
)


class _DropNoise(logging.Filter):
    """Drops the log records matching :data:`NOISE_LOG_LINES`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not NOISE_LOG_LINES.match(record.getMessage())


_FILTER = _DropNoise()


def quiet_lightning() -> None:
    """Drop Lightning's banners and tips and ignore the third-party deprecations in :data:`NOISE_WARNINGS`."""
    for name in LIGHTNING_INFO_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    for message, category in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)

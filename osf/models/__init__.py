"""Self-supervised pre-training methods. Importing the package registers every method module below."""

from osf.models import ar, dino, mae, osf_dino, simclr, sleepfm, vqvae  # noqa: F401  (registration by import)  # noqa: F401  (baselines, issue 7)
from osf.models.pretrain_config import create_method
from osf.models.registry import METHODS, list_methods, register_method

__all__ = ["METHODS", "create_method", "list_methods", "register_method"]

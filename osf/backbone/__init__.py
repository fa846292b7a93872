"""OSF backbone: the OSF-Base-compatible 1D ViT, its constructor registry and checkpoint I/O."""

from osf.backbone.checkpoint import (
    METADATA_KEYS,
    CheckpointError,
    backbone_metadata,
    load_backbone,
    save_backbone,
)
from osf.backbone.vit1d_cls import (
    ATTN_IMPLS,
    BACKBONES,
    ViT1D,
    create_backbone,
    list_backbones,
    register_backbone,
    vit_base,
    vit_large,
    vit_middle,
    vit_nano,
    vit_pico,
    vit_small,
    vit_tiny,
    vit_xl,
)

__all__ = [
    "ATTN_IMPLS",
    "BACKBONES",
    "METADATA_KEYS",
    "CheckpointError",
    "ViT1D",
    "backbone_metadata",
    "create_backbone",
    "list_backbones",
    "load_backbone",
    "register_backbone",
    "save_backbone",
    "vit_base",
    "vit_large",
    "vit_middle",
    "vit_nano",
    "vit_pico",
    "vit_small",
    "vit_tiny",
    "vit_xl",
]

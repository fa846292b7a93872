"""Pre-training checkpoint → backbone: rebuild the encoder of any method's Lightning checkpoint.

Checkpoints written by :class:`osf.models.base.PretrainModule` carry ``checkpoint["osf"]`` with the
method, backbone name and constructor kwargs, so no code or config outside the file is needed.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from osf.backbone.checkpoint import CheckpointError, backbone_metadata, save_backbone
from osf.backbone.vit1d_cls import create_backbone

__all__ = ["WHICH", "backbone_from_lightning_checkpoint", "export_pretrained_backbone"]

log = logging.getLogger(__name__)
WHICH: tuple[str, ...] = ("teacher", "student")
_PREFIX = {"teacher": "teacher_backbone.", "student": "backbone."}


def _read_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(path, "file not found" if not path.exists() else "is not a file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise CheckpointError(path, f"not a readable weights-only torch checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(path, "not a Lightning checkpoint (no 'state_dict')")
    if "osf" not in ckpt:
        raise CheckpointError(path, "not an OSF pre-training checkpoint (no 'osf' entry: written by main_pretrain.py?)")
    return ckpt


def backbone_from_lightning_checkpoint(path: str | os.PathLike, which: str = "teacher") -> tuple[nn.Module, dict]:
    """Backbone of a pre-training checkpoint and its metadata in the released format's terms.

    ``which="teacher"`` takes the momentum teacher (the encoder DINO-style methods evaluate) and falls
    back to the student for methods without one; ``which="student"`` takes the trained student.
    """
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    path = Path(path)
    ckpt = _read_checkpoint(path)
    info = ckpt["osf"]
    state_dict: dict[str, torch.Tensor] = ckpt["state_dict"]
    source = which
    if which == "teacher" and not any(k.startswith(_PREFIX["teacher"]) for k in state_dict):
        log.info("%s: method %s has no teacher; exporting the student", path, info.get("method"))
        source = "student"
    prefix = _PREFIX[source]
    state = {}
    for key, value in state_dict.items():
        if key.startswith(prefix):
            # torch.compile wraps modules as `_orig_mod`; the released layout has no such level.
            state[key[len(prefix):].replace("_orig_mod.", "")] = value
    if not state:
        raise CheckpointError(path, f"no '{prefix}*' weights in the state_dict")
    kwargs = dict(info.get("backbone_kwargs") or {})
    kwargs["use_mask_token"] = "mask_token" in state
    try:
        model = create_backbone(info["backbone_name"], **kwargs)
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(path, f"cannot rebuild backbone {info.get('backbone_name')!r} with {kwargs}: {err}") from err
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(path, f"{source} weights do not fit {info['backbone_name']}: missing {missing}, unexpected {unexpected}")
    model.eval()
    metadata = backbone_metadata(model, model_name=str(info.get("method", "osf")))
    metadata["exported_from"] = source
    return model, metadata


def export_pretrained_backbone(ckpt_path: str | os.PathLike, output: str | os.PathLike, which: str = "teacher") -> tuple[Path, Path]:
    """Write the backbone of ``ckpt_path`` as ``output`` (.pth, released format) and its .safetensors twin."""
    model, metadata = backbone_from_lightning_checkpoint(ckpt_path, which)
    return save_backbone(model, output, metadata)

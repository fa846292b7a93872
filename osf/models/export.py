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
from osf.backbone.vit1d_cls import create_backbone, state_has_mask_token
from osf.models.base import WHICH, PretrainModule
from osf.models.registry import METHODS, resolve_method_name
from osf.train_config import RECIPES

__all__ = ["WHICH", "backbone_from_lightning_checkpoint", "export_pretrained_backbone"]

log = logging.getLogger(__name__)


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


class BackboneShapeError(CheckpointError):
    """Tensors of a checkpoint whose shapes differ from the backbone it names (the first one is named)."""


def _method_class(path: Path, info: dict[str, Any]) -> type[PretrainModule]:
    """The registered method that wrote the checkpoint: it knows where its backbones are."""
    try:
        return METHODS[resolve_method_name(str(info.get("method")))]
    except ValueError as err:
        raise CheckpointError(path, str(err)) from err


def _rebuild(path: Path, info: dict[str, Any], state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """The backbone the checkpoint names, holding ``state``."""
    kwargs = dict(info.get("backbone_kwargs") or {})
    kwargs["use_mask_token"] = state_has_mask_token(state)
    try:
        model = create_backbone(info["backbone_name"], **kwargs)
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(path, f"cannot rebuild backbone {info.get('backbone_name')!r} with {kwargs}: {err}") from err
    expected = model.state_dict()
    wrong = [(k, list(v.shape), list(expected[k].shape)) for k, v in state.items()
             if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:  # named here, for the API too (load_state_dict's message is many lines)
        name, got, want = wrong[0]
        raise BackboneShapeError(
            path, f"its weights do not fit the backbone it names: {len(wrong)} tensors have another shape, e.g. "
            f"{source} tensor {name!r} is {got} where {info['backbone_name']} needs {want}",
        )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(path, f"{source} weights do not fit {info['backbone_name']}: missing {missing}, unexpected {unexpected}")
    return model.eval()


def recipe_export(info: dict[str, Any]) -> str:
    """The backbone the run's recipe exports (``Recipe.export``, recorded as ``recipe_export``); else the teacher."""
    run_config = info.get("run_config") or {}
    recipe = run_config.get("recipe")
    return run_config.get("recipe_export") or (RECIPES[recipe].export if recipe in RECIPES else "teacher")


def backbone_from_lightning_checkpoint(path: str | os.PathLike, which: str | None = None) -> tuple[nn.Module, dict]:
    """Backbone of a pre-training checkpoint and its metadata in the released format's terms.

    ``which="teacher"`` takes the momentum teacher (the encoder DINO-style methods evaluate) and falls
    back to the student for methods without one; ``which="student"`` takes the trained student;
    ``None`` takes what the run's recipe exports (:func:`recipe_export`). The method class that wrote
    the checkpoint picks its weights (:meth:`PretrainModule.backbone_state_from`).
    """
    if which is not None and which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    path = Path(path)
    ckpt = _read_checkpoint(path)
    info = ckpt["osf"]
    which = which or recipe_export(info)
    state, source = _method_class(path, info).backbone_state_from(ckpt["state_dict"], which)
    if source != which:
        log.info("%s: method %s has no %s; exporting the %s", path, info.get("method"), which, source)
    if not state:
        raise CheckpointError(path, f"no {source} backbone weights in the state_dict")
    model = _rebuild(path, info, state, source)
    metadata = backbone_metadata(model, model_name=str(info.get("method", "osf")))
    metadata["exported_from"] = source
    return model, metadata


def export_pretrained_backbone(ckpt_path: str | os.PathLike, output: str | os.PathLike,
                               which: str | None = None) -> tuple[Path, Path]:
    """Write the backbone of ``ckpt_path`` as ``output`` (.pth, released format) and its .safetensors twin;
    ``which`` as :func:`backbone_from_lightning_checkpoint`'s."""
    model, metadata = backbone_from_lightning_checkpoint(ckpt_path, which)
    return save_backbone(model, output, metadata)

"""Backbone checkpoints in the released OSF format (``.pth``) and a ``.safetensors`` twin.

``.pth``: a weights-only loadable dict ``{"state_dict": {name: tensor}, "metadata": {...}}``.
``.safetensors``: the same tensors, with the metadata as JSON under the header key ``osf_metadata``.

``metadata`` carries what is needed to rebuild the model (:data:`METADATA_KEYS`) plus optional
``channels`` and ``normalisation``. :func:`load_backbone` accepts either file and raises
:class:`CheckpointError` (a ``ValueError``) naming the file and the problem for anything it cannot
use.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from osf import config
from osf.backbone.errors import CheckpointError
from osf.backbone.hub import HF_SCHEME, resolve_hub_file
from osf.backbone.vit1d_cls import BACKBONES, ViT1D, create_backbone, list_backbones, state_has_mask_token
from osf.utils.atomic import atomic_path

__all__ = ["HF_SCHEME", "METADATA_KEYS", "CheckpointError", "backbone_metadata", "load_backbone", "save_backbone"]

METADATA_KEYS: tuple[str, ...] = (
    "model_name",
    "encoder_name",
    "num_leads",
    "patch_size_time",
    "patch_size_ch",
    "lead_wise",
    "sample_rate",
    "window_size_sec",
    "seq_len",
    "width",
    "depth",
)
SAFETENSORS_METADATA_KEY = "osf_metadata"
_PTH_SUFFIXES = (".pth", ".pt")
_MAX_LISTED = 20  # names listed in an error before summarising the rest
# torch's weights_only refusal: "Unsupported global: GLOBAL module.Name was not an allowed global ..."
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+) was not an allowed global")


def backbone_metadata(
    model: ViT1D, model_name: str, sample_rate: int = config.SAMPLE_RATE, **extra: Any
) -> dict:
    """Metadata of ``model`` in the released format; ``extra`` adds e.g. ``channels``, ``normalisation``."""
    window = model.seq_len / sample_rate
    metadata = {
        "model_name": model_name,
        "encoder_name": model.encoder_name,
        "num_leads": model.num_leads,
        "patch_size_time": model.patch_size,
        "patch_size_ch": model.patch_size_ch,
        "lead_wise": model.lead_wise,
        "sample_rate": sample_rate,
        "window_size_sec": int(window) if window.is_integer() else window,
        "seq_len": model.seq_len,
        "width": model.width,
        "depth": model.depth,
    }
    if model.num_leads == config.NUM_CHANNELS and "channels" not in extra:
        metadata["channels"] = list(config.CHANNELS)
    metadata.update(extra)
    return metadata


def _twin_paths(path: Path) -> tuple[Path, Path]:
    """``(pth_path, safetensors_path)`` for a path given with either extension."""
    if path.suffix == ".safetensors":
        return path.with_suffix(".pth"), path
    if path.suffix in _PTH_SUFFIXES:
        return path, path.with_suffix(".safetensors")
    raise ValueError(f"backbone path {path} must end in .pth, .pt or .safetensors")


def _structure_mismatches(model: ViT1D, metadata: dict) -> list[str]:
    expected = {
        "encoder_name": model.encoder_name,
        "num_leads": model.num_leads,
        "patch_size_time": model.patch_size,
        "patch_size_ch": model.patch_size_ch,
        "lead_wise": model.lead_wise,
        "seq_len": model.seq_len,
        "width": model.width,
        "depth": model.depth,
    }
    return [
        f"{k}={metadata[k]!r} but the model has {v!r}"
        for k, v in expected.items()
        if k in metadata and metadata[k] != v
    ]


def save_backbone(
    model: ViT1D, path: str | os.PathLike, metadata: dict | None = None, include_mask_token: bool = False
) -> tuple[Path, Path]:
    """Write ``model`` as ``.pth`` + ``.safetensors`` (atomically); returns both paths.

    ``metadata`` defaults to :func:`backbone_metadata` with ``model_name="osf"``. The iBOT/MAE
    ``mask_token`` is left out unless ``include_mask_token`` so the file keeps the released layout.
    """
    from safetensors.torch import save_file

    pth_path, st_path = _twin_paths(Path(path))
    metadata = dict(backbone_metadata(model, "osf") if metadata is None else metadata)
    missing = [k for k in METADATA_KEYS if k not in metadata]
    if missing:
        raise ValueError(
            f"metadata for {pth_path} is missing {missing}; use backbone_metadata(model, model_name)"
        )
    mismatches = _structure_mismatches(model, metadata)
    if mismatches:
        raise ValueError(f"metadata for {pth_path} does not describe the model: {'; '.join(mismatches)}")
    try:
        meta_json = json.dumps(metadata)
    except TypeError as err:
        raise ValueError(f"metadata for {pth_path} is not JSON-serialisable: {err}") from err

    state = {
        k: v.detach().to("cpu", copy=True).contiguous()
        for k, v in model.state_dict().items()
        if include_mask_token or k != "mask_token"
    }
    # Both files are complete in temp siblings before either is renamed into place, and a failed
    # save leaves neither a half file nor a stray temp file behind.
    with atomic_path(pth_path) as tmp_pth, atomic_path(st_path) as tmp_st:
        torch.save({"state_dict": state, "metadata": metadata}, tmp_pth)
        save_file(state, str(tmp_st), metadata={SAFETENSORS_METADATA_KEY: meta_json, "format": "pt"})
    return pth_path, st_path


def refused_pickle_problem(err: pickle.UnpicklingError) -> str:
    """What the safe loader refused, without torch's advice to allowlist the global or load unsafely."""
    text = str(err)
    refused = _REFUSED_GLOBAL.search(text)
    if refused:
        detail = f"refused the global {refused.group(1)}"
    else:
        lines = [ln.strip() for ln in text.splitlines() if "WeightsUnpickler error" in ln]
        detail = (lines[0] if lines else text.strip().splitlines()[0]).split(" Please use")[0]
        detail = "refused it: " + detail.replace("WeightsUnpickler error: ", "")
    return (
        f"is not a plain-tensor checkpoint: torch.load(weights_only=True) {detail} (only tensors, numbers, "
        "strings, lists and dicts load safely); re-save it with osf.backbone.save_backbone or export it "
        "with main_export.py"
    )


def _read_pth(path: Path, map_location: Any) -> tuple[dict, dict]:
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(path, refused_pickle_problem(err)) from err
    except Exception as err:  # truncated zip, not a torch file at all, ...
        raise CheckpointError(path, f"cannot be read by torch.load ({type(err).__name__}: {err})") from err
    if not isinstance(payload, dict):
        raise CheckpointError(
            path, f"holds a {type(payload).__name__}, expected a dict with 'state_dict' and 'metadata'"
        )
    if "state_dict" not in payload or "metadata" not in payload:
        hint = ""
        if "state_dict" in payload and (
            "pytorch-lightning_version" in payload or "optimizer_states" in payload
        ):
            hint = (
                "; this looks like a Lightning training checkpoint: export it with "
                "`python main_pipelines/main_export.py --ckpt_path RUN/last.ckpt --output OUT.pth`"
            )
        elif payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
            hint = "; it is a bare state dict without metadata"
        raise CheckpointError(
            path, f"has keys {sorted(map(str, payload))[:10]}, expected 'state_dict' and 'metadata'{hint}"
        )
    state, metadata = payload["state_dict"], payload["metadata"]
    if not isinstance(state, dict):
        raise CheckpointError(path, f"'state_dict' is a {type(state).__name__}, expected a dict of tensors")
    if not isinstance(metadata, dict):
        raise CheckpointError(path, f"'metadata' is a {type(metadata).__name__}, expected a dict")
    return state, metadata


def _read_safetensors(path: Path, map_location: Any) -> tuple[dict, dict]:
    from safetensors import safe_open

    device = str(map_location) if map_location is not None else "cpu"
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            header = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except Exception as err:  # SafetensorError for a corrupt header/truncated data
        raise CheckpointError(path, f"cannot be read as safetensors ({type(err).__name__}: {err})") from err
    if SAFETENSORS_METADATA_KEY not in header:
        raise CheckpointError(
            path, f"has no {SAFETENSORS_METADATA_KEY!r} entry in its header (header keys: {sorted(header)})"
        )
    try:
        metadata = json.loads(header[SAFETENSORS_METADATA_KEY])
    except json.JSONDecodeError as err:
        raise CheckpointError(path, f"header {SAFETENSORS_METADATA_KEY!r} is not valid JSON ({err})") from err
    if not isinstance(metadata, dict):
        raise CheckpointError(
            path, f"header {SAFETENSORS_METADATA_KEY!r} holds a {type(metadata).__name__}, expected an object"
        )
    return state, metadata


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" ... (+{len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else "")


@contextmanager
def reported_as(source: str, local: Path) -> Iterator[None]:
    """Re-raise a :class:`CheckpointError` about the cached file ``local`` as one about ``source`` (its hf:// URI)."""
    try:
        yield
    except CheckpointError as err:
        if err.source != str(local):
            raise
        raise CheckpointError(source, f"{err.problem} (cached file {local})") from err


def load_backbone(
    path: str | os.PathLike, map_location: Any = "cpu", **model_kwargs: Any
) -> tuple[ViT1D, dict]:
    """Build the backbone described by a ``.pth`` or ``.safetensors`` checkpoint and load its weights.

    ``path`` is a local file or a Hub file ``hf://org/repo[@revision]/file.pth`` (fetched through the
    Hugging Face cache, its ``.safetensors`` twin preferred; :mod:`osf.backbone.hub`); both get the
    same checks. ``model_kwargs`` go to the constructor (e.g. ``attn_impl``, ``drop_path_rate``,
    ``use_mask_token``); structural settings always come from the metadata. Returns the model in
    eval mode and the metadata dict.
    """
    if isinstance(path, str) and path.startswith(HF_SCHEME):
        local = resolve_hub_file(path)
        with reported_as(path, local):
            return _load_file(local, map_location, **model_kwargs)
    return _load_file(Path(path), map_location, **model_kwargs)


def _read_file(path: Path, map_location: Any) -> tuple[dict, dict]:
    """``(state_dict, metadata)`` of a local ``.pth`` or ``.safetensors`` file."""
    if not path.is_file():
        raise CheckpointError(path, "file not found" if not path.exists() else "is not a file")
    if path.suffix == ".safetensors":
        return _read_safetensors(path, map_location)
    return _read_pth(path, map_location)


def _check_contents(path: Path, state: dict, metadata: dict) -> None:
    """Complete metadata naming a registered backbone, and tensors only in the state dict."""
    missing_meta = [k for k in METADATA_KEYS if k not in metadata]
    if missing_meta:
        raise CheckpointError(path, f"metadata is missing {missing_meta} (has {sorted(metadata)})")
    encoder = metadata["encoder_name"]
    if encoder not in BACKBONES:
        raise CheckpointError(path, f"unknown encoder_name {encoder!r}; registered backbones: {list_backbones()}")
    not_tensors = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointError(path, f"state_dict entries that are not tensors: {_listed(not_tensors)}")


def _build_described(path: Path, metadata: dict, with_mask_token: bool, model_kwargs: dict[str, Any]) -> ViT1D:
    """The backbone the metadata describes (structure from the metadata, the rest from ``model_kwargs``)."""
    encoder = metadata["encoder_name"]
    try:
        model = create_backbone(
            encoder,
            num_leads=int(metadata["num_leads"]),
            seq_len=int(metadata["seq_len"]),
            patch_size=int(metadata["patch_size_time"]),
            lead_wise=int(metadata["lead_wise"]),
            patch_size_ch=int(metadata["patch_size_ch"]),
            **model_kwargs,
        )
    except (TypeError, ValueError) as err:
        raise CheckpointError(path, f"metadata does not describe a buildable {encoder}: {err}") from err
    mismatches = [m for m in _structure_mismatches(model, metadata) if m.startswith(("width", "depth"))]
    if mismatches:
        raise CheckpointError(path, f"metadata disagrees with {encoder}: {'; '.join(mismatches)}")
    if with_mask_token:
        model.add_mask_token()
    return model


def _check_state_fits(path: Path, model: ViT1D, state: dict) -> bool:
    """Same names (the mask token may be absent) and shapes as ``model``; True when strict loading applies."""
    encoder = model.encoder_name
    expected = model.state_dict()
    optional = {"mask_token"}  # may be absent from released files; a fresh one is kept then
    missing = sorted(k for k in expected if k not in state and k not in optional)
    unexpected = sorted(k for k in state if k not in expected)
    if missing or unexpected:
        parts = [f"missing keys for {encoder}: {_listed(missing)}"] if missing else []
        parts += [f"unexpected keys: {_listed(unexpected)}"] if unexpected else []
        raise CheckpointError(path, "; ".join(parts))
    wrong_shape = [f"{k} {list(state[k].shape)} vs model {list(v.shape)}"
                   for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if wrong_shape:
        raise CheckpointError(path, f"shape mismatches for {encoder}: {_listed(wrong_shape)}")
    return not (optional & (expected.keys() - state.keys()))


def _placed(model: ViT1D, map_location: Any) -> ViT1D:
    """``model`` on ``map_location`` when that names a device, in eval mode."""
    if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
        model = model.to(map_location)
    return model.eval()


def _load_file(path: Path, map_location: Any, **model_kwargs: Any) -> tuple[ViT1D, dict]:
    """Read, check, build and load a local backbone file (the steps above, in order)."""
    state, metadata = _read_file(path, map_location)
    _check_contents(path, state, metadata)
    model = _build_described(path, metadata, state_has_mask_token(state), model_kwargs)
    strict = _check_state_fits(path, model, state)
    model.load_state_dict(state, strict=strict)
    return _placed(model, map_location), dict(metadata)

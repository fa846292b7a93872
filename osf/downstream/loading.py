"""One loader for every backbone source downstream code accepts.

``--ckpt_path`` may be a Lightning pre-training checkpoint of any method (``.ckpt``), an exported
backbone in the released format (``.pth`` / ``.pt``) or its ``.safetensors`` twin, any of these on
the Hugging Face Hub as ``hf://org/repo[@revision]/file`` (``hf://yang-ai-lab/OSF-Base/osf_backbone.pth``),
or ``none`` for a randomly initialised baseline (then ``--psg_encoder_name`` names the architecture).
In every case the architecture comes from the checkpoint, and the channel contract (12 channels in
``config.CHANNELS`` order, 64 Hz, 30 s windows) is checked before anything is trained.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from osf import config
from osf.backbone.checkpoint import HF_SCHEME, CheckpointError, backbone_metadata, load_backbone, reported_as
from osf.backbone.vit1d_cls import create_backbone

RANDOM_INIT = "none"


def file_hash(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 (16 hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]


def check_channel_contract(metadata: dict, source: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` unless ``metadata`` describes OSF's 12-channel 64 Hz 30 s input."""
    problems = []
    if int(metadata.get("num_leads", -1)) != config.NUM_CHANNELS:
        problems.append(f"num_leads={metadata.get('num_leads')!r}, OSF data has {config.NUM_CHANNELS} channels")
    if int(metadata.get("seq_len", -1)) != config.EPOCH_SAMPLES:
        problems.append(f"seq_len={metadata.get('seq_len')!r}, OSF epochs have {config.EPOCH_SAMPLES} samples")
    if "sample_rate" in metadata and float(metadata["sample_rate"]) != config.SAMPLE_RATE:
        problems.append(f"sample_rate={metadata['sample_rate']!r}, OSF data is {config.SAMPLE_RATE} Hz")
    channels = metadata.get("channels")
    if channels is not None and list(channels) != list(config.CHANNELS):
        problems.append(f"channels {list(channels)} differ from the OSF contract {list(config.CHANNELS)}")
    if problems:
        raise CheckpointError(source, "channel contract mismatch: " + "; ".join(problems))


def _is_lightning_checkpoint(path: Path) -> bool:
    if path.suffix == ".ckpt":
        return True
    if path.suffix == ".safetensors":
        return False
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError):
        return False  # not a plain weights file: let load_backbone produce the precise error
    return isinstance(payload, dict) and "metadata" not in payload and (
        "pytorch-lightning_version" in payload or "optimizer_states" in payload or "hyper_parameters" in payload
    )


def load_any_backbone(
    ckpt_path: str | os.PathLike | None,
    psg_encoder_name: str | None = None,
    which: str = "teacher",
    seed: int = 0,
    **model_kwargs: Any,
) -> tuple[nn.Module, dict, str]:
    """Return ``(backbone, metadata, ckpt_hash)`` for a Lightning ckpt, exported backbone or ``"none"``.

    ``psg_encoder_name`` is required for ``"none"``; with a real checkpoint it is optional and, when
    given, must match the checkpoint's architecture. ``which`` picks teacher or student weights of a
    Lightning checkpoint. ``seed`` draws the random-init weights (the global RNG is left as it was), so
    a random baseline is one reproducible network per seed. ``ckpt_hash`` is the SHA-256 prefix of the
    file (``"random_init"`` for none); an ``hf://`` checkpoint is hashed as the file actually loaded
    (the ``.safetensors`` twin when the Hub has it).
    """
    if ckpt_path is None or str(ckpt_path).strip().lower() in (RANDOM_INIT, ""):
        if not psg_encoder_name:
            raise ValueError("--ckpt_path none (random init) needs --psg_encoder_name, e.g. vit_base")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = create_backbone(psg_encoder_name, **model_kwargs)
        return model, backbone_metadata(model, "random_init"), "random_init"

    if str(ckpt_path).startswith(HF_SCHEME):  # a Hub file, fetched through the Hugging Face cache
        from osf.backbone.hub import resolve_hub_file

        path = resolve_hub_file(str(ckpt_path))
        with reported_as(str(ckpt_path), path):
            model, metadata = _load_checkpoint_file(path, psg_encoder_name, which, **model_kwargs)
    else:
        path = Path(ckpt_path)
        model, metadata = _load_checkpoint_file(path, psg_encoder_name, which, **model_kwargs)
    return model, metadata, file_hash(path)


def _load_checkpoint_file(
    path: Path, psg_encoder_name: str | None, which: str, **model_kwargs: Any
) -> tuple[nn.Module, dict]:
    """Backbone and metadata of a local Lightning checkpoint or exported backbone, contract checked."""
    if not path.is_file():
        raise CheckpointError(path, "file not found" if not path.exists() else "is not a file")
    if _is_lightning_checkpoint(path):
        from osf.models.export import backbone_from_lightning_checkpoint

        try:
            model, metadata = backbone_from_lightning_checkpoint(path, which=which)
        except CheckpointError:
            raise
        except (KeyError, ValueError, RuntimeError, pickle.UnpicklingError) as err:
            raise CheckpointError(path, f"cannot extract a backbone from this Lightning checkpoint: {err}") from err
    else:
        model, metadata = load_backbone(path, **model_kwargs)
    if psg_encoder_name and metadata.get("encoder_name") != psg_encoder_name:
        raise CheckpointError(
            path,
            f"holds a {metadata.get('encoder_name')!r} backbone but --psg_encoder_name={psg_encoder_name!r}; "
            "drop the flag (the architecture comes from the checkpoint) or pass the matching checkpoint",
        )
    check_channel_contract(metadata, path)
    return model, dict(metadata)

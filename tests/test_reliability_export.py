"""Exported weights: a checkpoint with tensors of the wrong shape is refused naming the tensor; both files follow the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from osf.backbone.checkpoint import CheckpointError, save_backbone
from osf.backbone.vit1d_cls import create_backbone
from osf.models.export import export_pretrained_backbone


def _lightning_like(path: Path, **replace: torch.Tensor) -> Path:
    """A pre-training checkpoint of a student-only method (SimCLR) holding a vit_nano, some tensors replaced."""
    state = {f"backbone.{k}": v for k, v in create_backbone("vit_nano").state_dict().items()}
    state.update({f"backbone.{k}": v for k, v in replace.items()})
    info = {"method": "simclr", "backbone_name": "vit_nano", "backbone_kwargs": {}, "has_teacher": False, "run_config": {}}
    torch.save({"state_dict": state, "osf": info}, path)
    return path


def test_export_refuses_tensors_of_the_wrong_shape_naming_the_tensor(tmp_path: Path, capsys) -> None:
    from main_pipelines import main_export

    ckpt = _lightning_like(tmp_path / "run.ckpt", **{"lead_emb.weight": torch.zeros(5, 7)})
    out = tmp_path / "w" / "osf_backbone.pth"
    with pytest.raises(CheckpointError, match=r"1 tensors have another shape, e.g. student tensor 'lead_emb.weight' is \[5, 7\] where vit_nano needs \[3, 128\]"):
        export_pretrained_backbone(ckpt, out)
    with pytest.raises(SystemExit, match=r"main_export: .*run\.ckpt.*'lead_emb.weight'.*nothing was written"):
        main_export.main(["--ckpt_path", str(ckpt), "--output", str(out)])
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no .pth, no .safetensors, no temp file
    ok = _lightning_like(tmp_path / "ok.ckpt")
    pth, st = export_pretrained_backbone(ok, out)  # the same checkpoint with the right shapes exports
    assert pth.is_file() and st.is_file()


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_pth_and_safetensors_follow_the_umask_alike(tmp_path: Path, umask: int, monkeypatch) -> None:
    import osf.utils.atomic as atomic

    monkeypatch.setattr(atomic, "_FILE_MODE", 0o666 & ~umask)  # the mode read from the umask at import
    pth, st = save_backbone(create_backbone("vit_nano"), tmp_path / "osf_backbone.pth")
    modes = {p.suffix: stat.S_IMODE(p.stat().st_mode) for p in (pth, st)}
    assert modes == {".pth": 0o666 & ~umask, ".safetensors": 0o666 & ~umask}
    assert sorted(os.listdir(tmp_path)) == ["osf_backbone.pth", "osf_backbone.safetensors"]

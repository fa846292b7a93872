"""Backbone checkpoint I/O: released format, safetensors twin, round trips and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from osf.backbone import (
    METADATA_KEYS,
    CheckpointError,
    backbone_metadata,
    load_backbone,
    save_backbone,
    vit_nano,
)


class NotATensor:
    """A custom class: pickling it makes a checkpoint that weights_only=True must refuse."""


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return vit_nano(lead_wise=1).eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, 12, 1920, generator=torch.Generator().manual_seed(3))


@pytest.fixture
def saved(tmp_path, model) -> Path:
    pth, _ = save_backbone(model, tmp_path / "bb.pth", backbone_metadata(model, "dino"))
    return pth


def _payload(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def _expect_error(path: Path, *fragments: str) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        load_backbone(path)
    message = str(info.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert isinstance(info.value, ValueError)
    return info.value


# --- round trips ------------------------------------------------------------------------------
def test_backbone_metadata_has_the_released_keys(model):
    meta = backbone_metadata(model, "dino")
    assert set(METADATA_KEYS) <= set(meta)
    assert meta["encoder_name"] == "vit_nano" and meta["width"] == 128 and meta["depth"] == 6
    assert meta["seq_len"] == 1920 and meta["patch_size_time"] == 64 and meta["window_size_sec"] == 30
    assert len(meta["channels"]) == 12


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_round_trip_both_formats(tmp_path, model, x, suffix):
    meta = backbone_metadata(model, "dino", normalisation="per-epoch z-score")
    pth, st = save_backbone(model, tmp_path / f"bb{suffix}", meta)
    assert pth.suffix == ".pth" and st.suffix == ".safetensors" and pth.is_file() and st.is_file()
    assert not list(tmp_path.glob("*.tmp"))
    payload = _payload(pth)
    assert set(payload) == {"state_dict", "metadata"} and payload["metadata"] == meta
    loaded, loaded_meta = load_backbone(tmp_path / f"bb{suffix}")
    assert loaded_meta == meta and not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_failed_save_keeps_the_previous_pair_and_leaves_no_temp_files(tmp_path, model, monkeypatch):
    import safetensors.torch

    pth, st = save_backbone(model, tmp_path / "bb.pth")
    before = (pth.read_bytes(), st.read_bytes())

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with torch.no_grad():
        model.norm.weight.add_(1.0)
    with pytest.raises(OSError, match="No space"):
        save_backbone(model, pth)
    assert (pth.read_bytes(), st.read_bytes()) == before  # neither twin half-updated
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bb.pth", "bb.safetensors"]


def test_load_kwargs_reach_the_constructor(saved):
    loaded, _ = load_backbone(saved, attn_impl="math", drop_path_rate=0.1)
    assert loaded.attn_impl == "math" and loaded.block5.drop_path.drop_prob == pytest.approx(0.1)


def test_mask_token_is_left_out_unless_asked(tmp_path, x):
    torch.manual_seed(0)
    model = vit_nano(use_mask_token=True)
    pth, _ = save_backbone(model, tmp_path / "plain.pth")
    assert "mask_token" not in _payload(pth)["state_dict"]
    loaded, _ = load_backbone(pth, use_mask_token=True)  # released layout + a fresh mask token
    assert loaded.mask_token is not None
    pth2, st2 = save_backbone(model, tmp_path / "with_token.pth", include_mask_token=True)
    for path in (pth2, st2):
        restored, _ = load_backbone(path)
        assert torch.equal(restored.mask_token, model.mask_token)


def test_save_rejects_metadata_that_does_not_fit(tmp_path, model):
    meta = backbone_metadata(model, "dino")
    with pytest.raises(ValueError, match="missing"):
        save_backbone(model, tmp_path / "a.pth", {k: v for k, v in meta.items() if k != "width"})
    with pytest.raises(ValueError, match="depth"):
        save_backbone(model, tmp_path / "b.pth", {**meta, "depth": 12})
    with pytest.raises(ValueError, match=r"\.pth"):
        save_backbone(model, tmp_path / "c.bin", meta)


def test_released_reference_checkpoint_loads_and_reproduces(shared_dir, tmp_path):
    folder = shared_dir / "fixtures" / "osf_compat"
    ref = torch.load(folder / "vit_nano_lead_wise0_io.pt", weights_only=True)
    model, meta = load_backbone(folder / "vit_nano_lead_wise0_backbone.pth")
    assert meta["model_name"] == "dino" and model.lead_wise == 0
    with torch.no_grad():
        cls, _ = model.forward_encoding(ref["x"])
    assert ((cls - ref["cls"]).norm() / ref["cls"].norm()) < 1e-5
    # Re-saving the released file and reading the safetensors twin gives the same model.
    _, st = save_backbone(model, tmp_path / "resaved.pth", meta)
    again, meta2 = load_backbone(st)
    assert meta2 == meta
    with torch.no_grad():
        torch.testing.assert_close(again.forward_encoding(ref["x"])[0], cls, rtol=0, atol=0)


# --- errors -----------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    _expect_error(tmp_path / "nope.pth", "file not found")


def test_pickle_with_objects_is_refused(tmp_path, model):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": model.state_dict(), "metadata": {}, "extra": NotATensor()}, path)
    _expect_error(path, "not a plain-tensor checkpoint")


def test_truncated_file(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    _expect_error(saved, "cannot be read")


def test_corrupt_safetensors(tmp_path, saved):
    st = saved.with_suffix(".safetensors")
    st.write_bytes(b"\x00" * 16)
    _expect_error(st, "safetensors")


def test_safetensors_without_metadata_header(tmp_path, model):
    path = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    _expect_error(path, "osf_metadata")


def test_bare_state_dict_and_lightning_checkpoint(tmp_path, model):
    bare = tmp_path / "bare.pth"
    torch.save(model.state_dict(), bare)
    _expect_error(bare, "bare state dict")
    lightning = tmp_path / "last.ckpt"
    torch.save(
        {"state_dict": model.state_dict(), "pytorch-lightning_version": "2.5.5", "epoch": 1}, lightning
    )
    _expect_error(lightning, "main_export.py")


@pytest.mark.parametrize("key", ["encoder_name", "seq_len", "lead_wise"])
def test_metadata_missing_a_key(saved, key):
    payload = _payload(saved)
    del payload["metadata"][key]
    torch.save(payload, saved)
    _expect_error(saved, "metadata is missing", key)


def test_unknown_encoder_name(saved):
    payload = _payload(saved)
    payload["metadata"]["encoder_name"] = "vit_humongous"
    torch.save(payload, saved)
    _expect_error(saved, "unknown encoder_name", "vit_humongous", "vit_nano")


def test_missing_and_unexpected_keys_are_listed(saved):
    payload = _payload(saved)
    del payload["state_dict"]["block3.ff.fn.net.0.bias"]
    del payload["state_dict"]["norm.weight"]
    payload["state_dict"]["head.weight"] = torch.zeros(5, 128)
    torch.save(payload, saved)
    _expect_error(
        saved, "missing keys", "block3.ff.fn.net.0.bias", "norm.weight", "unexpected keys", "head.weight"
    )


def test_shape_mismatches_are_listed(saved):
    payload = _payload(saved)
    payload["state_dict"]["pos_embedding"] = torch.zeros(1, 31, 128)
    payload["state_dict"]["block0.attn.fn.to_qkv.weight"] = torch.zeros(384, 128)
    torch.save(payload, saved)
    _expect_error(
        saved, "shape mismatches", "pos_embedding [1, 31, 128] vs model [1, 91, 128]", "to_qkv.weight"
    )


def test_metadata_disagreeing_with_encoder(saved):
    payload = _payload(saved)
    payload["metadata"]["width"] = 768
    torch.save(payload, saved)
    _expect_error(saved, "width=768")


def test_safetensors_header_must_be_json(tmp_path, model):
    path = tmp_path / "badjson.safetensors"
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(path),
        metadata={"osf_metadata": "{oops"},
    )
    _expect_error(path, "not valid JSON")
    assert json.loads(json.dumps(backbone_metadata(model, "x")))  # the real metadata is JSON-serialisable

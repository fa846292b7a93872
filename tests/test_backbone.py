"""The OSF-Base-compatible 1D ViT: reference equivalence, layout, shapes, masks and attention options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from osf.backbone import ViT1D, create_backbone, list_backbones, vit_base, vit_nano

# The size table: name -> (width, depth, heads); MLP 4x width, head dim 64.
SIZES = {
    "vit_nano": (128, 6, 4),
    "vit_tiny": (192, 12, 3),
    "vit_small": (384, 12, 6),
    "vit_middle": (512, 12, 8),
    "vit_base": (768, 12, 12),
    "vit_large": (1024, 24, 16),
    "vit_xl": (1536, 24, 24),
}
GROUP_RESPIRATORY = slice(4, 8)  # ABD, THX, NP, SN: channel group 1 of 3 with patch_size_ch=4


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def _nano(lead_wise: int = 1, seed: int = 0, **kw) -> ViT1D:
    torch.manual_seed(seed)
    return vit_nano(lead_wise=lead_wise, **kw).eval()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def signal() -> torch.Tensor:
    return torch.randn(3, 12, 1920, generator=torch.Generator().manual_seed(1))


# --- reference equivalence -------------------------------------------------------------------
@pytest.mark.parametrize("lead_wise", [0, 1])
def test_reproduces_reference_outputs(shared_dir, lead_wise):
    folder = shared_dir / "fixtures" / "osf_compat"
    ckpt = torch.load(folder / f"vit_nano_lead_wise{lead_wise}_backbone.pth", weights_only=True)
    ref = torch.load(folder / f"vit_nano_lead_wise{lead_wise}_io.pt", weights_only=True)
    model = vit_nano(lead_wise=lead_wise)
    model.load_state_dict(ckpt["state_dict"], strict=True)
    model.eval()
    with torch.no_grad():
        cls, patches = model.forward_encoding(ref["x"])
        sequence = model.forward_encoding(ref["x"], return_sequence=True)
        cls_fwd = model(ref["x"][:1])
    for out, name in ((cls, "cls"), (patches, "patches"), (sequence, "sequence")):
        assert out.shape == ref[name].shape
        for i in range(out.shape[0]):  # per sample: sample 1 has the respiratory channels zeroed
            assert _rel(out[i], ref[name][i]) < 1e-5, (name, i)
    torch.testing.assert_close(cls_fwd, cls[:1])


def test_vit_base_layout_matches_osf_base(shared_dir):
    layout = json.loads(
        (shared_dir / "fixtures/osf_compat/vit_base_lead_wise1_state_dict_layout.json").read_text()
    )
    with torch.device("meta"):
        model = vit_base(
            num_leads=layout["num_leads"],
            seq_len=layout["seq_len"],
            patch_size=layout["patch_size_time"],
            patch_size_ch=layout["patch_size_ch"],
            lead_wise=layout["lead_wise"],
        )
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(shapes) == list(layout["state_dict_shapes"])  # names and order
    assert shapes == layout["state_dict_shapes"]
    assert sum(v.numel() for v in model.state_dict().values()) == layout["num_parameters"]


# --- constructors ---------------------------------------------------------------------------
def test_registry_lists_all_sizes_and_rejects_unknown():
    assert set(SIZES) <= set(list_backbones())
    with pytest.raises(ValueError, match="vit_nano"):
        create_backbone("vit_gigantic")


@pytest.mark.parametrize("lead_wise", [0, 1])
@pytest.mark.parametrize("name", list(SIZES))
def test_constructor_sizes_and_output_shapes(name, lead_wise):
    width, depth, heads = SIZES[name]
    with torch.device("meta"):  # shapes only: no memory or init cost for the large sizes
        model = create_backbone(name, lead_wise=lead_wise)
        x = torch.empty(2, 12, 1920)
        cls, patches = model.forward_encoding(x)
        sequence = model.forward_encoding(x, return_sequence=True)
    n = 90 if lead_wise else 30
    assert (model.width, model.depth, model.num_tokens, model.encoder_name) == (width, depth, n, name)
    assert (model.num_leads, model.seq_len, model.patch_size, model.patch_size_ch, model.lead_wise) == (
        12,
        1920,
        64,
        4,
        lead_wise,
    )
    assert model.block0.attn.fn.to_qkv.weight.shape == (3 * heads * 64, width)
    assert model.block0.ff.fn.net[0].weight.shape == (4 * width, width)
    assert hasattr(model, f"block{depth - 1}") and not hasattr(model, f"block{depth}")
    assert cls.shape == (2, width) and patches.shape == (2, n, width) and sequence.shape == (2, n + 1, width)


def test_custom_geometry_and_bad_geometry():
    model = vit_nano(num_leads=6, seq_len=640, patch_size=32, patch_size_ch=2, lead_wise=1)
    _, patches = model.forward_encoding(torch.randn(2, 6, 640))
    assert model.num_tokens == 3 * 20 and patches.shape == (2, 60, 128)
    with pytest.raises(ValueError, match="patch_size_ch"):
        vit_nano(num_leads=10, patch_size_ch=4)
    with pytest.raises(ValueError, match="patch_size"):
        vit_nano(seq_len=1000, patch_size=64)


def test_lead_wise_tokens_are_group_major():
    model = _nano(lead_wise=1)
    x = torch.zeros(1, 12, 1920)
    x[0, 8:12, 64 * 5 : 64 * 6] = 1.0  # only channel group 2, time patch 5 is non-zero
    tokens = model.patch_embed(x)[0]
    nonzero = tokens.abs().sum(-1).nonzero().flatten().tolist()
    assert nonzero == [2 * 30 + 5]


def test_bad_input_shapes_are_named():
    model = _nano()
    with pytest.raises(ValueError, match=r"\[B, 12, 1920\]"):
        model.forward_encoding(torch.randn(2, 11, 1920))
    with pytest.raises(ValueError, match="channel_mask"):
        model.forward_encoding(torch.randn(2, 12, 1920), channel_mask=torch.ones(2, 12))


# --- attention implementations ----------------------------------------------------------------
@pytest.mark.parametrize("lead_wise", [0, 1])
def test_sdpa_and_math_attention_agree_forward_and_backward(signal, lead_wise):
    model = _nano(lead_wise=lead_wise)
    outs, grads = [], []
    for impl in ("sdpa", "math"):
        model.set_attn_impl(impl)
        assert model.attn_impl == impl
        model.zero_grad()
        seq = model.forward_encoding(signal[:1], return_sequence=True)
        seq.square().mean().backward()
        outs.append(seq.detach())
        grads.append(model.block0.attn.fn.to_qkv.weight.grad.clone())
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="attn_impl"):
        model.set_attn_impl("flash")


def test_bf16_autocast_runs_close_to_fp32(signal):
    model = _nano()
    with torch.no_grad():
        ref = model(signal)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(signal)
    # The final LayerNorm runs in fp32 under autocast; the blocks ran in bf16, so results differ a little.
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    assert 0 < _rel(low, ref) < 0.05


# --- missing channels -------------------------------------------------------------------------
@pytest.mark.parametrize("lead_wise", [0, 1])
def test_channel_mask_zero_fill_equals_manual_zeroing(signal, lead_wise):
    model = _nano(lead_wise=lead_wise)
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[0, GROUP_RESPIRATORY] = False
    mask[1, [0, 10]] = False
    zeroed = signal * mask[..., None]
    garbage = torch.where(mask[..., None], signal, torch.full_like(signal, 1e3))
    with torch.no_grad():
        manual = model.forward_encoding(zeroed, return_sequence=True)
        masked = model.forward_encoding(signal, return_sequence=True, channel_mask=mask)
        masked_garbage = model.forward_encoding(garbage, return_sequence=True, channel_mask=mask)
        unmasked = model.forward_encoding(signal, return_sequence=True)
    torch.testing.assert_close(masked, manual)
    torch.testing.assert_close(masked_garbage, manual)  # absent content cannot leak in
    for bad in (float("nan"), float("inf")):  # not even non-finite values (NaN * 0 is NaN)
        with torch.no_grad():
            out = model.forward_encoding(torch.where(mask[..., None], signal, bad), return_sequence=True, channel_mask=mask)
        torch.testing.assert_close(out, manual)
    torch.testing.assert_close(masked[2], unmasked[2])  # all-present sample untouched
    assert not torch.allclose(masked[0], unmasked[0])


def test_drop_absent_groups_changes_nothing_when_all_present(signal):
    model = _nano()
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[0, [4, 5]] = False  # a partly absent group is kept (zero-filled only)
    with torch.no_grad():
        default = model.forward_encoding(signal, return_sequence=True, channel_mask=mask)
        dropped = model.forward_encoding(
            signal, return_sequence=True, channel_mask=mask, drop_absent_groups=True
        )
    torch.testing.assert_close(dropped, default)


@pytest.mark.parametrize("attn_impl", ["sdpa", "math"])
def test_drop_absent_groups_removes_group_tokens_from_attention(signal, attn_impl):
    model = _nano(attn_impl=attn_impl)
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[:, GROUP_RESPIRATORY] = False  # the whole group 1 is absent in every sample
    present_tokens = torch.cat([torch.arange(0, 30), torch.arange(60, 90)]).expand(3, -1)
    with torch.no_grad():
        cls, patches = model.forward_encoding(signal, channel_mask=mask, drop_absent_groups=True)
        cls_sub, patches_sub = model.forward_encoding(signal * mask[..., None], keep_tokens=present_tokens)
        cls_zero_fill, _ = model.forward_encoding(signal, channel_mask=mask)
        # Perturb what the dropped tokens contain: they are keys nobody may read.
        model.pos_embedding.data[:, 31:61] += 10.0
        cls_perturbed, _ = model.forward_encoding(signal, channel_mask=mask, drop_absent_groups=True)
    torch.testing.assert_close(cls, cls_sub, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(patches[:, present_tokens[0]], patches_sub, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cls_perturbed, cls, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(cls, cls_zero_fill, atol=1e-4)  # the option does change behaviour


def test_drop_absent_groups_edge_cases(signal):
    none_present = torch.zeros(3, 12, dtype=torch.bool)
    with torch.no_grad():
        cls, _ = _nano().forward_encoding(signal, channel_mask=none_present, drop_absent_groups=True)
    assert torch.isfinite(cls).all()  # CLS still attends to itself
    with pytest.raises(ValueError, match="lead_wise=1"):
        _nano(lead_wise=0).forward_encoding(signal, channel_mask=none_present, drop_absent_groups=True)


# --- SSL hooks ----------------------------------------------------------------------------------
def test_mask_token_only_when_asked(signal):
    plain = _nano()
    assert "mask_token" not in plain.state_dict()
    with pytest.raises(ValueError, match="use_mask_token"):
        plain.forward_encoding(signal, token_mask=torch.zeros(3, 90, dtype=torch.bool))
    masked_model = _nano(use_mask_token=True)
    assert masked_model.state_dict()["mask_token"].shape == (1, 1, 128)
    released = {k: v for k, v in masked_model.state_dict().items() if k != "mask_token"}
    plain.load_state_dict(released, strict=True)  # the released layout still loads strictly
    plain.add_mask_token()
    assert plain.mask_token is not None and "mask_token" in dict(plain.named_parameters())


def test_token_mask_replaces_tokens_with_mask_token(signal):
    model = _nano(use_mask_token=True)
    token_mask = torch.zeros(3, 90, dtype=torch.bool)
    token_mask[:, ::3] = True
    with torch.no_grad():
        none_masked = model.forward_encoding(
            signal, return_sequence=True, token_mask=torch.zeros_like(token_mask)
        )
        plain = model.forward_encoding(signal, return_sequence=True)
        masked = model.forward_encoding(signal, return_sequence=True, token_mask=token_mask)
        # The same replacement done by hand on the patch embedding.
        tokens = model.patch_embed(signal)
        tokens[token_mask] = model.mask_token.reshape(-1)
        model.patch_embed = lambda x: tokens  # type: ignore[method-assign]
        manual = model.forward_encoding(signal, return_sequence=True)
    torch.testing.assert_close(none_masked, plain)
    torch.testing.assert_close(masked, manual)
    assert not torch.allclose(masked, plain)
    del model.patch_embed
    model.train()
    # Not .sum(): the sum of a LayerNorm output with unit gain is constant, so its gradient is zero.
    model.forward_encoding(signal, token_mask=token_mask)[0].square().sum().backward()
    assert model.mask_token.grad is not None and model.mask_token.grad.abs().sum() > 0


def test_keep_tokens_encodes_subset(signal):
    model = _nano()
    keep_all = torch.arange(90).expand(3, -1)
    keep = torch.stack(
        [torch.randperm(90, generator=torch.Generator().manual_seed(i))[:20] for i in range(3)]
    )
    with torch.no_grad():
        full = model.forward_encoding(signal, return_sequence=True)
        same = model.forward_encoding(signal, return_sequence=True, keep_tokens=keep_all)
        cls, patches = model.forward_encoding(signal, keep_tokens=keep)
        # Equivalent formulation: full sequence, but attention only to CLS + kept tokens.
        allowed = torch.zeros(3, 91, 91, dtype=torch.bool)
        allowed[:, :, 0] = True
        allowed[torch.arange(3)[:, None], :, keep + 1] = True
        cls_bias, patches_bias = model.forward_encoding(signal, attn_bias=allowed)
    torch.testing.assert_close(same, full)
    assert patches.shape == (3, 20, 128)
    torch.testing.assert_close(cls, cls_bias, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        patches, torch.gather(patches_bias, 1, keep[..., None].expand(-1, -1, 128)), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("attn_impl", ["sdpa", "math"])
def test_causal_attn_bias_blocks_future_tokens(signal, attn_impl):
    model = _nano(lead_wise=0, attn_impl=attn_impl)
    causal = torch.ones(31, 31, dtype=torch.bool).tril()
    later = signal.clone()
    later[:, :, -64:] += 5.0  # changes only the last time patch (token 30)
    with torch.no_grad():
        a = model.forward_encoding(signal, return_sequence=True, attn_bias=causal)
        b = model.forward_encoding(later, return_sequence=True, attn_bias=causal)
        c = model.forward_encoding(later, return_sequence=True)
    torch.testing.assert_close(a[:, :30], b[:, :30])
    assert not torch.allclose(a[:, 30], b[:, 30])
    assert not torch.allclose(a[:, 0], c[:, 0])  # without the mask the CLS does see the change
    with pytest.raises(ValueError, match="attn_bias"):
        model.forward_encoding(signal, attn_bias=torch.ones(30, 30, dtype=torch.bool))


def test_drop_path_is_stochastic_in_training_only(signal):
    model = _nano(drop_path_rate=0.5)
    with torch.no_grad():
        assert torch.equal(model(signal), model(signal))
        model.train()
        assert not torch.equal(model(signal), model(signal))


def test_benchmark_script_runs_and_writes_json(tmp_path):
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_backbone.py"
    spec = importlib.util.spec_from_file_location("bench_backbone", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    result = bench.main(
        ["--sizes", "vit_nano", "--batch-sizes", "2", "--dtypes", "fp32", "--passes", "fwd+bwd"]
        + ["--warmup", "0", "--iters", "1", "--min-time", "0", "--repeats", "1", "--output", str(out)]
    )
    rows = json.loads(out.read_text())["rows"]
    assert json.loads(out.read_text())["complete"]
    assert rows == result["rows"] and {r["variant"] for r in rows} == {"math", "sdpa"}
    assert all(r["samples_per_s"] > 0 for r in rows)
    assert next(r for r in rows if r["variant"] == "math")["ratio_vs_math"] == 1.0

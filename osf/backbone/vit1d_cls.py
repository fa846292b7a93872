"""Pre-norm 1D Vision Transformer with a CLS token over multichannel PSG signals ``[B, C, T]``.

The module layout (parameter names and shapes) is identical to the released OSF-Base backbone, so
its ``osf_backbone.pth`` loads with ``strict=True`` into :func:`vit_base` and gives the same
embeddings.

Tokenisation
------------
``lead_wise=0``
    Each token is one time patch across *all* channels: a ``Conv1d(C, width, patch_size)`` with
    stride ``patch_size`` -> ``N = T / patch_size`` tokens.
``lead_wise=1`` (OSF-Base)
    The signal is cut into blocks of ``patch_size_ch`` channels x ``patch_size`` samples by a
    ``Conv2d(1, width, (patch_size_ch, patch_size))``: 12x1920 with 4x64 gives 3 channel groups
    x 30 time patches = 90 tokens in *group-major* order (token ``g * 30 + t``). ``lead_emb`` is
    kept (unused) for state-dict compatibility with the released checkpoint.

The patch embedding has no bias, so an all-zero block embeds to exactly zero before the positional
embedding is added.

Missing channels
----------------
``forward_encoding(x, channel_mask=mask)`` with ``mask`` bool ``[B, num_leads]`` (True = present):

* default (``drop_absent_groups=False``): absent channels are **zero-filled** before the patch
  embedding, which is exactly what OSF-Base saw in training when a channel was missing. Tokens of
  absent channels still take part in attention (as their positional embedding only), so the output
  equals running the model on the manually zeroed signal; whatever the absent channels held cannot
  influence it.
* ``drop_absent_groups=True`` (``lead_wise=1`` only): in addition, the tokens of channel groups whose
  channels are *all* absent are removed from attention as keys (key padding). Nothing attends to them,
  so the CLS and the present tokens equal those of a model that never saw those tokens at all. Their
  own rows in ``patches`` are still computed (they attend to the present tokens) but carry no
  information about the absent group; ignore them. With all channels present the output is identical
  to the default.

Extras for self-supervised methods
----------------------------------
* ``token_mask`` bool ``[B, N]``: masked patch tokens are replaced by a learnable ``mask_token``
  before the positional embedding (iBOT / BEiT style). The model must be built with
  ``use_mask_token=True``; the parameter is then part of the state dict (the released layout has
  none, see :meth:`ViT1D.add_mask_token` for adding it after loading a released checkpoint).
* ``keep_tokens`` long ``[B, K]``: encode only these patch tokens (indices into ``0..N-1``, after the
  positional embedding is added), as in MAE. Outputs then have ``K`` patch tokens.
* ``attn_bias`` bool ``[L, L]`` or ``[B, L, L]`` with ``L`` the sequence length including CLS
  (True = query may attend to key), e.g. a causal mask for autoregressive use. Every query must be
  allowed at least one key.

Attention runs through ``torch.nn.functional.scaled_dot_product_attention`` (``attn_impl="sdpa"``,
flash / memory-efficient kernels on GPU). ``attn_impl="math"`` is plain softmax attention with the
same weights and (to float tolerance) the same results; it is the benchmark baseline.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from osf.utils.config_fields import option, to_record

__all__ = [
    "ATTN_IMPLS",
    "BACKBONES",
    "BackboneConfig",
    "ViT1D",
    "create_backbone",
    "list_backbones",
    "register_backbone",
    "state_has_mask_token",
    "vit_base",
    "vit_large",
    "vit_layer_id",
    "vit_middle",
    "vit_nano",
    "vit_small",
    "vit_tiny",
    "vit_xl",
]

ATTN_IMPLS: tuple[str, ...] = ("sdpa", "math")

# Parameter names of the layout below, in one place: what embeds the input (layer 0 of layer-wise
# decay), what never gets weight decay, and what never gets a gradient.
STEM_PARAMETERS: tuple[str, ...] = ("to_patch_embedding", "cls_token", "pos_embedding", "lead_emb", "mask_token")
NO_WEIGHT_DECAY: frozenset[str] = frozenset({"cls_token", "pos_embedding", "mask_token", "lead_emb.weight"})
FROZEN_PARAMETERS: frozenset[str] = frozenset({"lead_emb.weight"})  # unused by forward (released layout only)
_BLOCK_PATTERN = re.compile(r"^block(\d+)\.")


def state_has_mask_token(state_dict: Mapping[str, Any]) -> bool:
    """Whether a :class:`ViT1D` state dict carries the optional mask token (build with ``use_mask_token``)."""
    return "mask_token" in state_dict


def vit_layer_id(param_name: str, depth: int) -> int:
    """Layer of a :class:`ViT1D` parameter for layer-wise decay: stem 0, ``block{i}`` i+1, final norm depth+1."""
    match = _BLOCK_PATTERN.match(param_name)
    if match:
        return int(match.group(1)) + 1
    if param_name.split(".")[0] in STEM_PARAMETERS:
        return 0
    return depth + 1


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample with probability ``drop_prob``."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with each sample's branch zeroed with probability ``drop_prob`` (rescaled; identity in eval)."""
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        """Shown in the module's repr."""
        return f"drop_prob={self.drop_prob}"


class PreNorm(nn.Module):
    """LayerNorm then ``fn``; the released names are ``<branch>.norm`` and ``<branch>.fn``."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        """``fn(norm(x), **kwargs)``."""
        return self.fn(self.norm(x), **kwargs)


class FeedForward(nn.Module):
    """Two-layer GELU MLP (``net.0`` and ``net.3`` are the linear layers in the released layout)."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """MLP of ``x`` ``[..., dim]``."""
        return self.net(x)


class Attention(nn.Module):
    """Multi-head self-attention with a fused biased QKV projection (head dim independent of width)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int = 64,
        attn_dropout: float = 0.0,
        proj_dropout: float = 0.0,
        attn_impl: str = "sdpa",
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.dim_head = dim_head
        self.scale = dim_head**-0.5
        self.attn_dropout = float(attn_dropout)
        self.attn_impl = _check_attn_impl(attn_impl)
        self.to_qkv = nn.Linear(dim, inner * 3, bias=True)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(proj_dropout))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``attn_mask``: bool broadcastable to ``[B, heads, L, L]``, True = may attend."""
        q, k, v = rearrange(self.to_qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        dropout_p = self.attn_dropout if self.training else 0.0
        if self.attn_impl == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        else:
            scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            attn = scores.softmax(dim=-1)
            if dropout_p > 0.0:
                attn = F.dropout(attn, p=dropout_p)
            out = torch.matmul(attn, v)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))`` then ``x + ff(norm(x))``."""

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        mlp_dim: int,
        dropout: float,
        attn_dropout: float,
        drop_path: float,
        attn_impl: str,
    ) -> None:
        super().__init__()
        self.attn = PreNorm(dim, Attention(dim, heads, dim_head, attn_dropout, dropout, attn_impl))
        self.ff = PreNorm(dim, FeedForward(dim, mlp_dim, dropout))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """One block over ``x`` ``[B, L, dim]``; ``attn_mask`` as in :meth:`Attention.forward`."""
        x = x + self.drop_path(self.attn(x, attn_mask=attn_mask))
        return x + self.drop_path(self.ff(x))


def _check_attn_impl(attn_impl: str) -> str:
    if attn_impl not in ATTN_IMPLS:
        raise ValueError(f"unknown attn_impl {attn_impl!r}; choose one of {list(ATTN_IMPLS)}")
    return attn_impl


class ViT1D(nn.Module):
    """Pre-norm ViT with a CLS token over ``[B, num_leads, seq_len]`` signals (OSF-Base layout)."""

    def __init__(
        self,
        num_leads: int = 12,
        seq_len: int = 1920,
        patch_size: int = 64,
        width: int = 768,
        depth: int = 12,
        heads: int = 12,
        mlp_dim: int | None = None,
        dim_head: int = 64,
        lead_wise: int = 1,
        patch_size_ch: int = 4,
        drop_out_rate: float = 0.0,
        attn_drop_out_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        attn_impl: str = "sdpa",
        use_mask_token: bool = False,
        encoder_name: str = "vit_custom",
    ) -> None:
        super().__init__()
        if lead_wise not in (0, 1):
            raise ValueError(f"lead_wise must be 0 or 1, got {lead_wise!r}")
        if seq_len % patch_size != 0:
            raise ValueError(f"seq_len={seq_len} is not a multiple of patch_size={patch_size}")
        if lead_wise == 1 and num_leads % patch_size_ch != 0:
            raise ValueError(f"num_leads={num_leads} is not a multiple of patch_size_ch={patch_size_ch}")
        self.num_leads = int(num_leads)
        self.seq_len = int(seq_len)
        self.patch_size = int(patch_size)
        self.patch_size_ch = int(patch_size_ch)
        self.lead_wise = int(lead_wise)
        self.width = int(width)
        self.depth = int(depth)
        self.heads = int(heads)
        self.dim_head = int(dim_head)
        self.mlp_dim = int(mlp_dim if mlp_dim is not None else 4 * width)
        self.encoder_name = encoder_name
        self.num_time_patches = self.seq_len // self.patch_size
        self.num_groups = self.num_leads // self.patch_size_ch if self.lead_wise else 1
        self.num_tokens = self.num_groups * self.num_time_patches

        if self.lead_wise:
            self.to_patch_embedding = nn.Conv2d(
                1,
                width,
                kernel_size=(patch_size_ch, patch_size),
                stride=(patch_size_ch, patch_size),
                bias=False,
            )
        else:
            self.to_patch_embedding = nn.Conv1d(
                num_leads, width, kernel_size=patch_size, stride=patch_size, bias=False
            )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embedding = nn.Parameter(torch.zeros(1, self.num_tokens + 1, width))
        if self.lead_wise:
            # Unused by the forward pass; kept so the released checkpoint loads with strict=True.
            self.lead_emb = nn.Embedding(self.num_groups, width)
        self.dropout = nn.Dropout(drop_out_rate)
        # Stochastic depth grows linearly with depth (plain Python so meta-device construction works).
        drop_path_rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        for i in range(depth):
            # Named block0..blockN (not a ModuleList) to match the released state-dict names.
            self.add_module(
                f"block{i}",
                Block(
                    width,
                    heads,
                    dim_head,
                    self.mlp_dim,
                    drop_out_rate,
                    attn_drop_out_rate,
                    drop_path_rates[i],
                    attn_impl,
                ),
            )
        self.norm = nn.LayerNorm(width)
        self.register_parameter("mask_token", None)  # created on demand; absent from the released layout
        self.apply(_init_weights)
        nn.init.trunc_normal_(self.pos_embedding, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if use_mask_token:
            self.add_mask_token()

    # --- configuration ---------------------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        """Alias of ``width`` (timm / DINOv2 spelling)."""
        return self.width

    @property
    def blocks(self) -> list[Block]:
        """The transformer blocks in order."""
        return [getattr(self, f"block{i}") for i in range(self.depth)]

    @property
    def attn_impl(self) -> str:
        """Attention implementation in use (``"sdpa"`` or ``"math"``)."""
        return self.blocks[0].attn.fn.attn_impl if self.depth else "sdpa"

    def set_attn_impl(self, attn_impl: str) -> ViT1D:
        """Switch every block to ``attn_impl`` (weights unchanged); returns ``self``."""
        _check_attn_impl(attn_impl)
        for block in self.blocks:
            block.attn.fn.attn_impl = attn_impl
        return self

    # --- parameter groups (timm's conventions) -----------------------------------------------------
    def no_weight_decay(self) -> set[str]:
        """Parameters spared from weight decay besides biases and norm scales: tokens and embeddings."""
        names = {name for name, _ in self.named_parameters()}
        return {name for name in NO_WEIGHT_DECAY if name in names}

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm's ``group_matcher``: regexes of the stem and of the blocks (final norm last when not coarse)."""
        stem = r"^(" + "|".join(STEM_PARAMETERS) + r")"
        if coarse:
            return {"stem": stem, "blocks": r"^block(\d+)"}
        return {"stem": stem, "blocks": [(r"^block(\d+)\.", None), (r"^norm\.", (99999,))]}

    def layer_id(self, param_name: str) -> int:
        """Layer of ``param_name`` for layer-wise lr decay: stem 0, block i at i+1, final norm ``num_layers - 1``."""
        return vit_layer_id(param_name, self.depth)

    @property
    def num_layers(self) -> int:
        """Layers seen by layer-wise decay: stem, the blocks, final norm."""
        return self.depth + 2

    def frozen_parameter_names(self) -> set[str]:
        """Parameters that never get a gradient (``lead_emb``: kept for the released state-dict layout only)."""
        names = {name for name, _ in self.named_parameters()}
        return {name for name in FROZEN_PARAMETERS if name in names}

    def freeze_unused_(self) -> ViT1D:
        """Turn off gradients of :meth:`frozen_parameter_names` (DDP without unused-parameter search needs it)."""
        frozen = self.frozen_parameter_names()
        for name, param in self.named_parameters():
            if name in frozen:
                param.requires_grad_(False)
        return self

    def add_mask_token(self) -> nn.Parameter:
        """Create the learnable ``mask_token`` if absent (e.g. after loading a released checkpoint)."""
        if self.mask_token is None:
            token = torch.zeros(1, 1, self.width, device=self.cls_token.device, dtype=self.cls_token.dtype)
            nn.init.trunc_normal_(token, std=0.02)
            self.mask_token = nn.Parameter(token)
        return self.mask_token

    def token_group(self) -> torch.Tensor:
        """Channel-group index of each patch token, long ``[N]`` (all zeros for ``lead_wise=0``)."""
        return torch.arange(self.num_groups, device=self.pos_embedding.device).repeat_interleave(
            self.num_time_patches
        )

    def group_presence(self, channel_mask: torch.Tensor) -> torch.Tensor:
        """Bool ``[B, num_groups]``: True where at least one channel of the group is present."""
        return channel_mask.reshape(channel_mask.shape[0], self.num_groups, -1).any(dim=-1)

    # --- forward ---------------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor, channel_mask: torch.Tensor | None) -> None:
        if x.ndim != 3 or x.shape[1] != self.num_leads or x.shape[2] != self.seq_len:
            raise ValueError(
                f"{self.encoder_name} expects input [B, {self.num_leads}, {self.seq_len}], got {list(x.shape)}"
            )
        if channel_mask is not None and (
            channel_mask.dtype != torch.bool or tuple(channel_mask.shape) != (x.shape[0], self.num_leads)
        ):
            raise ValueError(
                f"channel_mask must be bool [B={x.shape[0]}, {self.num_leads}], "
                f"got {channel_mask.dtype} {list(channel_mask.shape)}"
            )

    def patch_embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens ``[B, N, width]`` before CLS and positional embedding."""
        if self.lead_wise:
            tokens = self.to_patch_embedding(x.unsqueeze(1))  # [B, D, groups, time]
            return rearrange(tokens, "b d g t -> b (g t) d")  # group-major
        return rearrange(self.to_patch_embedding(x), "b d t -> b t d")

    def forward_encoding(
        self,
        x: torch.Tensor,
        return_sequence: bool = False,
        channel_mask: torch.Tensor | None = None,
        drop_absent_groups: bool = False,
        token_mask: torch.Tensor | None = None,
        keep_tokens: torch.Tensor | None = None,
        attn_bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
        """Encode ``x`` [B, C, T] -> ``(cls [B, D], patches [B, N, D])`` or ``[B, N+1, D]`` (see module doc)."""
        self._check_input(x, channel_mask)
        batch = x.shape[0]
        if drop_absent_groups and not self.lead_wise:
            raise ValueError(
                "drop_absent_groups needs lead_wise=1 (with lead_wise=0 every token spans all channels)"
            )
        if channel_mask is not None:
            # masked_fill, not a product: NaN * 0 is NaN, and an absent channel's content must not matter.
            x = x.masked_fill(~channel_mask.unsqueeze(-1), 0.0)

        tokens = self.patch_embed(x)
        if token_mask is not None:
            if self.mask_token is None:
                raise ValueError(
                    "token_mask needs a mask token: build with use_mask_token=True or call add_mask_token()"
                )
            if token_mask.dtype != torch.bool or tuple(token_mask.shape) != (batch, self.num_tokens):
                raise ValueError(
                    f"token_mask must be bool [B={batch}, N={self.num_tokens}], got {token_mask.dtype} {list(token_mask.shape)}"
                )
            tokens = torch.where(token_mask.unsqueeze(-1), self.mask_token.to(tokens.dtype), tokens)
        tokens = tokens + self.pos_embedding[:, 1:]

        key_keep = None  # bool [B, N]: patch tokens that may be attended to
        if drop_absent_groups and channel_mask is not None:
            key_keep = self.group_presence(channel_mask)[:, self.token_group()]

        if keep_tokens is not None:
            if (
                keep_tokens.ndim != 2
                or keep_tokens.shape[0] != batch
                or keep_tokens.dtype not in (torch.int64, torch.int32)
            ):
                raise ValueError(
                    f"keep_tokens must be an integer tensor [B={batch}, K], got {keep_tokens.dtype} {list(keep_tokens.shape)}"
                )
            index = keep_tokens.long()
            tokens = torch.gather(tokens, 1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
            if key_keep is not None:
                key_keep = torch.gather(key_keep, 1, index)

        cls = (self.cls_token + self.pos_embedding[:, :1]).expand(batch, -1, -1)
        seq = self.dropout(torch.cat([cls.to(tokens.dtype), tokens], dim=1))
        attn_mask = self._attention_mask(key_keep, attn_bias, batch, seq.shape[1])

        for block in self.blocks:
            seq = block(seq, attn_mask=attn_mask)
        seq = self.norm(seq)
        if return_sequence:
            return seq
        return seq[:, 0], seq[:, 1:]

    def _attention_mask(
        self, key_keep: torch.Tensor | None, attn_bias: torch.Tensor | None, batch: int, length: int
    ) -> torch.Tensor | None:
        """Combine key padding and a user mask into bool ``[B or 1, 1, L or 1, L]`` (True = attend)."""
        mask = None
        if key_keep is not None:
            cls_keep = key_keep.new_ones(batch, 1)
            mask = torch.cat([cls_keep, key_keep], dim=1)[:, None, None, :]
        if attn_bias is not None:
            if (
                attn_bias.dtype != torch.bool
                or attn_bias.shape[-2:] != (length, length)
                or attn_bias.ndim not in (2, 3)
            ):
                raise ValueError(
                    f"attn_bias must be bool [L, L] or [B, L, L] with L={length} (tokens incl. CLS), "
                    f"got {attn_bias.dtype} {list(attn_bias.shape)}"
                )
            bias = attn_bias[None, None] if attn_bias.ndim == 2 else attn_bias[:, None]
            mask = bias if mask is None else mask & bias
        return mask

    def forward(self, x: torch.Tensor, channel_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """CLS embedding ``[B, width]``; ``kwargs`` go to :meth:`forward_encoding`."""
        cls, _ = self.forward_encoding(x, return_sequence=False, channel_mask=channel_mask, **kwargs)
        return cls


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.trunc_normal_(module.weight, std=0.02)


# --- registry ---------------------------------------------------------------------------------
BACKBONES: dict[str, Callable[..., ViT1D]] = {}

# name -> (width, depth, heads); MLP is 4x width and head dim 64 for all.
_SIZES: dict[str, tuple[int, int, int]] = {
    "vit_pico": (64, 4, 2),  # CPU scaling sweeps (SleepBench-mini)
    "vit_nano": (128, 6, 4),
    "vit_tiny": (192, 12, 3),
    "vit_small": (384, 12, 6),
    "vit_middle": (512, 12, 8),
    "vit_base": (768, 12, 12),
    "vit_large": (1024, 24, 16),
    "vit_xl": (1536, 24, 24),
}


@dataclass
class BackboneConfig:
    """A registered backbone size and its constructor settings (what a pre-training method builds)."""

    name: str = option("vit_base", help="backbone size, vit_pico ... vit_xl", flag="psg_encoder_name", group="model")
    patch_size: int = option(64, help="samples per patch", flag="patch_size_time", group="model")
    patch_size_ch: int = option(4, help="channels per patch with --lead_wise 1", group="model")
    lead_wise: int = option(1, help="1: channel-group x time patches, the released layout", choices=(0, 1), group="model")
    drop_path_rate: float = option(0.0, help="stochastic depth", group="model")
    attn_impl: str = option("sdpa", help="attention kernel", choices=ATTN_IMPLS, group="model")
    num_leads: int = option(12, help="input channels", cli=False)
    seq_len: int = option(1920, help="samples per epoch", cli=False)
    use_mask_token: bool = option(False, help="learnable mask token (iBOT, MAE-style masking)", cli=False)

    def constructor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`create_backbone` besides the name."""
        return {k: v for k, v in to_record(self).items() if k != "name"}

    def create(self) -> ViT1D:
        """A freshly initialised backbone of this configuration."""
        return create_backbone(self.name, **self.constructor_kwargs())


def register_backbone(fn: Callable[..., ViT1D]) -> Callable[..., ViT1D]:
    """Decorator adding a constructor to :data:`BACKBONES` under its function name."""
    if fn.__name__ in BACKBONES:
        raise ValueError(f"backbone {fn.__name__!r} is already registered")
    BACKBONES[fn.__name__] = fn
    return fn


def list_backbones() -> list[str]:
    """Names of the registered backbone constructors."""
    return sorted(BACKBONES)


def create_backbone(
    name: str,
    num_leads: int = 12,
    seq_len: int = 1920,
    patch_size: int = 64,
    lead_wise: int = 1,
    patch_size_ch: int = 4,
    **kwargs,
) -> ViT1D:
    """Build a registered backbone by name (``vit_nano`` ... ``vit_xl``)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; registered: {list_backbones()}")
    return BACKBONES[name](
        num_leads=num_leads,
        seq_len=seq_len,
        patch_size=patch_size,
        lead_wise=lead_wise,
        patch_size_ch=patch_size_ch,
        **kwargs,
    )


def _make(
    name: str, num_leads: int, seq_len: int, patch_size: int, lead_wise: int, patch_size_ch: int, **kwargs
) -> ViT1D:
    width, depth, heads = _SIZES[name]
    return ViT1D(
        num_leads=num_leads,
        seq_len=seq_len,
        patch_size=patch_size,
        width=width,
        depth=depth,
        heads=heads,
        mlp_dim=4 * width,
        dim_head=64,
        lead_wise=lead_wise,
        patch_size_ch=patch_size_ch,
        encoder_name=name,
        **kwargs,
    )


@register_backbone
def vit_pico(
    num_leads: int = 12,
    seq_len: int = 1920,
    patch_size: int = 64,
    lead_wise: int = 1,
    patch_size_ch: int = 4,
    **kwargs,
) -> ViT1D:
    """ViT-Pico: width 64, depth 4, 2 heads (the smallest point of a CPU scaling sweep)."""
    return _make("vit_pico", num_leads, seq_len, patch_size, lead_wise, patch_size_ch, **kwargs)


@register_backbone
def vit_nano(
    num_leads: int = 12,
    seq_len: int = 1920,
    patch_size: int = 64,
    lead_wise: int = 1,
    patch_size_ch: int = 4,
    **kwargs,
) -> ViT1D:
    """ViT-Nano: width 128, depth 6, 4 heads."""
    return _make("vit_nano", num_leads, seq_len, patch_size, lead_wise, patch_size_ch, **kwargs)


@register_backbone
def vit_tiny(
    num_leads: int = 12,
    seq_len: int = 1920,
    patch_size: int = 64,
    lead_wise: int = 1,
    patch_size_ch: int = 4,
    **kwargs,
) -> ViT1D:
    """ViT-Tiny: width 192, depth 12, 3 heads."""
    return _make("vit_tiny", num_leads, seq_len, patch_size, lead_wise, patch_size_ch, **kwargs)


@register_backbone
def vit_small(
    num_leads: int = 12,
    seq_len: int = 1920,
    patch_size: int = 64,
    lead_wise: int = 1,
    patch_size_ch: int = 4,
    **kwargs,
) -> ViT1D:
    """ViT-Small: width 384, depth 12, 6 heads."""
    return _make("vit_small", num_leads, seq_len, patch_size, lead_wise, patch_size_ch, **kwargs)


@register_backbone
def vit_middle(
    num_leads: int = 12,
    seq_len: int = 1920,
    patch_size: int = 64,
    lead_wise: int = 1,
    patch_size_ch: int = 4,
    **kwargs,
) -> ViT1D:
    """ViT-Middle: width 512, depth 12, 8 heads."""
    return _make("vit_middle", num_leads, seq_len, patch_size, lead_wise, patch_size_ch, **kwargs)


@register_backbone
def vit_base(
    num_leads: int = 12,
    seq_len: int = 1920,
    patch_size: int = 64,
    lead_wise: int = 1,
    patch_size_ch: int = 4,
    **kwargs,
) -> ViT1D:
    """ViT-Base (OSF-Base): width 768, depth 12, 12 heads."""
    return _make("vit_base", num_leads, seq_len, patch_size, lead_wise, patch_size_ch, **kwargs)


@register_backbone
def vit_large(
    num_leads: int = 12,
    seq_len: int = 1920,
    patch_size: int = 64,
    lead_wise: int = 1,
    patch_size_ch: int = 4,
    **kwargs,
) -> ViT1D:
    """ViT-Large: width 1024, depth 24, 16 heads."""
    return _make("vit_large", num_leads, seq_len, patch_size, lead_wise, patch_size_ch, **kwargs)


@register_backbone
def vit_xl(
    num_leads: int = 12,
    seq_len: int = 1920,
    patch_size: int = 64,
    lead_wise: int = 1,
    patch_size_ch: int = 4,
    **kwargs,
) -> ViT1D:
    """ViT-XL: width 1536, depth 24, 24 heads."""
    return _make("vit_xl", num_leads, seq_len, patch_size, lead_wise, patch_size_ch, **kwargs)

"""The one weight-decay rule of pre-training and fine-tuning (timm's ``no_weight_decay()`` convention).

A parameter is decayed unless it is a bias or a norm scale (``ndim <= 1``) or a module that owns it
names it in its ``no_weight_decay()`` (names relative to that module): the backbone its tokens and
embeddings, a decoder its position embeddings and mask token, a quantiser its codebook.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

__all__ = ["is_decayed", "no_weight_decay_names", "trainable_parameters"]


def no_weight_decay_names(module: nn.Module) -> set[str]:
    """Full names (relative to ``module``) of the parameters its submodules declare undecayed."""
    names: set[str] = set()
    for prefix, sub in module.named_modules():
        declared = getattr(sub, "no_weight_decay", None)
        if callable(declared):
            names |= {f"{prefix}.{name}" if prefix else name for name in declared()}
    return names


def is_decayed(name: str, param: nn.Parameter, spared: set[str]) -> bool:
    """Whether ``param`` (named ``name`` within the module that gave ``spared``) gets weight decay."""
    return param.ndim > 1 and name not in spared


def trainable_parameters(module: nn.Module) -> Iterator[tuple[str, nn.Parameter, bool]]:
    """``(name, parameter, decayed)`` for every parameter of ``module`` that requires a gradient."""
    spared = no_weight_decay_names(module)
    for name, param in module.named_parameters():
        if param.requires_grad:
            yield name, param, is_decayed(name, param, spared)

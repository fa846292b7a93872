"""Patch reconstruction loss of MAE (He et al., 2022), also used by the VQ-VAE and AR methods.

``pred`` and ``target`` are per-token patch signals ``[B, N, P]``. The loss is the mean squared error
over the tokens selected by ``token_mask`` ``[B, N]`` (MAE: the masked ones) and, within a patch, over
the samples whose ``weight`` ``[B, N, P]`` is non-zero (absent, zero-filled channels carry weight 0,
so nobody is trained to reconstruct a missing channel's zeros):

    loss = sum_{b,n,p} mask[b,n] w[b,n,p] (pred - target)^2 / sum_{b,n,p} mask[b,n] w[b,n,p]

With ``normalize_target`` each target patch is standardised by its own mean and variance over the
weighted samples (MAE's ``norm_pix_loss``), which favours shape over amplitude.
"""

from __future__ import annotations

import torch

__all__ = ["masked_patch_mse", "normalize_patches"]


def normalize_patches(target: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """Standardise each patch ``[..., P]`` by its mean and variance over the samples with weight > 0."""
    if weight is None:
        mean = target.mean(-1, keepdim=True)
        var = target.var(-1, keepdim=True, unbiased=False)
    else:
        count = weight.sum(-1, keepdim=True).clamp(min=1.0)
        mean = (target * weight).sum(-1, keepdim=True) / count
        var = (((target - mean) ** 2) * weight).sum(-1, keepdim=True) / count
    return (target - mean) / torch.sqrt(var + eps)


def masked_patch_mse(
    pred: torch.Tensor,
    target: torch.Tensor,
    token_mask: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    normalize_target: bool = False,
) -> torch.Tensor:
    """MSE over the selected tokens (``token_mask`` True) and weighted samples; float32. See module doc."""
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(f"pred and target must both be [B, N, P], got {list(pred.shape)} and {list(target.shape)}")
    if token_mask is not None and (token_mask.dtype != torch.bool or token_mask.shape != pred.shape[:2]):
        raise ValueError(f"token_mask must be bool [B, N]={list(pred.shape[:2])}, got {token_mask.dtype} {list(token_mask.shape)}")
    if weight is not None and weight.shape != pred.shape:
        raise ValueError(f"weight must be [B, N, P]={list(pred.shape)}, got {list(weight.shape)}")
    target = target.detach().float()
    w = torch.ones_like(target) if weight is None else weight.float()
    if normalize_target:
        target = normalize_patches(target, w)
    if token_mask is not None:
        w = w * token_mask.unsqueeze(-1).float()
    squared = (pred.float() - target) ** 2
    # Nothing selected (e.g. every channel absent): a zero that keeps the graph for DDP.
    return (squared * w).sum() / w.sum().clamp(min=1.0)

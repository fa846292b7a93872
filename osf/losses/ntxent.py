"""NT-Xent, the normalised-temperature cross-entropy of SimCLR (Chen et al., 2020).

For ``B`` samples with two views each, the ``2B`` projections are L2-normalised. Query ``i`` (view 1
of sample ``b``) has one positive, view 2 of sample ``b``; every other projection of the batch is a
negative, and the query itself is excluded:

    loss_i = -log( exp(s(i, pos(i)) / tau) / sum_{k != i} exp(s(i, k) / tau) )

averaged over the ``2B`` queries. Under ``torch.distributed`` the keys (positives and negatives) are
gathered from every rank *with* their gradient (``torch.distributed.nn.functional.all_gather``), so
the effective batch of negatives is the global one and each rank's loss is the exact global loss
restricted to its own queries; DDP's gradient averaging then gives the gradient of the global loss.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = ["gather_with_grad", "nt_xent_loss"]


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate ``x`` ``[B, ...]`` over ranks (gradient flows back to each rank's part) -> (all, offset).

    ``offset`` is where this rank's rows start in the result (``rank * B``; every rank must pass the
    same ``B``). Outside ``torch.distributed`` (or with one process) returns ``(x, 0)`` unchanged.
    """
    world, rank = _world()
    if world == 1:
        return x, 0
    if not x.is_floating_point():  # masks and indices: nothing to differentiate; gloo has no bool
        parts = [torch.empty_like(x, dtype=torch.int64) for _ in range(world)]
        dist.all_gather(parts, x.to(torch.int64).contiguous())
        return torch.cat(parts, dim=0).to(x.dtype), rank * x.shape[0]
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0), rank * x.shape[0]


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1, gather: bool = True) -> torch.Tensor:
    """NT-Xent of paired projections ``z1``, ``z2`` ``[B, D]`` (row b of each = two views of sample b).

    ``gather``: take negatives from all ranks when running distributed (no effect otherwise).
    Computed in float32.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"expected two [B, D] tensors of the same shape, got {list(z1.shape)} and {list(z2.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    batch = z1.shape[0]
    z1 = F.normalize(z1.float(), dim=-1)
    z2 = F.normalize(z2.float(), dim=-1)
    if gather:
        k1, offset = gather_with_grad(z1)
        k2, _ = gather_with_grad(z2)
    else:
        k1, k2, offset = z1, z2, 0
    n_global = k1.shape[0]
    queries = torch.cat([z1, z2])  # [2B, D]
    keys = torch.cat([k1, k2])  # [2N, D]: all view-1 projections, then all view-2 projections
    logits = queries @ keys.t() / temperature
    local = torch.arange(batch, device=z1.device) + offset
    self_index = torch.cat([local, local + n_global])  # where each query sits among the keys
    positive = torch.cat([local + n_global, local])  # the other view of the same sample
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[torch.arange(2 * batch, device=z1.device), self_index] = True
    return F.cross_entropy(logits.masked_fill(is_self, float("-inf")), positive)

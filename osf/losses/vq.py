"""Vector quantiser of VQ-VAE (van den Oord et al., 2017) with EMA codebook and dead-code restarts.

Each input vector ``z`` is replaced by its nearest code ``e_k`` (squared L2); the decoder receives
``z + sg(e_k - z)`` (straight-through: the forward value is the code, the gradient reaches ``z``
unchanged). Codebook learning, one of two ways:

* ``ema=True`` (default, Razavi et al., 2019): codes are buffers moved by exponential moving averages
  of the count ``N_k`` and the sum ``m_k`` of the vectors assigned to them, ``e_k = m_k / N_k`` (with
  Laplace smoothing of ``N``). The loss is the commitment term only: ``beta * ||z - sg(e)||^2``.
* ``ema=False``: codes are a parameter and the loss adds the codebook term:
  ``||sg(z) - e||^2 + beta * ||z - sg(e)||^2``.

Dead-code restarts (Dhariwal et al., 2020, Jukebox): a code whose EMA count falls below
``dead_code_threshold`` is moved onto a random input vector of the current batch. The counts start at
zero, so the first training step initialises the whole codebook from data. Under
``torch.distributed`` counts and sums are all-reduced and rank 0's restarts are broadcast, so every
rank keeps the same codebook (in training only: with ``update=False`` no collective runs, as
validation shards may differ in length between ranks). ``stats`` reports perplexity ``exp(H(p))`` of the code distribution
in the batch (all ranks) and the fraction of codes used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["VQOutput", "VectorQuantizer", "codebook_stats", "nearest_codes"]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@dataclass
class VQOutput:
    """Quantiser output: straight-through codes, indices, loss and batch statistics."""

    quantized: torch.Tensor  # [..., D], forward value = code, gradient -> input
    codes: torch.Tensor  # long [...]
    loss: torch.Tensor  # commitment (+ codebook term without EMA), already weighted
    perplexity: torch.Tensor
    usage: torch.Tensor  # fraction of codes used by this batch (all ranks)


@torch.no_grad()
def nearest_codes(z: torch.Tensor, codebook: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Index of the nearest code (squared L2) for each row of ``z`` ``[M, D]``; chunked to bound memory."""
    code_sq = (codebook.float() ** 2).sum(1)
    out = []
    for part in z.float().split(chunk):
        # ||z||^2 is the same for every code, so argmin over ||e||^2 - 2 z.e suffices.
        out.append((code_sq.unsqueeze(0) - 2.0 * part @ codebook.float().t()).argmin(1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=z.device)


def codebook_stats(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(perplexity, fraction of codes used) of per-code assignment ``counts`` ``[K]``."""
    p = counts.float() / counts.sum().clamp(min=1)
    entropy = -(p * torch.log(p.clamp(min=1e-12))).sum()
    return entropy.exp(), (counts > 0).float().mean()


class VectorQuantizer(nn.Module):
    """Nearest-code quantiser with EMA or learned codebook and dead-code restarts (see module doc)."""

    def __init__(
        self,
        num_codes: int = 8192,
        code_dim: int = 32,
        commitment_weight: float = 0.25,
        ema: bool = True,
        decay: float = 0.99,
        eps: float = 1e-5,
        dead_code_threshold: float = 1.0,
    ) -> None:
        super().__init__()
        if num_codes < 2 or code_dim < 1:
            raise ValueError(f"need num_codes >= 2 and code_dim >= 1, got {num_codes}, {code_dim}")
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.num_codes, self.code_dim = num_codes, code_dim
        self.commitment_weight, self.ema, self.decay, self.eps = commitment_weight, ema, decay, eps
        self.dead_code_threshold = dead_code_threshold
        init = torch.randn(num_codes, code_dim)
        if ema:
            self.register_buffer("codebook", init)
            self.register_buffer("ema_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        # EMA of assignments per step; zero so that the first training step restarts every code.
        self.register_buffer("cluster_size", torch.zeros(num_codes))

    def no_weight_decay(self) -> set[str]:
        """A learned codebook is never decayed: decay would pull unused codes to zero."""
        return set() if self.ema else {"codebook"}

    def forward(self, z: torch.Tensor, update: bool = True, generator: torch.Generator | None = None) -> VQOutput:
        """Quantise ``z`` ``[..., code_dim]``; ``update`` (training) moves EMA codes and restarts dead ones.

        ``generator`` draws the restart vectors (the method's per-step generator, so resumes are exact).
        """
        if z.shape[-1] != self.code_dim:
            raise ValueError(f"expected [..., {self.code_dim}] inputs, got {list(z.shape)}")
        flat = z.reshape(-1, self.code_dim)
        codes = nearest_codes(flat.detach(), self.codebook)
        counts = torch.bincount(codes, minlength=self.num_codes).float()
        sums = None
        if update and self.ema:
            sums = torch.zeros(self.num_codes, self.code_dim, device=flat.device).index_add_(0, codes, flat.detach().float())
        if update and _distributed():  # validation shards may be uneven across ranks: no collectives there
            dist.all_reduce(counts)
            if sums is not None:
                dist.all_reduce(sums)
        perplexity, usage = codebook_stats(counts)

        quantized = F.embedding(codes, self.codebook).view_as(z).to(z.dtype)
        commitment = F.mse_loss(z.float(), quantized.detach().float())
        loss = self.commitment_weight * commitment
        if not self.ema:
            loss = loss + F.mse_loss(quantized.float(), z.detach().float())
        if update:
            self._update(counts, sums, flat.detach(), generator)
        quantized = z + (quantized - z).detach()  # straight-through estimator
        return VQOutput(quantized, codes.view(z.shape[:-1]), loss, perplexity, usage)

    @torch.no_grad()
    def _update(
        self, counts: torch.Tensor, sums: torch.Tensor | None, flat: torch.Tensor, generator: torch.Generator | None
    ) -> None:
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
        if self.ema:
            self.ema_sum.mul_(self.decay).add_(sums, alpha=1.0 - self.decay)
            n = self.cluster_size.sum()
            smoothed = (self.cluster_size + self.eps) / (n + self.num_codes * self.eps) * n
            self.codebook.copy_(self.ema_sum / smoothed.unsqueeze(1))
        self._restart_dead(flat, generator)

    @torch.no_grad()
    def _restart_dead(self, flat: torch.Tensor, generator: torch.Generator | None = None) -> None:
        dead = self.cluster_size < self.dead_code_threshold
        n_dead = int(dead.sum())  # identical on every rank: cluster sizes are all-reduced
        if n_dead == 0 or flat.shape[0] == 0:
            return
        pick = torch.randint(0, flat.shape[0], (n_dead,), device=flat.device, generator=generator)
        new = flat[pick].float()
        codebook = self.codebook.data
        codebook[dead] = new.to(codebook.dtype)
        if self.ema:
            self.ema_sum[dead] = new * self.dead_code_threshold
        self.cluster_size[dead] = self.dead_code_threshold
        if _distributed():
            dist.broadcast(codebook, src=0)
            if self.ema:
                dist.broadcast(self.ema_sum, src=0)

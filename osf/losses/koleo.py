"""KoLeo regulariser (Sablayrolles et al., 2019; used by DINOv2): spread features uniformly.

``-mean_i log(min_{j != i} ||x_i - x_j||)`` on L2-normalised features: small when every sample has
a distant nearest neighbour, large when features collapse onto each other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["koleo_loss"]


def koleo_loss(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """KoLeo loss of ``features`` ``[B, D]`` (B >= 2), computed in float32."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"koleo_loss needs [B >= 2, D] features, got {list(features.shape)}")
    x = F.normalize(features.float(), dim=-1, eps=eps)
    sim = x @ x.t()
    sim.fill_diagonal_(-2.0)  # below any cosine similarity, so a sample is never its own neighbour
    nearest = sim.argmax(dim=1)
    dist = F.pairwise_distance(x, x[nearest], eps=eps)
    return -torch.log(dist + eps).mean()

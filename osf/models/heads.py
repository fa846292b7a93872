"""Projection heads shared by the self-distillation methods."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DINOHead"]


class DINOHead(nn.Module):
    """MLP ``in -> hidden -> hidden -> bottleneck``, L2-normalise, weight-normalised ``bottleneck -> out``.

    The prototype layer's weight norm gain is frozen at 1 (DINO's ``norm_last_layer=True``), so logits
    are cosine similarities to ``out_dim`` unit prototypes.
    """

    def __init__(self, in_dim: int, out_dim: int = 2048, hidden_dim: int = 2048, bottleneck_dim: int = 256, n_layers: int = 3) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        dims = [in_dim] + [hidden_dim] * (n_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i in range(n_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < n_layers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.parametrizations.weight.original0.data.fill_(1.0)
        self.last_layer.parametrizations.weight.original0.requires_grad_(False)
        self.out_dim = out_dim

    def no_weight_decay(self) -> set[str]:
        """The prototypes' weight-norm gain is a scale, never decayed (frozen at 1 anyway)."""
        return {"last_layer.parametrizations.weight.original0"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[..., out_dim]`` for features ``[..., in_dim]``."""
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)

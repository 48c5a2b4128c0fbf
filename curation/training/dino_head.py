"""Prototype head for [CLS] self-distillation (DINO / DINOv2 `DINOHead`)."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from curation.training.init import init_weights


class DINOHead(nn.Module):
    """MLP to a bottleneck, L2-normalise, then cosine similarity to K learned prototypes.

    DINO weight-normalises the last layer and freezes its gain at 1; normalising the prototype
    rows in forward is the same function without a parametrisation (which FSDP and EMA would
    otherwise have to know about).
    """

    def __init__(
        self,
        in_dim: int,
        num_prototypes: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
    ):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(dims)):
            layers.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.prototypes = nn.Parameter(torch.empty(num_prototypes, bottleneck_dim))  # [K, bottleneck]
        init_weights(self)

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.prototypes, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        x = F.normalize(self.mlp(x), dim=-1, eps=1e-6)  # [B, bottleneck]
        return F.linear(x, F.normalize(self.prototypes, dim=-1, eps=1e-6))  # [B, K], cosine logits

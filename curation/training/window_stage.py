"""The 4K variant's local stage: the first layers run inside non-overlapping 4x4-token windows.

Each window gets a copy of a learnable window [CLS] token; after the local layers each window is
pooled to that token, so the token grid shrinks `window_size`x per side before the global layers
(a 4096x3072 image at patch 16 becomes 64x48 tokens instead of 256x192). Windows never attend to
each other here, which is what lets MAE masking be applied after this stage without leaking
information from masked windows.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from curation.training.layers import Block, Rope2D


class WindowStage(nn.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        depth: int,
        window_size: int = 4,
        layer_scale_init: float | None = 1e-4,
    ):
        super().__init__()
        self.window_size = window_size
        # One learnable token shared by all windows (as released), so any image size works.
        self.window_cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.rope = Rope2D(dim // num_heads)
        self.blocks = nn.ModuleList(
            [Block(dim, num_heads, layer_scale_init=layer_scale_init) for _ in range(depth)]
        )
        self.grad_checkpointing = False

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.window_cls, std=0.02)

    def forward(self, x: Tensor, grid: tuple[int, int]) -> tuple[Tensor, tuple[int, int]]:
        B, _, D = x.shape
        h, w = grid
        ws = self.window_size
        if h % ws or w % ws:
            raise ValueError(f"token grid {h}x{w} is not divisible by the window size {ws}")
        nh, nw = h // ws, w // ws
        x = x.view(B, nh, ws, nw, ws, D).permute(0, 1, 3, 2, 4, 5)  # [B, nh, nw, ws, ws, D]
        x = x.reshape(B * nh * nw, ws * ws, D)  # [B*nW, ws*ws, D]
        x = torch.cat([self.window_cls.expand(x.shape[0], -1, -1), x], dim=1)  # [B*nW, 1+ws*ws, D]
        rope = self.rope(ws, ws, num_prefix=1)
        for blk in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, rope, use_reentrant=False)
            else:
                x = blk(x, rope)
        return x[:, 0].reshape(B, nh * nw, D), (nh, nw)  # [B, nW, D]

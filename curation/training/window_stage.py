"""The 4K variant's tokenizer: the first layers run inside non-overlapping 4x4-token windows.

Each window gets a copy of a learnable window [CLS] token; after the local layers each window is
pooled to that token, so the token grid shrinks `window_size`x per side before the global layers
(a 4096x3072 image at patch 16 becomes 64x48 tokens instead of 256x192). Windows never attend to
each other here, which is what lets MAE masking be applied after this stage without leaking
information from masked windows.

`variant="released"` (default) is the released tokenizer: a learned absolute position embedding
over the 1 + ws*ws window positions, plain multi-head blocks with no RoPE, no QK-norm and no
LayerScale. `variant="rope"` is our earlier one: the global blocks' design (2D RoPE inside the
window, QK-norm, LayerScale) and no position embedding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from curation.training.layers import Block, Rope2D

TOKENIZER_VARIANTS = ("released", "rope")


class WindowStage(nn.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        depth: int,
        window_size: int = 4,
        layer_scale_init: float | None = 1e-4,
        variant: str = "released",
        layer_scale_ffn: bool = False,
        rope_pairing: str = "halves",
        rope_dtype: str = "bf16",
    ):
        super().__init__()
        if variant not in TOKENIZER_VARIANTS:
            raise ValueError(f"tokenizer variant must be one of {TOKENIZER_VARIANTS}, got {variant!r}")
        self.window_size, self.variant = window_size, variant
        # One learnable token shared by all windows (as released), so any image size works.
        self.window_cls = nn.Parameter(torch.zeros(1, 1, dim))
        if variant == "released":
            self.local_pos_embed = nn.Parameter(torch.zeros(1, 1 + window_size**2, dim))
            self.rope = None
            blocks = [Block(dim, num_heads, layer_scale_init=None, qk_norm=False) for _ in range(depth)]
        else:
            self.local_pos_embed = None
            self.rope = Rope2D(dim // num_heads, dtype=rope_dtype)
            blocks = [
                Block(
                    dim,
                    num_heads,
                    layer_scale_init=layer_scale_init,
                    layer_scale_ffn=layer_scale_ffn,
                    rope_pairing=rope_pairing,
                )
                for _ in range(depth)
            ]
        self.blocks = nn.ModuleList(blocks)
        self.grad_checkpointing = False

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.window_cls, std=0.02)
        if self.local_pos_embed is not None:
            nn.init.trunc_normal_(self.local_pos_embed, std=0.02)

    def forward(self, x: Tensor, grid: tuple[int, int]) -> tuple[Tensor, tuple[int, int]]:
        B, _, D = x.shape
        h, w = grid
        ws = self.window_size
        if h % ws or w % ws:
            raise ValueError(f"token grid {h}x{w} is not divisible by the window size {ws}")
        nh, nw = h // ws, w // ws
        x = x.view(B, nh, ws, nw, ws, D).permute(0, 1, 3, 2, 4, 5)  # [B, nh, nw, ws, ws, D]
        x = x.reshape(B * nh * nw, ws * ws, D)  # [B*nW, ws*ws, D]
        x = torch.cat([self.window_cls.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)  # [B*nW, 1+ws², D]
        if self.local_pos_embed is not None:
            x = x + self.local_pos_embed
        rope = self.rope(ws, ws, num_prefix=1) if self.rope is not None else None
        for blk in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, rope, use_reentrant=False)
            else:
                x = blk(x, rope)
        return x[:, 0].reshape(B, nh * nw, D), (nh, nw)  # [B, nW, D]

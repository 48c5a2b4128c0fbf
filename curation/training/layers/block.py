"""Pre-norm transformer block: RMSNorm -> attention -> LayerScale, RMSNorm -> SwiGLU (-> LayerScale)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from curation.training.layers.attention import Attention
from curation.training.layers.ffn import SwiGLUFFN
from curation.training.layers.layer_scale import LayerScale
from curation.training.layers.norm import RMSNorm
from curation.training.layers.rope import Rotation


def _residual(x: Tensor, y: Tensor, ls: nn.Module) -> Tensor:
    """x + ls(y); with LayerScale one fused pass (addcmul) instead of a multiply and an add."""
    if isinstance(ls, LayerScale):
        return torch.addcmul(x, y, ls.gamma)
    return x + ls(y)


class Block(nn.Module):
    """Pre-norm transformer block. LayerScale sits on the attention branch only, as released
    (`layer_scale_ffn=True` adds one on the FFN branch too: our earlier variant)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        mlp_ratio: float = 4.0,
        layer_scale_init: float | None = 1e-4,
        qk_norm: bool = True,
        layer_scale_ffn: bool = False,
        rope_pairing: str = "halves",
    ):
        super().__init__()
        self.norm1 = RMSNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, num_kv_heads, qk_norm=qk_norm, rope_pairing=rope_pairing)
        self.ls1 = LayerScale(dim, layer_scale_init) if layer_scale_init else nn.Identity()
        self.norm2 = RMSNorm(dim, eps=1e-6)
        self.mlp = SwiGLUFFN(dim, int(dim * mlp_ratio))
        self.ls2 = (
            LayerScale(dim, layer_scale_init) if layer_scale_init and layer_scale_ffn else nn.Identity()
        )

    def forward(self, x: Tensor, rope: Rotation | None = None) -> Tensor:
        x = _residual(x, self.attn(self.norm1(x), rope), self.ls1)  # [B, N, D]
        x = _residual(x, self.mlp(self.norm2(x)), self.ls2)  # [B, N, D]
        return x

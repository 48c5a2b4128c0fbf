"""Multi-head / grouped-query self-attention with QK-norm and 2D RoPE.

x -> one projection to q, k, v -> RMSNorm of q and k per head (QK-norm) -> RoPE on q and k ->
softmax(q k^T / sqrt(Dh)) v through SDPA -> output projection. Grouped-query layers have fewer
K/V heads than query heads; SDPA shares them itself (`enable_gqa`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from curation.training import kernels
from curation.training.kernels import cpu
from curation.training.layers.linear import Linear
from curation.training.layers.norm import RMSNorm
from curation.training.layers.rope import Rotation, apply_rope


class Attention(nn.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        qkv_bias: bool = True,
        qk_norm: bool = True,
        rope_pairing: str = "halves",
    ):
        super().__init__()
        self.rope_pairing = rope_pairing
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads or num_heads
        if dim % num_heads or num_heads % self.num_kv_heads:
            raise ValueError(f"dim {dim}, heads {num_heads}, kv_heads {self.num_kv_heads} do not divide")
        self.head_dim = dim // num_heads
        # One matmul for q, k and v: on CPU three small GEMMs cost noticeably more than one.
        self.qkv = Linear(dim, (num_heads + 2 * self.num_kv_heads) * self.head_dim, bias=qkv_bias)
        self.q_norm = RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = Linear(dim, dim)

    def norm_and_rotate(self, qk: Tensor, rope: Rotation | None) -> tuple[Tensor, Tensor]:
        """QK-norm then RoPE of the q and k heads [B, N, H + Hkv, Dh] -> q [B, H, N, Dh], k [B, Hkv, N, Dh]."""
        H, Hkv, Dh = self.num_heads, self.num_kv_heads, self.head_dim
        qk_norm = isinstance(self.q_norm, RMSNorm)
        # The CPU kernel rotates in fp32; the released bf16 RoPE takes the plain ops below, which
        # round exactly as the release does.
        if qk_norm and (rope is None or rope.cos.dtype == torch.float32) and kernels.active(qk):
            gain = torch.cat([self.q_norm.weight.expand(H, Dh), self.k_norm.weight.expand(Hkv, Dh)])
            return cpu.qk_norm_rope(qk, gain, rope, self.q_norm.eps, self.rope_pairing).split((H, Hkv), dim=1)
        q, k = qk.transpose(1, 2).split((H, Hkv), dim=1)  # [B, H, N, Dh], [B, Hkv, N, Dh]
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, rope, self.rope_pairing), apply_rope(k, rope, self.rope_pairing)
        return q, k

    def forward(self, x: Tensor, rope: Rotation | None = None) -> Tensor:
        B, N, D = x.shape
        H, Hkv, Dh = self.num_heads, self.num_kv_heads, self.head_dim
        qk, v = self.qkv(x).split(((H + Hkv) * Dh, Hkv * Dh), dim=-1)  # [B, N, (H + Hkv) Dh], [B, N, Hkv Dh]
        q, k = self.norm_and_rotate(qk.view(B, N, H + Hkv, Dh), rope)
        v = v.view(B, N, Hkv, Dh).transpose(1, 2)  # [B, Hkv, N, Dh]
        gqa = Hkv != H
        if gqa and x.device.type != "cpu" and q.dtype not in (torch.bfloat16, torch.float16):
            # On GPU the fused GQA kernels are half-precision only; fp32 would fall back to the
            # math path, so materialising the shared K/V heads is faster there.
            k = k.repeat_interleave(H // Hkv, dim=1)  # [B, H, N, Dh]
            v = v.repeat_interleave(H // Hkv, dim=1)
            gqa = False
        x = F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)  # [B, H, N, Dh]
        x = x.transpose(1, 2).reshape(B, N, D)  # [B, N, D]
        return self.proj(x)

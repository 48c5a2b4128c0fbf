"""Multi-head / grouped-query self-attention with QK-norm and 2D RoPE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from curation.training.layers.rope import apply_rope


class Attention(nn.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        qkv_bias: bool = True,
        qk_norm: bool = True,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads or num_heads
        if dim % num_heads or num_heads % self.num_kv_heads:
            raise ValueError(f"dim {dim}, heads {num_heads}, kv_heads {self.num_kv_heads} do not divide")
        self.head_dim = dim // num_heads
        q_dim, kv_dim = dim, self.num_kv_heads * self.head_dim
        self.splits = (q_dim, kv_dim, kv_dim)
        # One matmul for q, k and v: on CPU three small GEMMs cost noticeably more than one.
        self.qkv = nn.Linear(dim, q_dim + 2 * kv_dim, bias=qkv_bias)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, rope: Tensor | None = None) -> Tensor:
        B, N, D = x.shape
        q, k, v = self.qkv(x).split(self.splits, dim=-1)
        q = q.view(B, N, self.num_heads, self.head_dim).transpose(1, 2)  # [B, H, N, Dh]
        k = k.view(B, N, self.num_kv_heads, self.head_dim).transpose(1, 2)  # [B, Hkv, N, Dh]
        v = v.view(B, N, self.num_kv_heads, self.head_dim).transpose(1, 2)  # [B, Hkv, N, Dh]
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        gqa = self.num_kv_heads != self.num_heads
        if gqa and q.dtype not in (torch.bfloat16, torch.float16):
            # The fused GQA kernels are half-precision only; in fp32 SDPA would fall back to the
            # slow math path, so materialising the shared K/V heads is faster.
            k = k.repeat_interleave(self.num_heads // self.num_kv_heads, dim=1)  # [B, H, N, Dh]
            v = v.repeat_interleave(self.num_heads // self.num_kv_heads, dim=1)
            gqa = False
        x = F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)  # [B, H, N, Dh]
        x = x.transpose(1, 2).reshape(B, N, D)  # [B, N, D]
        return self.proj(x)

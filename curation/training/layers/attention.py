"""Multi-head / grouped-query self-attention with QK-norm and 2D RoPE.

On CPU in fp32 the QK-norm and RoPE of q and k run as one hand-fused autograd function
(`QKNormRopeFn`: one RMS pass over q and k together, one in-place rotation, head-major output for
SDPA) instead of ~16 separate ops per layer, when the RoPE runs in fp32; elsewhere (and with the
released bf16 RoPE) the plain ops run. Grouped-query layers
pass `enable_gqa=True` to SDPA: the CPU flash kernel handles shared K/V heads itself, ~1.9x
faster forward + backward than materialising them with `repeat_interleave` (measured in fp32,
torch 2.14.1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from curation.training.layers.linear import linear
from curation.training.layers.norm import (
    RMSNorm,
    needs_autograd_fn,
    rms_norm_backward,
    rms_stats,
    use_fused_cpu,
)
from curation.training.layers.rope import Rotation, apply_rope, rotate_


def _as_complex(x: Tensor) -> Tensor:
    """[..., Dh] real -> [..., Dh/2] complex view (copying only if the strides do not allow a view)."""
    pairs = x.unflatten(-1, (-1, 2))
    try:
        return torch.view_as_complex(pairs)
    except RuntimeError:
        return torch.view_as_complex(pairs.contiguous())


def _rotate_in_place(y: Tensor, rope: Rotation, pairing: str, inverse: bool = False) -> None:
    """Rotate y [..., Dh] (token-major, any strides) in place by fp32 `rope` [B|1, N, 1, Dh/2]."""
    sin = -rope.sin if inverse else rope.sin
    if pairing == "halves":
        rotate_(*y.chunk(2, dim=-1), rope.cos, sin)
    else:  # adjacent pairs: one complex multiplication
        torch.view_as_complex(y.unflatten(-1, (-1, 2))).mul_(torch.complex(rope.cos, sin))


def qk_norm_rope(
    qk: Tensor, weight: Tensor, rope: Rotation | None, eps: float, pairing: str = "halves"
) -> tuple[Tensor, Tensor, Tensor]:
    """Forward of `QKNormRopeFn` in plain ops: (output [B, Hqk, N, Dh], xhat, rstd)."""
    B, N, H, Dh = qk.shape
    rstd = rms_stats(qk, eps)  # [B, N, Hqk, 1]
    xhat = qk * rstd
    out = qk.new_empty(B, H, N, Dh)
    out_bnhd = out.transpose(1, 2)  # [B, N, Hqk, Dh] view of the head-major buffer
    torch.mul(xhat, weight, out=out_bnhd)
    if rope is not None:  # rotate in place: no [B, N, Hqk, Dh] temporary (a fresh, page-faulted buffer)
        _rotate_in_place(out_bnhd, rope, pairing)
    return out, xhat, rstd


class QKNormRopeFn(torch.autograd.Function):
    """RMS-normalise q and k per head (gain `weight` [Hqk, Dh]) and rotate them by fp32 RoPE.

    qk: [B, N, Hqk, Dh] (q heads then k heads, a view of the fused projection's output);
    rope: `Rotation` of [B|1, N, 1, Dh/2] or None. Returns [B, Hqk, N, Dh], head-major.
    """

    @staticmethod
    def forward(ctx, qk: Tensor, weight: Tensor, rope: Rotation | None, eps: float, pairing: str) -> Tensor:
        out, xhat, rstd = qk_norm_rope(qk, weight, rope, eps, pairing)
        cos, sin = rope if rope is not None else (None, None)
        ctx.save_for_backward(xhat, rstd, weight, cos, sin)
        ctx.pairing = pairing
        return out

    @staticmethod
    def backward(ctx, gout: Tensor):
        xhat, rstd, weight, cos, sin = ctx.saved_tensors
        # Token-major copy, the layout of xhat for the reductions; the inverse rotation runs on it.
        g = gout.transpose(1, 2).contiguous()  # [B, N, Hqk, Dh]
        if cos is not None:
            _rotate_in_place(g, Rotation(cos, sin), ctx.pairing, inverse=True)
        dx, dw = rms_norm_backward(g, xhat, rstd, weight)
        return dx, dw, None, None, None


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
        q_dim, kv_dim = dim, self.num_kv_heads * self.head_dim
        self.splits = (q_dim, kv_dim, kv_dim)
        # One matmul for q, k and v: on CPU three small GEMMs cost noticeably more than one.
        self.qkv = nn.Linear(dim, q_dim + 2 * kv_dim, bias=qkv_bias)
        self.q_norm = RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, rope: Rotation | None = None) -> Tensor:
        B, N, D = x.shape
        H, Hkv, Dh = self.num_heads, self.num_kv_heads, self.head_dim
        qkv = linear(x, self.qkv)  # [B, N, (H + 2 Hkv) Dh]
        # The fused path rotates in fp32; bf16 RoPE (as released) takes the plain ops, which round
        # exactly as the release does.
        fp32_rope = rope is None or rope.cos.dtype == torch.float32
        if isinstance(self.q_norm, RMSNorm) and fp32_rope and use_fused_cpu(qkv):
            qk, v = qkv.split((D + Hkv * Dh, Hkv * Dh), dim=-1)
            weight = torch.cat([self.q_norm.weight.expand(H, Dh), self.k_norm.weight.expand(Hkv, Dh)])
            rot = rope.transpose(1, 2) if rope is not None else None  # [B|1, N, 1, Dh/2]
            qk = qk.view(B, N, H + Hkv, Dh)
            if needs_autograd_fn(qk, weight):
                qk = QKNormRopeFn.apply(qk, weight, rot, self.q_norm.eps, self.rope_pairing)
            else:
                qk = qk_norm_rope(qk, weight, rot, self.q_norm.eps, self.rope_pairing)[0]
            q, k = qk.split((H, Hkv), dim=1)  # [B, H, N, Dh], [B, Hkv, N, Dh]
        else:
            q, k, v = qkv.split(self.splits, dim=-1)
            q = q.view(B, N, H, Dh).transpose(1, 2)  # [B, H, N, Dh]
            k = k.view(B, N, Hkv, Dh).transpose(1, 2)  # [B, Hkv, N, Dh]
            q, k = self.q_norm(q), self.k_norm(k)
            if rope is not None:
                q, k = apply_rope(q, rope, self.rope_pairing), apply_rope(k, rope, self.rope_pairing)
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
        return linear(x, self.proj)

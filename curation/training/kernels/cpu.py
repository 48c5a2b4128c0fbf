"""Hand-fused forward + backward for fp32 on CPU: RMSNorm, Linear, the SwiGLU projection, and the
QK-norm + RoPE of q and k. Each computes what its layer's plain ops compute (training/layers/);
the layers call these only where `kernels.active(...)` is true. Why each exists, with the
measurements, is in docs/benchmarks.md ("Trainer: backbone throughput").

Every entry point runs its autograd function when a gradient is wanted, and the same arithmetic
as plain ops otherwise (no gradient, or `torch.jit.trace`, which cannot record Python autograd
functions).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _wants_grad(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and not torch.jit.is_tracing() and any(t.requires_grad for t in tensors)


def column_sum(m: Tensor) -> Tensor:
    """Sum over the rows of a 2-D matrix [T, n] -> [n] as one GEMV: CPU `sum(0)` is far slower."""
    return torch.mv(m.t(), m.new_ones(m.shape[0]))


# RMSNorm: 3 passes forward and 6 backward, against ~6 and ~10 for the composite `torch.rms_norm`.


def rms_stats(x: Tensor, eps: float) -> Tensor:
    """1 / sqrt(mean(x^2, -1) + eps), keepdim: one reduction pass (vector_norm, no x^2 temporary)."""
    return torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(x.shape[-1]).add_(eps).rsqrt_()


def rms_norm_backward(g: Tensor, xhat: Tensor, rstd: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients of `y = xhat * weight`, `xhat = x * rstd` for x and the (broadcast) weight:
    dx = rstd * (g*w - xhat * mean(g*w*xhat)), dw = sum over rows of g*xhat."""
    D = xhat.shape[-1]
    p = g * xhat  # [..., D]
    if p.shape == weight.shape:
        dw = p.clone()
    elif p.shape[-weight.dim() :] == weight.shape and p.is_contiguous():
        rows = p.view(-1, weight.numel())
        dw = column_sum(rows).view(weight.shape)
    else:
        dw = p.sum_to_size(weight.shape)
    if weight.dim() == 1:
        c = torch.mv(p.reshape(-1, D), weight).view(*p.shape[:-1], 1)  # [..., 1] = sum(g*w*xhat)
    else:
        c = p.mul_(weight).sum(-1, keepdim=True)
    dx = (g * weight).addcmul_(xhat, c, value=-1.0 / D).mul_(rstd)
    return dx, dw


class RMSNormFn(torch.autograd.Function):
    """y = x / sqrt(mean(x^2) + eps) * weight over the last dim; weight broadcasts to x."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, eps: float) -> Tensor:
        rstd = rms_stats(x, eps)  # [..., 1]
        xhat = x * rstd
        ctx.save_for_backward(xhat, rstd, weight)
        return xhat * weight

    @staticmethod
    def backward(ctx, g: Tensor):
        xhat, rstd, weight = ctx.saved_tensors
        dx, dw = rms_norm_backward(g, xhat, rstd, weight)
        return dx, dw, None


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    if _wants_grad(x, weight):
        return RMSNormFn.apply(x, weight, eps)
    return x * rms_stats(x, eps) * weight


# Linear: nn.Linear's arithmetic, with the bias gradient as a GEMV (`column_sum`).


class LinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(x2, weight)
        ctx.x_shape = x.shape
        return torch.addmm(bias, x2, weight.t()).view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, g: Tensor):
        x2, weight = ctx.saved_tensors
        g = g.reshape(-1, weight.shape[0])
        dx = torch.mm(g, weight).view(ctx.x_shape) if ctx.needs_input_grad[0] else None
        dw = torch.mm(g.t(), x2) if ctx.needs_input_grad[1] else None
        db = column_sum(g) if ctx.needs_input_grad[2] else None
        return dx, dw, db


def linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    if _wants_grad(x, weight, bias):
        return LinearFn.apply(x, weight, bias)
    return F.linear(x, weight, bias)


# SwiGLU projection: silu(x W1^T + b1) * (x W2^T + b2), with W1, W2 (b1, b2) the halves of `w12`.
# The gate and value run as two GEMMs into two buffers (and their gradients likewise): one
# [tokens, 2 hidden] buffer is above glibc malloc's mmap threshold at realistic sizes and was
# page-faulted afresh in every layer of every step.


class SwiGLUProjFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        hidden = weight.shape[0] // 2
        x2 = x.reshape(-1, x.shape[-1])  # [T, D]
        w1, w2 = weight.split(hidden)  # [hidden, D] each, contiguous row blocks
        if bias is None:
            a, v = torch.mm(x2, w1.t()), torch.mm(x2, w2.t())
        else:
            b1, b2 = bias.split(hidden)
            a, v = torch.addmm(b1, x2, w1.t()), torch.addmm(b2, x2, w2.t())  # [T, hidden] each
        sa = F.silu(a)
        ctx.save_for_backward(x2, weight, a, v, sa)
        ctx.has_bias, ctx.x_shape = bias is not None, x.shape
        return (sa * v).view(*x.shape[:-1], hidden)

    @staticmethod
    def backward(ctx, g: Tensor):
        x2, weight, a, v, sa = ctx.saved_tensors
        hidden = weight.shape[0] // 2
        w1, w2 = weight.split(hidden)
        g = g.reshape(-1, hidden)
        ga = torch.mul(g, v)
        torch.ops.aten.silu_backward.grad_input(ga, a, grad_input=ga)  # in place: elementwise
        gb = torch.mul(g, sa)
        # Out-of-place GEMMs (not `out=` / `addmm_`): torch's FlopCounterMode, which the benchmark
        # uses, does not count those overloads; the concatenations are cheap next to the GEMMs.
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = torch.addmm(torch.mm(ga, w1), gb, w2).view(ctx.x_shape)
        if ctx.needs_input_grad[1]:
            dw = torch.cat([torch.mm(ga.t(), x2), torch.mm(gb.t(), x2)])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = torch.cat([column_sum(ga), column_sum(gb)])
        return dx, dw, db


def swiglu_projection(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """silu(gate) * value [..., hidden] of the fused projection `w12` (weight, bias)."""
    params = [t for t in (weight, bias) if t is not None]
    if _wants_grad(x, *params):
        return SwiGLUProjFn.apply(x, weight, bias)
    gate, value = F.linear(x, weight, bias).chunk(2, dim=-1)  # the split only pays off in training
    return F.silu(gate) * value


# QK-norm + RoPE of q and k together: one RMS pass over both, one in-place fp32 rotation, written
# straight into the head-major layout SDPA reads (about 16 separate ops per layer otherwise).


def _rotate_in_place(y: Tensor, cos: Tensor, sin: Tensor, pairing: str, inverse: bool = False) -> None:
    """Rotate y [..., Dh] (token-major, any strides) in place by fp32 angles [B|1, N, 1, Dh/2]."""
    if inverse:
        sin = -sin
    if pairing == "halves":
        y1, y2 = y.chunk(2, dim=-1)
        t = y1.clone()
        y1.mul_(cos).addcmul_(y2, sin, value=-1.0)
        y2.mul_(cos).addcmul_(t, sin)
    else:  # adjacent pairs: one complex multiplication
        torch.view_as_complex(y.unflatten(-1, (-1, 2))).mul_(torch.complex(cos, sin))


def _qk_norm_rope_forward(qk, weight, cos, sin, eps, pairing) -> tuple[Tensor, Tensor, Tensor]:
    """(output [B, Hqk, N, Dh], xhat, rstd)."""
    B, N, H, Dh = qk.shape
    rstd = rms_stats(qk, eps)  # [B, N, Hqk, 1]
    xhat = qk * rstd
    out = qk.new_empty(B, H, N, Dh)
    out_bnhd = out.transpose(1, 2)  # [B, N, Hqk, Dh] view of the head-major buffer
    torch.mul(xhat, weight, out=out_bnhd)
    if cos is not None:  # in place: no [B, N, Hqk, Dh] temporary (a fresh, page-faulted buffer)
        _rotate_in_place(out_bnhd, cos, sin, pairing)
    return out, xhat, rstd


class QKNormRopeFn(torch.autograd.Function):
    """RMS-normalise q and k per head (gain `weight` [Hqk, Dh]) and rotate them by fp32 RoPE.
    qk: [B, N, Hqk, Dh] (q heads then k heads, a view of the fused projection's output)."""

    @staticmethod
    def forward(ctx, qk, weight, cos, sin, eps: float, pairing: str) -> Tensor:
        out, xhat, rstd = _qk_norm_rope_forward(qk, weight, cos, sin, eps, pairing)
        ctx.save_for_backward(xhat, rstd, weight, cos, sin)
        ctx.pairing = pairing
        return out

    @staticmethod
    def backward(ctx, gout: Tensor):
        xhat, rstd, weight, cos, sin = ctx.saved_tensors
        # Token-major copy, the layout of xhat for the reductions; the inverse rotation runs on it.
        g = gout.transpose(1, 2).contiguous()  # [B, N, Hqk, Dh]
        if cos is not None:
            _rotate_in_place(g, cos, sin, ctx.pairing, inverse=True)
        dx, dw = rms_norm_backward(g, xhat, rstd, weight)
        return dx, dw, None, None, None, None


def qk_norm_rope(
    qk: Tensor, weight: Tensor, rope: tuple[Tensor, Tensor] | None, eps: float, pairing: str
) -> Tensor:
    """qk [B, N, Hqk, Dh] -> normalised and rotated [B, Hqk, N, Dh].
    `rope`: fp32 (cos, sin) of [B|1, 1, N, Dh/2], or None."""
    cos, sin = (r.transpose(1, 2) for r in rope) if rope is not None else (None, None)  # [B|1, N, 1, Dh/2]
    if _wants_grad(qk, weight):
        return QKNormRopeFn.apply(qk, weight, cos, sin, eps, pairing)
    return _qk_norm_rope_forward(qk, weight, cos, sin, eps, pairing)[0]

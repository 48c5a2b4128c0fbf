"""RMSNorm, with a hand-fused forward + backward for fp32 on CPU.

`torch.rms_norm` has fused kernels on CUDA, but on CPU (torch 2.14) it is a composite of ~6 ops
(pow, mean, add, rsqrt, mul, mul) whose autograd backward adds ~10 more passes over the
activations; it cost ~2.5x LayerNorm in the backbone. `RMSNormFn` does the same arithmetic in 3
passes forward and 6 backward (the row dot product `sum(g * w * xhat)` is one GEMV), about 1.7x
faster forward + backward. It is used only where it pays and is safe: CPU, fp32, autocast off.
Elsewhere (CUDA, bf16) `torch.rms_norm` runs. `fused_cpu_kernels(False)` turns the CPU paths
off (tests compare both).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_FUSED_CPU = True


@contextlib.contextmanager
def fused_cpu_kernels(enabled: bool):
    """Temporarily enable or disable the hand-fused CPU autograd functions (for tests)."""
    global _FUSED_CPU
    previous, _FUSED_CPU = _FUSED_CPU, enabled
    try:
        yield
    finally:
        _FUSED_CPU = previous


def use_fused_cpu(x: Tensor) -> bool:
    """True where the hand-fused CPU functions apply: fp32 on CPU, autocast off."""
    return (
        _FUSED_CPU
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
    )


def needs_autograd_fn(*tensors: Tensor) -> bool:
    """Whether to run a hand-fused autograd function (else its forward's plain ops are enough:
    no gradient wanted, or `torch.jit.trace`, which cannot record Python autograd functions)."""
    return torch.is_grad_enabled() and not torch.jit.is_tracing() and any(t.requires_grad for t in tensors)


def rms_stats(x: Tensor, eps: float) -> Tensor:
    """1 / sqrt(mean(x^2, -1) + eps), keepdim: one reduction pass (vector_norm, no x^2 temporary)."""
    return torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(x.shape[-1]).add_(eps).rsqrt_()


def rms_norm_backward(g: Tensor, xhat: Tensor, rstd: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients of `y = xhat * weight`, `xhat = x * rstd` for x and the (broadcast) weight.

    dx = rstd * (g*w - xhat * mean(g*w*xhat)), dw = sum over rows of g*xhat.
    """
    D = xhat.shape[-1]
    p = g * xhat  # [..., D]
    if p.shape == weight.shape:
        dw = p.clone()
    elif p.shape[-weight.dim() :] == weight.shape and p.is_contiguous():
        # Rows of a contiguous matrix, summed as a GEMV: CPU sum(0) is far slower (layers/linear.py).
        rows = p.view(-1, weight.numel())
        dw = torch.mv(rows.t(), rows.new_ones(rows.shape[0])).view(weight.shape)
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
    if use_fused_cpu(x) and weight.dtype == torch.float32:
        if needs_autograd_fn(x, weight):
            return RMSNormFn.apply(x, weight, eps)
        return x * rms_stats(x, eps) * weight
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


class RMSNorm(nn.RMSNorm):
    """`nn.RMSNorm` (same parameters and state-dict keys) over the last dim, with a learnable gain."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__(dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)

"""nn.Linear's forward + backward for fp32 on CPU, with the bias gradient as a GEMV.

`column_sum` exists because torch 2.14's CPU `sum(0)` over a [tokens, features] matrix (what
autograd's addmm backward uses for a bias) ran 5-20x slower than `mv(g.t(), ones)` for the
backbone's shapes (1640 x 768: ~8 ms vs ~0.4 ms on 2 threads, measured); same sum, other order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from curation.training.layers.norm import needs_autograd_fn, use_fused_cpu


def column_sum(m: Tensor) -> Tensor:
    """Sum over the rows of a 2-D matrix [T, n] -> [n], as one GEMV."""
    return torch.mv(m.t(), m.new_ones(m.shape[0]))


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


def linear(x: Tensor, layer: torch.nn.Linear) -> Tensor:
    """`layer(x)`; through `LinearFn` where the hand-fused CPU paths apply (fp32, CPU, with bias)."""
    if layer.bias is not None and use_fused_cpu(x) and needs_autograd_fn(x, layer.weight, layer.bias):
        return LinearFn.apply(x, layer.weight, layer.bias)
    return F.linear(x, layer.weight, layer.bias)

"""SwiGLU feed-forward (Shazeer 2020), as in Sapiens2 and DINOv2."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from curation.training.layers.norm import needs_autograd_fn, use_fused_cpu


class SwiGLUFn(torch.autograd.Function):
    """silu(a) * b for h = [a | b] along the last dim.

    The backward writes both halves' gradients straight into one [..., 2 hidden] buffer, the
    layout the fused input projection's backward wants, instead of computing them separately and
    concatenating (a full extra pass over the largest activation of the block).
    """

    @staticmethod
    def forward(ctx, h: Tensor) -> Tensor:
        a, b = h.chunk(2, dim=-1)
        sa = F.silu(a)
        ctx.save_for_backward(h, sa)
        return sa * b

    @staticmethod
    def backward(ctx, g: Tensor):
        h, sa = ctx.saved_tensors
        a, b = h.chunk(2, dim=-1)
        gh = torch.empty_like(h, memory_format=torch.contiguous_format)
        ga, gb = gh.chunk(2, dim=-1)
        torch.mul(g, sa, out=gb)
        torch.mul(g, b, out=ga)
        torch.ops.aten.silu_backward.grad_input(ga, a, grad_input=ga)  # in place: elementwise
        return gh


class SwiGLUFFN(nn.Module):
    """`w3(silu(x W1) * x W2)` with W1, W2 fused into one matmul.

    Sapiens2 counts the hidden size as the full 4x width (no 2/3 rescaling as in LLaMA), which is
    what makes the released parameter counts (0.4b = 0.398B, ...) come out.
    """

    def __init__(self, dim: int, hidden_dim: int, bias: bool = True):
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden_dim, bias=bias)
        self.w3 = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.w12(x)  # [B, N, 2 hidden]
        if use_fused_cpu(h) and needs_autograd_fn(h):
            return self.w3(SwiGLUFn.apply(h))
        gate, value = h.chunk(2, dim=-1)  # 2 x [B, N, hidden]
        return self.w3(F.silu(gate) * value)  # [B, N, D]

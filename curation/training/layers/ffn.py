"""SwiGLU feed-forward (Shazeer 2020), as in Sapiens2 and DINOv2."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from curation.training import kernels
from curation.training.kernels import cpu
from curation.training.layers.linear import Linear


class SwiGLUFFN(nn.Module):
    """`w3(silu(x W1) * x W2)` with W1, W2 stored as one fused `w12` Linear.

    Sapiens2 counts the hidden size as the full 4x width (no 2/3 rescaling as in LLaMA), which is
    what makes the released parameter counts (0.4b = 0.398B, ...) come out.
    """

    def __init__(self, dim: int, hidden_dim: int, bias: bool = True):
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden_dim, bias=bias)
        self.w3 = Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        if kernels.active(x):
            return self.w3(cpu.swiglu_projection(x, self.w12.weight, self.w12.bias))
        gate, value = self.w12(x).chunk(2, dim=-1)  # 2 x [B, N, hidden]
        return self.w3(F.silu(gate) * value)  # [B, N, D]

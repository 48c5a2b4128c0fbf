"""RMSNorm (Zhang & Sennrich 2019): x / sqrt(mean(x^2) + eps) * gain, over the last dim."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from curation.training import kernels
from curation.training.kernels import cpu


class RMSNorm(nn.RMSNorm):
    """`nn.RMSNorm` (same parameters and state-dict keys) with a learnable gain."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__(dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        if kernels.active(x, self.weight):
            return cpu.rms_norm(x, self.weight, self.eps)
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)

"""nn.Linear, handing its arithmetic to the CPU kernel where `kernels.active` says so."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from curation.training import kernels
from curation.training.kernels import cpu


class Linear(nn.Linear):
    """`nn.Linear` (same parameters and state-dict keys): y = x W^T + b."""

    def forward(self, x: Tensor) -> Tensor:
        if self.bias is not None and kernels.active(x, self.weight):
            return cpu.linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)

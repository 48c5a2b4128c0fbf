"""Weight initialisation in one place, runnable again after meta-device construction.

Large models are built on the meta device, sharded with FSDP and materialised with
`to_empty()`, which leaves memory uninitialised: `init_weights` must then reach every parameter
and buffer. Linear and conv weights get trunc-normal(0.02) as in ViT/MAE/DINOv2; our own modules
define `reset_parameters()` for their direct parameters and buffers.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def init_weights(root: nn.Module) -> None:
    for m in root.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif hasattr(m, "reset_parameters"):
            m.reset_parameters()  # nn.RMSNorm and our own modules

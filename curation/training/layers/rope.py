"""2D rotary position embedding (axial RoPE, as in Sapiens2 / DINOv3).

Each head's channels form Dh/2 rotation pairs (adjacent channels); the first half of the pairs
rotates with the row, the second with the column. Coordinates are normalised to [-1, 1] per axis,
so a local crop and a global crop span the same angle range, which lets one model run at any
resolution. Prefix tokens (CLS, registers) get the identity rotation, so the attention applies
one formula to every token without slicing.

The rotation is one complex multiplication per pair: on CPU ~4x faster (forward + backward) than
the rotate-half formulation (chunk, negate, concatenate, two products), which matters because it
runs on q and k in every layer. The pairing of channels is a convention of this implementation;
released Sapiens2 weights (rotate-half pairing) would need their q/k projection rows permuted.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class Rope2D(nn.Module):
    def __init__(self, head_dim: int, base: float = 100.0):
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"2D RoPE needs head_dim divisible by 4, got {head_dim}")
        self.head_dim, self.base = head_dim, base
        # Persistent so that teacher.load_state_dict(student.state_dict()) carries it.
        self.register_buffer("periods", torch.empty(head_dim // 4), persistent=True)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        d = self.head_dim
        exponents = 2 * torch.arange(d // 4, dtype=torch.float32, device=self.periods.device) / (d // 2)
        self.periods.copy_(self.base**exponents)

    def grid_angles(self, h: int, w: int) -> Tensor:
        dd = {"device": self.periods.device, "dtype": torch.float32}
        ys = torch.arange(0.5, h, **dd) / h * 2 - 1  # [h]
        xs = torch.arange(0.5, w, **dd) / w * 2 - 1  # [w]
        coords = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).flatten(0, 1)  # [h*w, 2]
        angles = 2 * math.pi * coords[:, :, None] / self.periods.float()  # [h*w, 2, Dh/4]
        return angles.flatten(1)  # [h*w, Dh/2]: rows first, then columns

    def forward(self, h: int, w: int, num_prefix: int, keep: Tensor | None = None) -> Tensor:
        """Unit complex rotations for `num_prefix` prefix tokens then the grid tokens (all, or those
        in `keep`): complex64 [1, 1, P + h*w, Dh/2], or [B, 1, P + N_keep, Dh/2] with `keep`."""
        angles = self.grid_angles(h, w)  # [h*w, Dh/2]
        if keep is not None:
            angles = angles[keep]  # [B, N_keep, Dh/2]
        else:
            angles = angles[None]  # [1, h*w, Dh/2]
        prefix = angles.new_zeros(angles.shape[0], num_prefix, angles.shape[-1])
        angles = torch.cat([prefix, angles], dim=1)[:, None]  # [B|1, 1, P+N, Dh/2]
        return torch.polar(torch.ones_like(angles), angles)


def apply_rope(x: Tensor, rope: Tensor) -> Tensor:
    """Rotate channel pairs (2i, 2i+1) of x [B, H, N, Dh] by `rope` [., 1, N, Dh/2] (complex), in fp32."""
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))  # [B, H, N, Dh/2]
    return torch.view_as_real(pairs * rope).flatten(-2).to(x.dtype)  # [B, H, N, Dh]

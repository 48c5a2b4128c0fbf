"""2D rotary position embedding (axial RoPE, as in Sapiens2 / DINOv3).

Each head's channels are split in two halves of rotation pairs; the first quarter of frequencies
encodes the row, the second the column. Coordinates are normalised to [-1, 1] per axis, so a
local crop and a global crop span the same angle range, which lets one model run at any
resolution. Prefix tokens (CLS, registers) get the identity rotation (sin 0, cos 1), so the
attention applies one formula to every token without slicing.
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
        return angles.flatten(1).tile(2)  # [h*w, Dh]

    def forward(self, h: int, w: int, num_prefix: int, keep: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """sin, cos for `num_prefix` prefix tokens then the grid tokens (all, or those in `keep`).

        Returns tensors broadcastable to [B, heads, N, Dh]: [1, 1, N, Dh], or [B, 1, N, Dh] with `keep`.
        """
        angles = self.grid_angles(h, w)  # [h*w, Dh]
        if keep is not None:
            angles = angles[keep]  # [B, N_keep, Dh]
        else:
            angles = angles[None]  # [1, h*w, Dh]
        prefix = angles.new_zeros(angles.shape[0], num_prefix, angles.shape[-1])
        angles = torch.cat([prefix, angles], dim=1)[:, None]  # [B|1, 1, P+N, Dh]
        return angles.sin(), angles.cos()


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
    sin, cos = rope
    return (x * cos + rotate_half(x) * sin).to(x.dtype)  # [B, H, N, Dh]

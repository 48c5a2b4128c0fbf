"""2D rotary position embedding (axial RoPE), as released with Sapiens2 (the DINOv3 formulation).

Each head's Dh channels form Dh/2 rotation pairs; the first Dh/4 pair angles follow the row, the
next Dh/4 the column. Coordinates are normalised to [-1, 1] per axis ("separate"), so a local crop
and a global crop span the same angle range, which lets one model run at any resolution. Prefix
tokens (CLS, registers) get the identity rotation (cos 1, sin 0), so the attention applies one
formula to every token without slicing.

Two named choices, defaults as released:
- `pairing="halves"`: channel i pairs with channel i + Dh/2 (rotate-half). Our earlier variant,
  `"pairs"`, pairs adjacent channels (2i, 2i+1) and rotates them as one complex multiplication
  (~4x cheaper on CPU); the two compute the same family of functions up to a fixed permutation of
  the q/k projection rows, but the same weights give different outputs.
- `dtype="bf16"`: the released model computes the periods, the angles, sin/cos and the rotation of
  q and k in bfloat16 even in an fp32 model (its `pos_embed_rope_dtype` default). `"fp32"` keeps
  them in float32 (our variant: more exact, and it lets the fused CPU kernels run).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

ROPE_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
PAIRINGS = ("halves", "pairs")


class Rotation(NamedTuple):
    """Per-token rotation angles as cos and sin, [B|1, 1, P + N, Dh/2] each, in the RoPE dtype."""

    cos: Tensor
    sin: Tensor

    def transpose(self, a: int, b: int) -> Rotation:
        return Rotation(self.cos.transpose(a, b), self.sin.transpose(a, b))


class Rope2D(nn.Module):
    def __init__(self, head_dim: int, base: float = 100.0, dtype: str = "bf16"):
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"2D RoPE needs head_dim divisible by 4, got {head_dim}")
        if dtype not in ROPE_DTYPES:
            raise ValueError(f"rope dtype must be one of {sorted(ROPE_DTYPES)}, got {dtype!r}")
        self.head_dim, self.base = head_dim, base
        # Not read from the buffer's dtype: a `.float()` or `.to()` of the module must not change it.
        self.dtype = ROPE_DTYPES[dtype]
        # Persistent (as released) so that teacher.load_state_dict(student.state_dict()) carries it.
        self.register_buffer("periods", torch.empty(head_dim // 4, dtype=self.dtype), persistent=True)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        d, dd = self.head_dim, {"dtype": self.dtype, "device": self.periods.device}
        # The release's arithmetic, op for op and in its dtype, so that bf16 periods match bit for bit.
        self.periods.copy_(self.base ** (2 * torch.arange(d // 4, **dd) / (d // 2)))

    def grid_angles(self, h: int, w: int) -> Tensor:
        dd = {"device": self.periods.device, "dtype": self.dtype}
        ys = torch.arange(0.5, h, **dd) / h  # [h]
        xs = torch.arange(0.5, w, **dd) / w  # [w]
        coords = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).flatten(0, 1)  # [h*w, 2]
        coords = 2.0 * coords - 1.0  # [0, 1] -> [-1, 1]
        angles = 2 * math.pi * coords[:, :, None] / self.periods.to(self.dtype)[None, None, :]
        return angles.flatten(1)  # [h*w, Dh/2]: rows first, then columns

    def forward(self, h: int, w: int, num_prefix: int, keep: Tensor | None = None) -> Rotation:
        """Rotations for `num_prefix` prefix tokens then the grid tokens (all, or those in `keep`):
        [1, 1, P + h*w, Dh/2], or [B, 1, P + N_keep, Dh/2] with `keep`."""
        angles = self.grid_angles(h, w)  # [h*w, Dh/2]
        angles = angles[keep] if keep is not None else angles[None]  # [B|1, N, Dh/2]
        cos, sin = torch.cos(angles), torch.sin(angles)
        ones = cos.new_ones(cos.shape[0], num_prefix, cos.shape[-1])
        cos = torch.cat([ones, cos], dim=1)[:, None]  # [B|1, 1, P+N, Dh/2]
        sin = torch.cat([torch.zeros_like(ones), sin], dim=1)[:, None]
        return Rotation(cos, sin)


def apply_rope(x: Tensor, rope: Rotation, pairing: str = "halves") -> Tensor:
    """Rotate x [B, H, N, Dh] by `rope`, in the rotation's dtype, returned in x's dtype.

    With "halves" and bf16 this is the release's `x * cos + rotate_half(x) * sin`, rounding for
    rounding: each product and the sum round to bf16 in the same order.
    """
    xr = x.to(rope.cos.dtype)
    if pairing == "halves":
        x1, x2 = xr.chunk(2, dim=-1)
    elif pairing == "pairs":
        x1, x2 = xr.unflatten(-1, (-1, 2)).unbind(-1)
    else:
        raise ValueError(f"rope pairing must be one of {PAIRINGS}, got {pairing!r}")
    c, s = rope
    out1, out2 = x1 * c - x2 * s, x2 * c + x1 * s
    out = (
        torch.cat([out1, out2], dim=-1) if pairing == "halves" else torch.stack([out1, out2], -1).flatten(-2)
    )
    return out.to(x.dtype)

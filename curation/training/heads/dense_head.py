"""Dense heads: a PixelShuffle decoder from the backbone's feature map up to the output resolution.

Each stage is a 3x3 conv to 4x the next width followed by PixelShuffle(2): upsampling by
rearranging learned channels (no checkerboard artefacts of strided transposed convs, no blur of
bilinear upsampling), which keeps edges sharp for segmentation and normals.

The decoder has log2(upsample) stages: 4 for the plain backbone (a token per 16 pixels, output at
the input resolution), 5 for the 4K variant (a token per 64 pixels after window pooling, output
at half the input resolution, as the paper decodes its 4K models at 2K). `channels` lists the
widths for 4 stages; more stages append widths that keep halving (down to 16), fewer use the
first ones, so the same config serves every grid and the extra stages, which run at the highest
resolutions, stay cheap.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def decoder_widths(channels: list[int], upsample: int) -> list[int]:
    """The widths of a decoder over `upsample`: the first log2(upsample) + 1 of `channels`, extended
    by halving where there are more stages than widths."""
    stages = int(math.log2(upsample))
    if 2**stages != upsample or stages < 1 or len(channels) < 2:
        raise ValueError(f"upsampling {upsample} (a power of 2 from 2) needs 2 or more widths, got {channels}")
    widths = list(channels[: stages + 1])
    while len(widths) < stages + 1:
        widths.append(max(widths[-1] // 2, min(widths[-1], 16)))
    return widths


class PixelShuffleDecoder(nn.Module):
    def __init__(self, in_dim: int, out_channels: int, channels: list[int], upsample: int = 16):
        super().__init__()
        channels = decoder_widths(channels, upsample)
        self.proj = nn.Conv2d(in_dim, channels[0], kernel_size=1)
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c_in, c_out * 4, kernel_size=3, padding=1),
                nn.PixelShuffle(2),
                nn.GELU(),
            )
            for c_in, c_out in itertools.pairwise(channels)
        )
        self.out = nn.Conv2d(channels[-1], out_channels, kernel_size=3, padding=1)

    def forward(self, features: Tensor) -> Tensor:
        x = self.proj(features)  # [B, C0, h, w]
        for stage in self.stages:
            x = stage(x)  # [B, C_i, 2h, 2w]
        return self.out(x)  # [B, out, upsample*h, upsample*w]


class NormalHead(PixelShuffleDecoder):
    """Unit normals: the decoder's 3 channels, L2-normalised per pixel."""

    def __init__(self, in_dim: int, channels: list[int], upsample: int = 16):
        super().__init__(in_dim, 3, channels, upsample)

    def forward(self, features: Tensor) -> Tensor:
        return F.normalize(super().forward(features), dim=1, eps=1e-6)  # [B, 3, H, W]


class AlbedoHead(PixelShuffleDecoder):
    """Albedo in [0, 1] RGB."""

    def __init__(self, in_dim: int, channels: list[int], upsample: int = 16):
        super().__init__(in_dim, 3, channels, upsample)

    def forward(self, features: Tensor) -> Tensor:
        return torch.sigmoid(super().forward(features))  # [B, 3, H, W]


class PointmapHead(nn.Module):
    """Per-pixel XYZ in a camera with a canonical focal length, plus a global log-scale.

    Metric points are `points * exp(log_scale)`: the scale, which needs the true focal length,
    is predicted from the whole image, and the canonical points need only local shape."""

    def __init__(self, in_dim: int, channels: list[int], upsample: int = 16):
        super().__init__()
        self.points = PixelShuffleDecoder(in_dim, 3, channels, upsample)
        self.scale = nn.Sequential(nn.Linear(in_dim, channels[0]), nn.GELU(), nn.Linear(channels[0], 1))

    def forward(self, features: Tensor) -> dict[str, Tensor]:
        return {
            "points": self.points(features),  # [B, 3, H, W]
            "log_scale": self.scale(features.mean(dim=(2, 3)))[:, 0],  # [B]
        }

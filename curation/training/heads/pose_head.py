"""Top-down pose head: transposed convolutions to 1/4 of the input, one heatmap per keypoint."""

from __future__ import annotations

import math

from torch import Tensor, nn

HEATMAP_STRIDE = 4  # input pixels per heatmap pixel; labels.py encodes the targets at this stride


class PoseHead(nn.Module):
    """`stride` is the backbone's token stride: 16 needs 2 deconvs to reach 1/4, the 4K variant's
    64 needs 4, so the heatmaps match the H/4 x W/4 targets on either grid."""

    def __init__(self, in_dim: int, num_keypoints: int, channels: int = 256, stride: int = 16):
        super().__init__()
        upsample_layers = round(math.log2(max(stride / HEATMAP_STRIDE, 1)))
        if HEATMAP_STRIDE * 2**upsample_layers != stride:
            raise ValueError(f"token stride {stride} is not {HEATMAP_STRIDE} x a power of 2")
        layers: list[nn.Module] = []
        c_in = in_dim
        for _ in range(upsample_layers):  # each doubles the resolution
            layers += [
                nn.ConvTranspose2d(c_in, channels, kernel_size=4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
            c_in = channels
        self.deconv = nn.Sequential(*layers)
        self.final = nn.Conv2d(c_in, num_keypoints, kernel_size=1)

    def forward(self, features: Tensor) -> Tensor:
        return self.final(self.deconv(features))  # [B, K, H/4, W/4]

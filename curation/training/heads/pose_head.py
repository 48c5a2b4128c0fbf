"""Top-down pose head: transposed convolutions to 1/4 of the output resolution, one heatmap per keypoint."""

from __future__ import annotations

import math

from torch import Tensor, nn

HEATMAP_STRIDE = 4  # output pixels per heatmap pixel; labels.py encodes the targets at this stride


class PoseHead(nn.Module):
    """`upsample`: output pixels per token. 16 (plain backbone, output at the input resolution)
    needs 2 deconvs to reach 1/4; the 4K variant's 32 (a token per 64 input pixels, output at half
    the input) needs 3, so the heatmaps match the targets labels.py encodes."""

    def __init__(self, in_dim: int, num_keypoints: int, channels: int = 256, upsample: int = 16):
        super().__init__()
        upsample_layers = round(math.log2(max(upsample / HEATMAP_STRIDE, 1)))
        if HEATMAP_STRIDE * 2**upsample_layers != upsample:
            raise ValueError(f"upsampling {upsample} is not {HEATMAP_STRIDE} x a power of 2")
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
        return self.final(self.deconv(features))  # [B, K, H_out/4, W_out/4]

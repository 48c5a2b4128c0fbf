"""Top-down pose head: transposed convolutions to 1/4 of the input, one heatmap per keypoint."""

from __future__ import annotations

from torch import Tensor, nn


class PoseHead(nn.Module):
    def __init__(self, in_dim: int, num_keypoints: int, channels: int = 256, upsample_layers: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_dim
        for _ in range(upsample_layers):  # each doubles the resolution: stride 16 -> 4 with two
            layers += [
                nn.ConvTranspose2d(c_in, channels, kernel_size=4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
            c_in = channels
        self.deconv = nn.Sequential(*layers)
        self.final = nn.Conv2d(c_in, num_keypoints, kernel_size=1)

    def forward(self, features: Tensor) -> Tensor:
        return self.final(self.deconv(features))  # [B, K, 4h, 4w]

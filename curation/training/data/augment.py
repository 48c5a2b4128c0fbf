"""Multi-crop views for pretraining: 2 global + N local crops, flips, mild colour jitter only.

Colour cues matter for albedo downstream, so there is no grayscale, solarisation or strong hue
shift. Every random choice is drawn from a `torch.Generator` seeded per sample (not from the
global RNG), so a sample's crops are a function of its stream position: the same after a resume
and regardless of which DataLoader worker made them.
"""

from __future__ import annotations

import math

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen))


def random_resized_crop_box(
    width: int, height: int, scale: tuple[float, float], ratio: float, gen: torch.Generator
) -> tuple[int, int, int, int]:
    """(top, left, h, w) covering `scale` of the area at about the target aspect `ratio` = w / h."""
    area = width * height
    for _ in range(10):
        target_area = area * _uniform(gen, *scale)
        aspect = ratio * math.exp(_uniform(gen, math.log(3 / 4), math.log(4 / 3)))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=gen))
            left = int(torch.randint(0, width - w + 1, (), generator=gen))
            return top, left, h, w
    # Fallback: the largest centred box at the target aspect.
    w, h = (width, round(width / ratio)) if width / height < ratio else (round(height * ratio), height)
    return (height - h) // 2, (width - w) // 2, h, w


class MultiCrop:
    def __init__(
        self,
        global_size: tuple[int, int],
        local_size: tuple[int, int],
        local_crops: int,
        global_scale: tuple[float, float] = (0.4, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.4),
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.1,
        jitter_prob: float = 0.5,
        hflip_prob: float = 0.5,
        global_crops: int = 2,
    ):
        self.global_size, self.local_size = tuple(global_size), tuple(local_size)
        self.global_crops, self.local_crops = global_crops, local_crops
        self.global_scale, self.local_scale = tuple(global_scale), tuple(local_scale)
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation
        self.jitter_prob, self.hflip_prob = jitter_prob, hflip_prob

    def decode_size(self) -> tuple[int, int]:
        """Smallest (w, h) worth decoding: JPEG DCT scaling (PIL draft) is ~3x cheaper than a full decode."""
        h, w = self.global_size
        return 2 * w, 2 * h

    def view(self, image: Image.Image, size: tuple[int, int], scale, gen: torch.Generator) -> Tensor:
        H, W = size
        top, left, h, w = random_resized_crop_box(image.width, image.height, scale, W / H, gen)
        crop = image.resize((W, H), Image.BICUBIC, box=(left, top, left + w, top + h))
        x = TF.to_dtype(TF.pil_to_tensor(crop), torch.float32, scale=True)  # [3, H, W] in [0, 1]
        if float(torch.rand((), generator=gen)) < self.hflip_prob:
            x = x.flip(-1)
        if float(torch.rand((), generator=gen)) < self.jitter_prob:
            x = TF.adjust_brightness(x, _uniform(gen, 1 - self.brightness, 1 + self.brightness))
            x = TF.adjust_contrast(x, _uniform(gen, 1 - self.contrast, 1 + self.contrast))
            x = TF.adjust_saturation(x, _uniform(gen, 1 - self.saturation, 1 + self.saturation))
        return TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD)

    def __call__(self, image: Image.Image, gen: torch.Generator) -> dict[str, Tensor]:
        image = image.convert("RGB")
        views = [self.view(image, self.global_size, self.global_scale, gen) for _ in range(self.global_crops)]
        local = [self.view(image, self.local_size, self.local_scale, gen) for _ in range(self.local_crops)]
        out = {"global": torch.stack(views)}  # [G, 3, H, W]
        h, w = self.local_size
        out["local"] = torch.stack(local) if local else torch.empty(0, 3, h, w)  # [L, 3, h, w]
        return out

"""The 4K variant: a local stage in 4x4-token windows, pooled to one token per window, masked after."""

from __future__ import annotations

import pytest
import torch

from curation.training.backbone import build_backbone
from curation.training.mae import random_masking
from curation.training.meta_arch import SSLMetaArch

pytestmark = pytest.mark.timeout(60)


def test_forward_at_1024_pools_windows_to_a_4x_smaller_grid():
    torch.manual_seed(0)
    model = build_backbone("sapiens2-tiny-4k").eval()
    assert model.window_stage is not None and model.token_stride == 64
    with torch.no_grad():
        out = model(torch.randn(1, 3, 1024, 1024))
    assert out["grid"] == (16, 16)  # 64x64 patches -> 16x16 windows
    assert out["patch"].shape == (1, 256, 64)
    assert torch.isfinite(out["tokens"]).all()


def test_masked_windows_have_no_path_to_the_encoder_output():
    torch.manual_seed(0)
    model = build_backbone("sapiens2-tiny-4k")
    images = torch.randn(2, 3, 256, 256, requires_grad=True)  # 4x4 windows of 64x64 pixels
    keep, mask, _ = random_masking(2, 16, mask_ratio=0.75, device=None)
    out = model(images, keep)
    # Every output the encoder produces (CLS, registers, visible tokens), randomly weighted.
    (out["tokens"] * torch.randn_like(out["tokens"])).sum().backward()
    grad = images.grad.abs().sum(dim=1)  # [B, 256, 256]
    per_window = grad.view(2, 4, 64, 4, 64).sum(dim=(2, 4)).flatten(1)  # [B, 16] in grid order
    masked = mask.bool()
    assert torch.all(per_window[masked] == 0), "a masked window's pixels reach the encoder output"
    assert torch.all(per_window[~masked] > 0), "a visible window's pixels do not reach the output"


def test_pretraining_objective_runs_on_the_4k_variant(tiny_config):
    cfg = tiny_config("", "model.name=sapiens2-tiny-4k", "data.local_crops=0")
    torch.manual_seed(0)
    model = SSLMetaArch(cfg)
    out = model(torch.randn(2, 2, 3, 128, 128), None, teacher_temp=0.04)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["mae"] > 0
    # As the paper's 4K models, the decoder reconstructs at half the input resolution ("2K output"):
    # each 64x64-pixel token predicts its 32x32 patch of the 2x average-pooled image.
    assert cfg.mae.output_scale == 0.5 and model.target_pool == 2
    assert model.student["mae_decoder"].pixel_shuffle.upscale_factor == 32
    assert model.student["backbone"].window_stage.window_cls.grad.abs().sum() > 0
    assert model.student["backbone"].window_stage.local_pos_embed.grad.abs().sum() > 0
    full = SSLMetaArch(tiny_config("", "model.name=sapiens2-tiny-4k", "mae.output_scale=1.0"))
    assert full.student["mae_decoder"].pixel_shuffle.upscale_factor == 64 and full.target_pool == 1

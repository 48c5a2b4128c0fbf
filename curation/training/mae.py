"""Masked autoencoding (He et al. 2022, `models_mae.py`), adapted to Sapiens2.

The encoder sees only the visible tokens (`random_masking` -> `keep`). A light decoder fills the
masked positions with a learned mask token, runs a few RoPE blocks over the full grid and maps
tokens back to pixels with a 1x1 conv + PixelShuffle. The loss is the MSE to per-patch normalised
pixels, on masked patches only.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from curation.training.init import init_weights
from curation.training.layers import Block, Rope2D


def random_masking(
    batch: int, num_tokens: int, mask_ratio: float, device=None
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image random subset of tokens to keep.

    Returns keep [B, N_keep] (grid indices of visible tokens), mask [B, N] (1 = masked) and
    restore [B, N] (argsort that puts [visible, masked] back in grid order).
    """
    num_keep = max(1, round(num_tokens * (1 - mask_ratio)))
    noise = torch.rand(batch, num_tokens, device=device)  # [B, N]
    shuffle = noise.argsort(dim=1)  # ascending: small noise is kept
    restore = shuffle.argsort(dim=1)
    keep = shuffle[:, :num_keep]  # [B, N_keep]
    mask = torch.ones(batch, num_tokens, device=device)
    mask[:, :num_keep] = 0
    mask = mask.gather(1, restore)  # [B, N], grid order
    return keep, mask, restore


def patchify(images: Tensor, p: int) -> Tensor:
    """[B, C, H, W] -> [B, N, p*p*C] with N = (H/p)*(W/p), row-major patches."""
    B, C, H, W = images.shape
    x = images.reshape(B, C, H // p, p, W // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(B, (H // p) * (W // p), p * p * C)


def mae_loss(images: Tensor, pred: Tensor, mask: Tensor, p: int, norm_pix: bool = True) -> Tensor:
    """MSE on masked patches. images, pred: [B, C, H, W]; mask: [B, N] with 1 = masked."""
    target = patchify(images, p).float()  # [B, N, p*p*C]
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    loss = (patchify(pred, p).float() - target).pow(2).mean(dim=-1)  # [B, N]
    return (loss * mask).sum() / mask.sum().clamp(min=1)


class MAEDecoder(nn.Module):
    def __init__(
        self,
        encoder_dim: int,
        num_prefix_tokens: int,
        token_stride: int,
        dim: int = 512,
        depth: int = 4,
        num_heads: int = 16,
        out_chans: int = 3,
    ):
        super().__init__()
        self.num_prefix_tokens = num_prefix_tokens
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        # Not part of the released model (which ships no decoder): fp32 RoPE, the fused CPU path.
        self.rope = Rope2D(dim // num_heads, dtype="fp32")
        self.blocks = nn.ModuleList([Block(dim, num_heads, layer_scale_init=None) for _ in range(depth)])
        self.norm = nn.RMSNorm(dim, eps=1e-6)
        # Each token predicts its token_stride x token_stride pixel patch as channels, and
        # PixelShuffle lays them out as an image, so the loss compares images, not token vectors.
        self.to_pixels = nn.Conv2d(dim, out_chans * token_stride**2, kernel_size=1)
        self.pixel_shuffle = nn.PixelShuffle(token_stride)
        init_weights(self)

    def reset_parameters(self) -> None:
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, tokens: Tensor, restore: Tensor, grid: tuple[int, int]) -> Tensor:
        """tokens: encoder output [B, P + N_keep, D_enc] -> reconstructed images [B, C, H, W]."""
        x = self.embed(tokens)  # [B, P + N_keep, d]
        P = self.num_prefix_tokens
        B, _, d = x.shape
        N = restore.shape[1]
        masked = self.mask_token.to(x.dtype).expand(B, N - (x.shape[1] - P), -1)
        grid_tokens = torch.cat([x[:, P:], masked], dim=1)  # [B, N, d], visible first
        grid_tokens = grid_tokens.gather(1, restore[..., None].expand(-1, -1, d))  # grid order
        x = torch.cat([x[:, :P], grid_tokens], dim=1)  # [B, P + N, d]
        rope = self.rope(*grid, num_prefix=P)
        for blk in self.blocks:
            x = blk(x, rope)
        x = self.norm(x[:, P:])  # [B, N, d]
        h, w = grid
        x = x.transpose(1, 2).reshape(B, d, h, w)  # [B, d, h, w]
        return self.pixel_shuffle(self.to_pixels(x))  # [B, C, h*s, w*s]

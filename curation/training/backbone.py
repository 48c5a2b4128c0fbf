"""Sapiens2 vision transformer, as released (facebookresearch/sapiens2 `backbones/sapiens2.py`).

Patch 16, pre-norm RMSNorm blocks with QK-norm, SwiGLU FFN (hidden 4x), 2D RoPE (rotate-half,
computed in bf16), LayerScale on the attention branch, 1 [CLS] + 8 register tokens. The first 8
and last 8 layers use multi-head attention; the middle layers use grouped-query attention with
half as many K/V heads. The 4K variant (`-4k` names) adds a tokenizer of window layers that pools
4x4 tokens to one before the global layers (window_stage.py).

Our earlier variants stay available behind named options, all off by default: `rope_pairing=
"pairs"`, `rope_dtype="fp32"`, `layer_scale_ffn=True`, `tokenizer="rope"` (ARCH_OPTIONS).

`forward(images, keep=None)` runs the encoder; `keep` holds, per image, the indices of the token
grid positions to encode (MAE's visible tokens). Masking happens after the local stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from curation.training.init import init_weights
from curation.training.layers import Block, RMSNorm, Rope2D
from curation.training.window_stage import WindowStage


@dataclass(frozen=True)
class Size:
    dim: int
    depth: int
    heads: int
    window_layers_4k: int  # layers of the local stage in the -4k variant (as released)
    mha_first: int = 8
    mha_last: int = 8


SIZES: dict[str, Size] = {
    # Tests only: small enough for CPU; 1 MHA layer at each end so the middle ones exercise GQA.
    "sapiens2-tiny": Size(dim=64, depth=4, heads=4, window_layers_4k=1, mha_first=1, mha_last=1),
    "sapiens2-0.1b": Size(dim=768, depth=12, heads=12, window_layers_4k=2),
    "sapiens2-0.4b": Size(dim=1024, depth=24, heads=16, window_layers_4k=2),
    "sapiens2-0.8b": Size(dim=1280, depth=32, heads=16, window_layers_4k=3),
    "sapiens2-1b": Size(dim=1536, depth=40, heads=24, window_layers_4k=4),
    "sapiens2-5b": Size(dim=2432, depth=56, heads=32, window_layers_4k=6),
}


# Architecture options and their released values; a checkpoint's config.model records them.
ARCH_OPTIONS: dict[str, Any] = {
    "rope_pairing": "halves",
    "rope_dtype": "bf16",
    "layer_scale_ffn": False,
    "tokenizer": "released",
}


def arch_options(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """The architecture options of a config.model mapping; a key it lacks takes the released value."""
    return {k: model_cfg.get(k, v) for k, v in ARCH_OPTIONS.items()}


def list_sizes() -> list[str]:
    return [*SIZES, *(f"{name}-4k" for name in SIZES)]


class Sapiens2ViT(nn.Module):
    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        patch_size: int = 16,
        in_chans: int = 3,
        num_registers: int = 8,
        mha_first: int = 8,
        mha_last: int = 8,
        mlp_ratio: float = 4.0,
        layer_scale_init: float | None = 1e-4,
        window_layers: int = 0,
        window_size: int = 4,
        rope_pairing: str = "halves",
        rope_dtype: str = "bf16",
        layer_scale_ffn: bool = False,
        tokenizer: str = "released",
    ):
        super().__init__()
        self.dim, self.depth, self.num_heads = dim, depth, num_heads
        self.patch_size = patch_size
        self.arch_options = {
            "rope_pairing": rope_pairing,
            "rope_dtype": rope_dtype,
            "layer_scale_ffn": layer_scale_ffn,
            "tokenizer": tokenizer,
        }
        self.num_prefix_tokens = 1 + num_registers
        self.patch_embed = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)
        self.window_stage = (
            WindowStage(
                dim,
                num_heads,
                window_layers,
                window_size,
                layer_scale_init,
                variant=tokenizer,
                layer_scale_ffn=layer_scale_ffn,
                rope_pairing=rope_pairing,
                rope_dtype=rope_dtype,
            )
            if window_layers
            else None
        )
        # Pixels per encoder token: MAE masks and reconstructs at this granularity.
        self.token_stride = patch_size * (window_size if window_layers else 1)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_registers, dim))
        self.rope = Rope2D(dim // num_heads, dtype=rope_dtype)
        self.blocks = nn.ModuleList(
            [
                Block(
                    dim,
                    num_heads,
                    num_kv_heads=num_heads if i < mha_first or i >= depth - mha_last else num_heads // 2,
                    mlp_ratio=mlp_ratio,
                    layer_scale_init=layer_scale_init,
                    layer_scale_ffn=layer_scale_ffn,
                    rope_pairing=rope_pairing,
                )
                for i in range(depth)
            ]
        )
        self.norm = RMSNorm(dim, eps=1e-6)
        self.grad_checkpointing = False
        init_weights(self)

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.register_tokens, std=0.02)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        self.grad_checkpointing = enabled
        if self.window_stage is not None:
            self.window_stage.grad_checkpointing = enabled

    def tokenize(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Patch embedding (and the local window stage): images -> grid tokens before masking."""
        x = self.patch_embed(images)  # [B, D, H/p, W/p]
        grid = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)  # [B, h*w, D]
        if self.window_stage is not None:
            x, grid = self.window_stage(x, grid)  # [B, h*w/16, D]
        return x, grid

    def forward(self, images: Tensor, keep: Tensor | None = None) -> dict[str, Tensor | tuple[int, int]]:
        """Encode images; with `keep` [B, N_keep] only those grid tokens (MAE's visible set)."""
        x, grid = self.tokenize(images)  # [B, N, D]
        B, _, D = x.shape
        if keep is not None:
            x = x.gather(1, keep[..., None].expand(-1, -1, D))  # [B, N_keep, D]
        prefix = torch.cat([self.cls_token, self.register_tokens], dim=1).expand(B, -1, -1)
        x = torch.cat([prefix.to(x.dtype), x], dim=1)  # [B, P + N_keep, D]
        rope = self.rope(*grid, num_prefix=self.num_prefix_tokens, keep=keep)
        for blk in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, rope, use_reentrant=False)
            else:
                x = blk(x, rope)
        x = self.norm(x)
        P = self.num_prefix_tokens
        return {"cls": x[:, 0], "registers": x[:, 1:P], "patch": x[:, P:], "grid": grid, "tokens": x}

    def feature_map(self, images: Tensor) -> Tensor:
        """Patch features as an image-shaped map for dense heads: [B, D, h, w]."""
        out = self.forward(images)
        h, w = out["grid"]
        return out["patch"].transpose(1, 2).reshape(images.shape[0], self.dim, h, w)

    def layer_id(self, param_name: str) -> int:
        """Depth of a parameter for layer-wise LR decay: embeddings 0, block i -> i + 1, rest depth + 1."""
        if param_name.startswith(("patch_embed", "cls_token", "register_tokens", "window_stage", "rope")):
            return 0
        if param_name.startswith("blocks."):
            return int(param_name.split(".")[1]) + 1
        return self.depth + 1


def default_window_layers(name: str) -> int:
    """The tokenizer depth a named size gets when nothing overrides it (0 without `-4k`)."""
    return SIZES[name.removesuffix("-4k")].window_layers_4k if name.endswith("-4k") else 0


def build_backbone(name: str, **overrides) -> Sapiens2ViT:
    """A named size (`sapiens2-0.4b`, `sapiens2-1b-4k`, ...) with optional keyword overrides."""
    base = name.removesuffix("-4k")
    if base not in SIZES:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(list_sizes())}")
    size = SIZES[base]
    kwargs = {
        "dim": size.dim,
        "depth": size.depth,
        "num_heads": size.heads,
        "mha_first": size.mha_first,
        "mha_last": size.mha_last,
        "window_layers": default_window_layers(name),
    }
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return Sapiens2ViT(**kwargs)


def read_backbone_weights(path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(backbone state dict, config.model mapping) of a pretraining checkpoint (its student), a head
    checkpoint (its backbone) or a `curate train import` output (its backbone). Both checkpoint
    kinds record the local-stage depth in config.model.window_layers (None: the name's default)."""
    from curation.training.checkpoint import read_checkpoint  # here: checkpoint imports the model side

    state = read_checkpoint(path)  # a checkpoint directory or a consolidated / imported file
    if "student" in state:  # pretraining: student.backbone.*
        weights = {
            k.removeprefix("backbone."): v for k, v in state["student"].items() if k.startswith("backbone.")
        }
    elif "backbone" in state:
        weights = state["backbone"]
    else:
        raise ValueError(f"{path}: no backbone weights (neither a checkpoint of ours nor an imported file)")
    return weights, state["config"]["model"]

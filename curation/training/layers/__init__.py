"""Transformer building blocks, one per file (dinov2 `layers/` style)."""

from curation.training.layers.attention import Attention
from curation.training.layers.block import Block
from curation.training.layers.ffn import SwiGLUFFN
from curation.training.layers.layer_scale import LayerScale
from curation.training.layers.norm import RMSNorm, fused_cpu_kernels
from curation.training.layers.rope import PAIRINGS, ROPE_DTYPES, Rope2D, Rotation, apply_rope

__all__ = [
    "PAIRINGS",
    "ROPE_DTYPES",
    "Attention",
    "Block",
    "LayerScale",
    "RMSNorm",
    "Rope2D",
    "Rotation",
    "SwiGLUFFN",
    "apply_rope",
    "fused_cpu_kernels",
]

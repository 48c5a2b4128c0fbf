"""Transformer building blocks in plain torch ops, one per file (dinov2 `layers/` style).

Where the hand-fused CPU kernels apply (training/kernels/), a layer hands them its arithmetic;
the maths here is the reference they are tested against.
"""

from curation.training.layers.attention import Attention
from curation.training.layers.block import Block
from curation.training.layers.ffn import SwiGLUFFN
from curation.training.layers.layer_scale import LayerScale
from curation.training.layers.linear import Linear
from curation.training.layers.norm import RMSNorm
from curation.training.layers.rope import PAIRINGS, ROPE_DTYPES, Rope2D, Rotation, apply_rope

__all__ = [
    "PAIRINGS",
    "ROPE_DTYPES",
    "Attention",
    "Block",
    "LayerScale",
    "Linear",
    "RMSNorm",
    "Rope2D",
    "Rotation",
    "SwiGLUFFN",
    "apply_rope",
]

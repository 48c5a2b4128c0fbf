"""LAION aesthetic predictors: small heads on L2-normalised CLIP image embeddings, score ~1-10.

  laion-linear-b32   LAION-AI/aesthetic-predictor, linear, 512-d (CLIP ViT-B/32)
  laion-linear-l14   LAION-AI/aesthetic-predictor, linear, 768-d (CLIP ViT-L/14)
  improved-mlp-l14   christophschuhmann/improved-aesthetic-predictor (sac+logos+ava1), MLP, 768-d

All three were fit on OpenAI CLIP embeddings. A head reads any embedding of its width, but its
scores are calibrated only in the space it was trained on: `quality` refuses a width mismatch and
warns when the embedding model differs from `trained_on`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curation.models.weights import RANDOM, WeightFile


@dataclass(frozen=True)
class HeadSpec:
    name: str
    kind: str  # "linear" | "mlp"
    dim: int
    file: str
    url: str
    trained_on: tuple[str, str]  # (open_clip model, pretrained tag)


HEADS: dict[str, HeadSpec] = {h.name: h for h in (
    HeadSpec("laion-linear-b32", "linear", 512, "sa_0_4_vit_b_32_linear.pth",
             "https://github.com/LAION-AI/aesthetic-predictor/raw/main/sa_0_4_vit_b_32_linear.pth",
             ("ViT-B-32", "openai")),
    HeadSpec("laion-linear-l14", "linear", 768, "sa_0_4_vit_l_14_linear.pth",
             "https://github.com/LAION-AI/aesthetic-predictor/raw/main/sa_0_4_vit_l_14_linear.pth",
             ("ViT-L-14", "openai")),
    HeadSpec("improved-mlp-l14", "mlp", 768, "sac+logos+ava1-l14-linearMSE.pth",
             "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/"
             "sac%2Blogos%2Bava1-l14-linearMSE.pth", ("ViT-L-14", "openai")),
)}
# `quality.head: auto` picks by CLIP model; for ViT-L/14 the improved MLP (better on photos).
AUTO = {"ViT-B-32": "laion-linear-b32", "ViT-B-32-quickgelu": "laion-linear-b32",
        "ViT-L-14": "improved-mlp-l14", "ViT-L-14-quickgelu": "improved-mlp-l14"}


def weight_file(stage: str, spec: HeadSpec, weights: str | None) -> WeightFile:
    return WeightFile(stage=stage, key=f"{stage}.weights", file=spec.file, library="url", ref=spec.url,
                      explicit=None if weights in (None, RANDOM) else weights, random=weights == RANDOM)


def build(spec: HeadSpec):
    """The head's module, with the state-dict key names of the released checkpoints."""
    from torch import nn

    if spec.kind == "linear":
        return nn.Linear(spec.dim, 1)

    class MLP(nn.Module):  # improved-aesthetic-predictor's layout: keys layers.{0,2,4,6,7}
        def __init__(self, dim: int):
            super().__init__()
            self.layers = nn.Sequential(nn.Linear(dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128),
                                        nn.Dropout(0.2), nn.Linear(128, 64), nn.Dropout(0.1),
                                        nn.Linear(64, 16), nn.Linear(16, 1))

        def forward(self, x):
            return self.layers(x)

    return MLP(spec.dim)


class AestheticHead:
    """`__call__(embeddings [N, D] float32, L2-normalised) -> scores [N]`. `path=None`: random init."""

    def __init__(self, spec: HeadSpec, path: str | None, seed: int = 0):
        import torch

        from curation.models.device import seeded

        self.spec = spec
        with seeded(seed):
            self.net = build(spec)
        if path is not None:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
            self.net.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        self.net.eval()

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.net(torch.from_numpy(np.ascontiguousarray(embeddings, np.float32))).reshape(-1).numpy()

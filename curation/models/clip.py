"""open_clip models: image embeddings for `embed`, text embeddings for `quality`'s zero-shot realism.

Any open_clip model name and pretrained tag (default `ViT-B-32` / `laion2b_s34b_b79k`). Staged
weights load from a file, which loses what the tag would have told open_clip (normalisation,
resize mode, QuickGELU), so those are passed explicitly from the tag's pretrained config: the
transform is exactly the one `create_model_and_transforms(model, pretrained=tag)` builds.
"""

from __future__ import annotations

import contextlib
import weakref

import numpy as np

from curation.config import ConfigError
from curation.models.weights import RANDOM, WeightFile

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"


def weight_file(stage: str, key: str, model: str, pretrained: str, weights: str | None) -> WeightFile:
    stem = f"open_clip_{model}_{pretrained}"
    return WeightFile(stage=stage, key=key, file=stem + ".safetensors", library="open_clip",
                      ref=f"{model}:{pretrained}", explicit=None if weights in (None, RANDOM) else weights,
                      random=weights == RANDOM, alternatives=(stem + ".bin", stem + ".pt"))


def check_model(model: str, pretrained: str, key: str) -> None:
    import open_clip

    if model not in open_clip.list_models():
        import difflib

        near = difflib.get_close_matches(model, open_clip.list_models(), n=1)
        raise ConfigError(f"{key}.model: open_clip has no model {model!r}" + (f" (did you mean {near[0]!r}?)"
                                                                              if near else ""))
    tags = open_clip.list_pretrained_tags_by_model(model)
    if pretrained not in tags:
        raise ConfigError(f"{key}.pretrained: {model} has no tag {pretrained!r} (known: {', '.join(tags)})")


def embed_dim(model: str) -> int:
    import open_clip

    return int(open_clip.get_model_config(model)["embed_dim"])


# Full models built in this process, by (model, pretrained, path, device, seed). When `embed` and
# `quality` share an actor (curation/runner/fusion.py) and quality's prompt embeddings are not cached
# yet (models/realism.py), quality encodes its prompts with embed's model instead of building a
# second CLIP: ~2-3 CPU-s and ~600 MB less per actor (ViT-B-32).
# Weak values: a model lives only as long as the stage that built it.
_BUILT: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


class ClipModel:
    """One open_clip model. `path=None` means random weights (asked for explicitly), seeded so that
    every actor, and `embed` and `quality` alike, build the same random model."""

    @staticmethod
    def existing(model: str, pretrained: str, path: str | None, seed: int = 0) -> ClipModel | None:
        """A full model with exactly these weights already built in this process, on any device
        (its text tower gives the same embeddings on a GPU, to float16 autocast's precision)."""
        key = (model, pretrained, None if path is None else str(path))
        return next((m for k, m in list(_BUILT.items()) if k[:3] == key and k[4] == seed), None)

    def __init__(self, model: str, pretrained: str, path: str | None, device: str = "cpu", seed: int = 0,
                 image_tower: bool = True, text_tower: bool = True):
        import open_clip

        from curation.models.device import seeded

        pcfg = open_clip.get_pretrained_cfg(model, pretrained) or {}
        kwargs = {"image_mean": pcfg.get("mean"), "image_std": pcfg.get("std"),
                  "image_interpolation": pcfg.get("interpolation"), "image_resize_mode": pcfg.get("resize_mode"),
                  "force_quick_gelu": bool(pcfg.get("quick_gelu", False))}
        with seeded(seed) if path is None else contextlib.nullcontext():
            net, _, self.preprocess = open_clip.create_model_and_transforms(
                model, pretrained=None if path is None else str(path), **kwargs)
        size = net.visual.image_size
        self.image_size = int(max(size) if isinstance(size, (tuple, list)) else size)
        if not image_tower:
            net.visual = None  # quality needs text only: free the image tower, and it cannot run
        self.text_tower = text_tower
        if not text_tower:
            _drop_text_tower(net)  # embed needs images only (once quality's prompts are cached)
        self.model = net.eval().to(device)
        self.tokenizer = open_clip.get_tokenizer(model)
        self.device = device
        self.dim = embed_dim(model)
        if image_tower and text_tower:
            _BUILT[(model, pretrained, None if path is None else str(path), device, seed)] = self

    def _autocast(self):
        import torch

        if self.device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def encode_images(self, images: list) -> np.ndarray:
        """PIL RGB images -> L2-normalised float32 [N, D], through the model's own transform."""
        import torch

        if not images:
            return np.zeros((0, self.dim), np.float32)
        x = torch.stack([self.preprocess(im) for im in images]).to(self.device)
        with torch.inference_mode(), self._autocast():
            f = self.model.encode_image(x).float()
        return torch.nn.functional.normalize(f, dim=-1).cpu().numpy()

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        if not self.text_tower:
            raise RuntimeError("this CLIP model was built without its text tower (text_tower=False)")

        tokens = self.tokenizer(texts).to(self.device)
        with torch.inference_mode(), self._autocast():
            f = self.model.encode_text(tokens).float()
        return torch.nn.functional.normalize(f, dim=-1).cpu().numpy()

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp().item())


def _drop_text_tower(net) -> None:
    """Free an open_clip model's text tower (ViT-B-32: 63M parameters, ~250 MB in float32), so that
    `encode_text` cannot run. CLIP keeps it in attributes of its own, CustomTextCLIP as `text`."""
    if hasattr(net, "text"):
        net.text = None
        return
    for name in ("transformer", "token_embedding", "positional_embedding", "ln_final", "text_projection",
                 "attn_mask"):
        setattr(net, name, None)

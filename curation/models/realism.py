"""Zero-shot realism: is this a photograph, or one of the things the web passes off as one?

`quality` scores stored CLIP image embeddings against class embeddings of prompt ensembles. The
class embeddings depend only on the CLIP weights and the prompts, so they are computed once and
kept on disk (`class_embeddings`): every later actor on the node, and every later run, loads a
[C, D] array instead of building the CLIP text tower (~2-3 CPU-s and ~250 MB for ViT-B-32).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# Several phrasings per class and per subject, averaged (CLIP's prompt ensembling).
REALISM_CLASSES: dict[str, list[str]] = {
    "photo": ["a photo", "a DSLR photograph", "a smartphone snapshot", "a candid photograph"],
    "render": ["a 3D render", "a CGI image"],
    "cartoon": ["a cartoon", "an anime drawing"],
    "illustration": ["an illustration", "a pencil sketch", "a digital drawing"],
    "painting": ["a painting", "a watercolor painting"],
    "game": ["a video game screenshot", "a screenshot from a video game"],
}
# 15 phrasings x 3 templates = 45 prompts: ~1 s through ViT-B-32's text tower on one CPU core.
REALISM_TEMPLATES = ["{}.", "{} of a person.", "{} of people."]


def cache_dir() -> Path:
    """`$CURATE_CACHE`, else `$XDG_CACHE_HOME/curation`, else `~/.cache/curation`."""
    if os.environ.get("CURATE_CACHE"):
        return Path(os.environ["CURATE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "curation"


def cache_key(model: str, pretrained: str, path: str | None, seed: int) -> str:
    """What the class embeddings depend on: the weights (a file by path, size and mtime; random
    weights by seed and the torch that drew them), the prompts, and the code that embeds them."""
    import open_clip
    import torch

    if path is None:
        weights = {"random_seed": seed, "torch": torch.__version__}
    else:
        st = Path(path).stat()
        weights = {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    blob = json.dumps({"model": model, "pretrained": pretrained, "weights": weights,
                       "classes": REALISM_CLASSES, "templates": REALISM_TEMPLATES,
                       "open_clip": open_clip.__version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cache_file(model: str, pretrained: str, path: str | None, seed: int) -> Path:
    """Where the class embeddings of these CLIP weights are kept (they may not be there yet)."""
    return cache_dir() / "realism" / f"{cache_key(model, pretrained, path, seed)}.npz"


def embed_classes(clip) -> tuple[np.ndarray, float]:
    """([C, D] unit class embeddings, "photo" first; CLIP's logit scale) through `clip`'s text tower."""
    prompts = [[t.format(p) for p in phrasings for t in REALISM_TEMPLATES] for phrasings in REALISM_CLASSES.values()]
    e = clip.encode_texts([p for group in prompts for p in group])  # one batch for every class
    rows, start = [], 0
    for group in prompts:
        mean = e[start:start + len(group)].mean(axis=0)
        rows.append(mean / np.linalg.norm(mean))
        start += len(group)
    return np.stack(rows).astype(np.float32), clip.logit_scale


def class_embeddings(model: str, pretrained: str, path: str | None, seed: int) -> tuple[np.ndarray, float]:
    """The realism class embeddings for these CLIP weights: from the disk cache, else from a CLIP
    model this process already built (embed's, in a fused actor), else from a text tower built
    here; what is computed is cached for the next actor. An unwritable cache only logs."""
    from curation.models.clip import ClipModel

    file = cache_file(model, pretrained, path, seed)
    try:
        with np.load(file) as z:
            return z["classes"].astype(np.float32), float(z["scale"])
    except (OSError, KeyError, ValueError):
        pass  # absent or unreadable: compute it
    clip = ClipModel.existing(model, pretrained, path, seed=seed)
    if clip is None:
        clip = ClipModel(model, pretrained, path, device="cpu", seed=seed, image_tower=False)
    classes, scale = embed_classes(clip)
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f"{file.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, classes=classes, scale=np.float32(scale))
        os.replace(tmp, file)  # whole or nothing: actors starting together never read half a file
    except OSError as e:
        log.warning("realism class embeddings not cached (%s): each actor will compute them", e)
    return classes, scale


class RealismScorer:
    """P(photograph) from stored CLIP image embeddings, against precomputed class embeddings."""

    def __init__(self, classes: np.ndarray, scale: float):
        self.classes = np.asarray(classes, np.float32)  # [C, D], "photo" first
        self.scale = float(scale)

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        logits = self.scale * (embeddings @ self.classes.T)  # [N, C]
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return (p[:, 0] / p.sum(axis=1)).astype(np.float32)

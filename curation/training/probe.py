"""`curate train probe`: what a backbone's frozen features know, measured by small probes.

- **[CLS] probes** on `lfw_subset` (scikit-image's 100 face and 100 non-face 25x25 crops from
  LFW, shipped inside the package): a weighted k-NN (DINO's: the top-k cosine neighbours vote with
  weight exp(cos / 0.07)) and a linear probe (logistic regression on standardised features), each
  trained on one stratified half and scored on the other.
- **Dense linear probe** on patch features for body-part segmentation, from labelled `seg` shards
  (the format `curate train head` reads): each patch token is labelled with the majority class of
  its pixels (ignore 255), a logistic regression is trained on the patches of the first half of
  the images and scored on the rest (patch accuracy, and mIoU over the classes present).

`--checkpoint random:NAME` probes an untrained backbone of that size (seeded), the baseline a
pretraining run has to beat.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from curation.config import ConfigError
from curation.training.backbone import Sapiens2ViT, build_backbone, read_backbone_weights

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def load_probe_backbone(spec: str, seed: int = 0) -> Sapiens2ViT:
    """A checkpoint of ours / an imported file, or `random:NAME` (untrained, seeded)."""
    if spec.startswith("random:"):
        torch.manual_seed(seed)
        return build_backbone(spec.removeprefix("random:")).eval()
    from curation.training.backbone import arch_options

    weights, model_cfg = read_backbone_weights(spec)
    backbone = build_backbone(
        model_cfg["name"], window_layers=model_cfg.get("window_layers"), **arch_options(model_cfg)
    )
    backbone.load_state_dict(weights)
    return backbone.eval()


def lfw_images(size: int) -> tuple[Tensor, Tensor]:
    """scikit-image's lfw_subset as normalised RGB [200, 3, size, size] and labels (1 = face)."""
    from skimage.data import lfw_subset

    gray = torch.from_numpy(np.asarray(lfw_subset(), dtype=np.float32))[:, None]  # [200, 1, 25, 25], 0..1
    images = F.interpolate(gray, size=(size, size), mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
    labels = torch.cat([torch.ones(100), torch.zeros(100)]).long()  # faces first, as shipped
    return (images - IMAGENET_MEAN) / IMAGENET_STD, labels


def stratified_halves(labels: Tensor, seed: int) -> tuple[Tensor, Tensor]:
    """Indices of a train half and a test half with the classes split evenly."""
    gen = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        train.append(idx[: len(idx) // 2])
        test.append(idx[len(idx) // 2 :])
    return torch.cat(train), torch.cat(test)


@torch.no_grad()
def features(backbone: Sapiens2ViT, images: Tensor, batch: int = 32) -> dict[str, Tensor]:
    """[CLS] [N, D] and patch features [N, D, h, w] of normalised images, in eval mode."""
    cls, patch = [], []
    for chunk in images.split(batch):
        out = backbone(chunk)
        h, w = out["grid"]
        cls.append(out["cls"])
        patch.append(out["patch"].transpose(1, 2).reshape(len(chunk), -1, h, w))
    return {"cls": torch.cat(cls), "patch": torch.cat(patch)}


def knn_accuracy(train_f: Tensor, train_y: Tensor, test_f: Tensor, test_y: Tensor, k: int = 10) -> float:
    """DINO's weighted k-NN: the k most cosine-similar training features vote, weight exp(cos / 0.07)."""
    a, b = F.normalize(train_f, dim=1), F.normalize(test_f, dim=1)
    sims, idx = (b @ a.t()).topk(min(k, len(a)), dim=1)  # [M, k]
    votes = torch.zeros(len(b), int(train_y.max()) + 1)
    votes.scatter_add_(1, train_y[idx], (sims / 0.07).exp())
    return (votes.argmax(1) == test_y).float().mean().item()


def linear_accuracy(train_f: Tensor, train_y: Tensor, test_f: Tensor, test_y: Tensor) -> tuple[float, Any]:
    """Logistic regression on standardised features (scikit-learn); (test accuracy, predictions)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    clf.fit(train_f.double().numpy(), train_y.numpy())
    pred = clf.predict(test_f.double().numpy())
    return float((pred == test_y.numpy()).mean()), pred


def cls_probes(backbone: Sapiens2ViT, size: int, seed: int = 0) -> dict[str, float]:
    images, labels = lfw_images(size)
    f = features(backbone, images)["cls"]
    tr, te = stratified_halves(labels, seed)
    linear, _ = linear_accuracy(f[tr], labels[tr], f[te], labels[te])
    return {"lfw_knn_acc": knn_accuracy(f[tr], labels[tr], f[te], labels[te]), "lfw_linear_acc": linear}


def seg_patches(backbone: Sapiens2ViT, data: str, size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Patch features [M, D], patch labels [M] (majority class, ignore dropped) and image ids [M]."""
    from curation.training.data import resolve_shards
    from curation.training.data.shards import iter_shard
    from curation.training.heads.labels import dense_sample

    # Labels at the input resolution: the patch labels below pool them per token.
    cfg = SimpleNamespace(
        data=SimpleNamespace(input_size=[size, size], augment=False), model=SimpleNamespace(output_scale=1.0)
    )
    samples = [
        dense_sample("seg", raw, cfg, None, train=False) for s in resolve_shards(data) for raw in iter_shard(s.url)
    ]
    if len(samples) < 4:
        raise ConfigError(f"{data}: {len(samples)} seg samples; the dense probe needs at least 4")
    f = features(backbone, torch.stack([s["image"] for s in samples]))["patch"]  # [N, D, h, w]
    N, D, h, w = f.shape
    labels = torch.stack([s["labels"] for s in samples])  # [N, H, W]
    # Majority label per patch: one-hot counts pooled over each patch's pixels.
    valid = labels != 255
    onehot = F.one_hot(labels.where(valid, 0), 256).permute(0, 3, 1, 2).float() * valid[:, None]
    counts = F.adaptive_avg_pool2d(onehot, (h, w))  # [N, 256, h, w]
    best, patch_y = counts.max(dim=1)  # [N, h, w]
    keep = (best > 0).flatten()
    ids = torch.arange(N)[:, None].expand(N, h * w).flatten()
    return f.permute(0, 2, 3, 1).reshape(-1, D)[keep], patch_y.flatten()[keep], ids[keep]


def dense_probe(backbone: Sapiens2ViT, data: str, size: int) -> dict[str, float]:
    f, y, ids = seg_patches(backbone, data, size)
    first = ids < (int(ids.max()) + 1) // 2  # train on the first half of the images
    acc, pred = linear_accuracy(f[first], y[first], f[~first], y[~first])
    truth = y[~first].numpy()
    ious = [((pred == c) & (truth == c)).sum() / ((pred == c) | (truth == c)).sum() for c in np.unique(truth)]
    return {"seg_patch_acc": acc, "seg_patch_miou": float(np.mean(ious)), "seg_patches": len(y)}


def run_probe(checkpoint: str, data: list[str], size: int = 64, seed: int = 0) -> dict[str, Any]:
    """Every probe `data` asks for: `lfw_subset` -> [CLS] probes; a seg shard set -> dense probe."""
    backbone = load_probe_backbone(checkpoint, seed)
    if size % backbone.token_stride:
        raise ConfigError(f"--size {size} is not a multiple of the token stride {backbone.token_stride}")
    results: dict[str, Any] = {"checkpoint": checkpoint, "size": size}
    for item in data:
        results |= cls_probes(backbone, size, seed) if item == "lfw_subset" else dense_probe(backbone, item, size)
    return results

"""Does a pretraining run beat random initialisation on the probes? (`curate train probe`)

    python bench/probe_pretraining.py --checkpoint runs/tiny/checkpoint-last --photos OUT/shards/manifest.json

[CLS] probes on scikit-image's lfw_subset; the dense probe on seg shards made from the photos of a
shard set (`--photos`) with the test suite's synthetic labeller (tests/training/labelled_data.py:
reddish pixels are left / right upper arm by image half, dark ones background, the rest torso).
The baseline is the same architecture untrained, at several seeds (its spread is the noise floor).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

from PIL import Image

from curation.training.backbone import read_backbone_weights
from curation.training.data import resolve_shards
from curation.training.data.shards import iter_shard
from curation.training.probe import run_probe

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "training"))
from labelled_data import write_labelled_shards  # the suite's synthetic labeller


def photos_of(data: str, limit: int) -> list[Image.Image]:
    photos = []
    for shard in resolve_shards(data):
        for raw in iter_shard(shard.url):
            photos.append(Image.open(io.BytesIO(raw["jpg"])).convert("RGB"))
            if len(photos) == limit:
                return photos
    return photos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--photos", required=True, help="a shard set whose photos get seg labels")
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=3, help="random-init baselines")
    args = parser.parse_args()
    name = read_backbone_weights(args.checkpoint)[1]["name"]
    photos = photos_of(args.photos, args.samples)
    with tempfile.TemporaryDirectory() as tmp:
        seg = write_labelled_shards(Path(tmp), "seg", photos, len(photos), size=args.size)
        data = ["lfw_subset", str(seg)]
        rows = [run_probe(f"random:{name}", data, args.size, seed) for seed in range(args.seeds)]
        rows.append(run_probe(args.checkpoint, data, args.size, 0))
    keys = ["lfw_knn_acc", "lfw_linear_acc", "seg_patch_acc", "seg_patch_miou"]
    print(f"{len(photos)} seg images ({rows[0]['seg_patches']} labelled patches), input {args.size}px")
    print("| backbone | seed | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 2) + "|")
    for i, row in enumerate(rows):
        label = f"random {name}" if i < args.seeds else args.checkpoint
        seed = i if i < args.seeds else 0
        print(f"| {label} | {seed} | " + " | ".join(f"{row[k]:.3f}" for k in keys) + " |")


if __name__ == "__main__":
    main()

"""Head training under FSDP2 on 2 CPU ranks (gloo) follows the 1-rank run step for step.

Albedo without a mask is a per-pixel mean, so a global batch of 4 split 2 + 2 over two ranks
(gradients averaged by FSDP's reduce-scatter) makes the same update as one rank's batch of 4: the
per-step losses agree to float rounding, with the layer-wise LR decay of fine-tuning in force."""

from __future__ import annotations

import copy
import hashlib
import json

import numpy as np
import pytest
import yaml
from labelled_data import labelled_sample
from test_trainer_distributed import torchrun

from curation.training.heads.config import HeadTrainConfig
from curation.training.heads.trainer import train_head

pytestmark = pytest.mark.timeout(200)
STEPS = 3


def _two_shards(root, photos):
    """2 shards x 2 albedo samples, without masks: each rank's shard is one 2-sample batch."""
    import webdataset as wds

    root.mkdir(parents=True)
    rng, entries = np.random.default_rng(0), []
    for s in range(2):
        path = root / f"{s:06d}.tar"
        with wds.TarWriter(str(path)) as writer:
            for i in range(2):
                sample = labelled_sample("albedo", photos[(2 * s + i) % len(photos)], 64, rng)
                writer.write({"__key__": f"albedo_{s}_{i}", **sample})
        blob = path.read_bytes()
        entries.append({"path": path.name, "samples": 2, "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()})
    (root / "manifest.json").write_text(json.dumps({"shards": entries}))
    return root / "manifest.json"


def test_fsdp_two_ranks_match_one_rank(tmp_path, photos, head_tree):
    manifest = _two_shards(tmp_path / "shards", photos)
    tree = copy.deepcopy(head_tree)
    tree["task"], tree["data"]["data"] = "albedo", str(manifest)
    tree["optim"].update(warmup_steps=1, layer_decay=0.75)
    tree["train"].update(steps=STEPS, log_every=1, ckpt_every=STEPS, strategy="fsdp", progress="lines")
    tree["data"]["batch_size"] = 2  # per rank
    config = tmp_path / "head.yaml"
    config.write_text(yaml.safe_dump(tree))
    out = tmp_path / "fsdp"
    result = torchrun(["head", "--task", "albedo", "--data", str(manifest), "--out", str(out), "--config", str(config)],
                      tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 rank(s), strategy fsdp" in result.stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]

    tree["data"]["batch_size"] = 4  # one rank, the same global batch
    one = train_head(HeadTrainConfig.from_dict(tree), tmp_path / "one")
    assert [r["step"] for r in rows] == [h["step"] for h in one] == list(range(1, STEPS + 1))
    for r, h in zip(rows, one, strict=True):
        for key in ("loss", "l1", "grad", "chroma"):
            assert r[key] == pytest.approx(h[key], rel=1e-5, abs=1e-7), (key, r, h)
    assert one[-1]["loss"] < one[0]["loss"]  # it trained, so the agreement covers real updates

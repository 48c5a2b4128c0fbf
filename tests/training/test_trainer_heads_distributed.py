"""Head training under FSDP2 on 2 CPU ranks (gloo) follows the 1-rank run step for step.

Albedo without a mask is a per-pixel mean, so a global batch of 4 split 2 + 2 over two ranks
(gradients averaged by FSDP's reduce-scatter) makes the same update as one rank's batch of 4: the
per-step losses agree to float rounding, with the layer-wise LR decay of fine-tuning in force.
The 2-rank run shares one torchrun launch with the pretraining ones (two_ranks.py)."""

from __future__ import annotations

import copy
import json

import pytest
from two_ranks import HEAD_STEPS

from curation.training.heads.config import HeadTrainConfig
from curation.training.heads.trainer import train_head

pytestmark = pytest.mark.timeout(200)


def test_fsdp_two_ranks_match_one_rank(tmp_path, two_rank_runs):
    runs = two_rank_runs
    assert runs.returncode == 0, runs.stderr[-3000:]
    assert "2 rank(s), strategy fsdp" in runs.jobs["head-fsdp"].stderr
    rows = [json.loads(line) for line in (runs.root / "head" / "metrics.jsonl").read_text().splitlines()]

    tree = copy.deepcopy(runs.head_tree)
    tree["data"]["batch_size"] = 4  # one rank, the same global batch
    one = train_head(HeadTrainConfig.from_dict(tree), tmp_path / "one")
    assert [r["step"] for r in rows] == [h["step"] for h in one] == list(range(1, HEAD_STEPS + 1))
    for r, h in zip(rows, one, strict=True):
        for key in ("loss", "l1", "grad", "chroma"):
            assert r[key] == pytest.approx(h[key], rel=1e-5, abs=1e-7), (key, r, h)
    assert one[-1]["loss"] < one[0]["loss"]  # it trained, so the agreement covers real updates

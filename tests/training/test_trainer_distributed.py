"""torchrun with 2 CPU ranks (gloo): DDP and FSDP2 run, checkpoint every rank's data position,
and checkpoints move between strategies."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import yaml

pytestmark = pytest.mark.timeout(150)


def _torchrun(args: list[str], cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "curation.training.cli", "pretrain", *args]
    return subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=140)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_train_and_checkpoint(tmp_path, shards, tiny_tree, strategy):
    tiny_tree["data"]["batch_size"] = 2
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_tree))
    out = tmp_path / strategy
    args = ["--data", str(shards), "--out", str(out), "--config", str(config)]
    result = _torchrun(
        [
            *args,
            "--set",
            "train.steps=2",
            "--set",
            f"train.strategy={strategy}",
            "--set",
            "train.progress=lines",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"2 rank(s), strategy {strategy}" in result.stderr
    assert result.stdout.count("done: step 2") == 1  # rank 0 reports

    state = torch.load(out / "checkpoint-last.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["data"]) == len(state["rng"]) == 2
    assert [d["batches"] for d in state["data"]] == [2, 2]
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])  # masks differ per rank
    # Full (unsharded) tensors, whatever the strategy.
    assert state["student"]["backbone.cls_token"].shape == (1, 1, 64)

    # A checkpoint from 2 ranks resumes in one process (the data streams restart).
    from curation.training.config import load_pretrain_config
    from curation.training.trainer import pretrain

    cfg = load_pretrain_config(config, ["train.steps=3"], data__data=str(shards))
    history = pretrain(cfg, out)
    assert [h["step"] for h in history] == [3]

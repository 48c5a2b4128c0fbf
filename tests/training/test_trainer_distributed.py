"""torchrun with 2 CPU ranks (gloo): DDP and FSDP2 train; sharded checkpoints written by 2 ranks
resume exactly on 2 ranks and reshard onto 1; a 1-rank export gives one consolidated file.
The 2-rank runs share one launch (two_ranks.py)."""

from __future__ import annotations

import json

import pytest
import torch
from two_rank_worker import checkpoint_at

from curation.training.checkpoint import LAST, export_checkpoint, load_checkpoint, read_checkpoint
from curation.training.distributed import DistInfo

pytestmark = pytest.mark.timeout(240)


def _losses(out) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


def _launched(runs, name: str, strategy: str, steps: int):
    assert runs.returncode == 0, runs.stderr[-3000:]
    job = runs.jobs[name]
    assert f"2 rank(s), strategy {strategy}" in job.stderr
    assert job.stdout.count(f"done: step {steps}") == 1  # rank 0 reports
    return job


def test_fsdp_checkpoint_resumes_on_two_ranks_exactly_and_reshards_onto_one(tmp_path, shards, two_rank_runs):
    runs = two_rank_runs
    _launched(runs, "fsdp", "fsdp", 4)
    a = runs.root / "a"
    ckpt = a / "checkpoint-00000002"
    files = sorted(p.name for p in ckpt.iterdir())
    # Each rank wrote its own shard file and its own RNG / data-position file.
    assert {"__0_0.distcp", "__1_0.distcp", "rank-00000.pt", "rank-00001.pt", "meta.pt", ".metadata"} <= set(files)
    ranks = [torch.load(ckpt / f"rank-{r:05d}.pt", weights_only=True) for r in (0, 1)]
    assert [r["data"]["batches"] for r in ranks] == [2, 2]
    assert not torch.equal(ranks[0]["rng"]["torch"], ranks[1]["rng"]["torch"])  # masks differ per rank
    assert (a / LAST).resolve().name == "checkpoint-00000004"

    # Resumed on 2 ranks from a copy of step 2: the next steps' losses are the uninterrupted run's.
    _launched(runs, "fsdp-resume", "fsdp", 4)
    resumed, uninterrupted = _losses(runs.root / "b"), _losses(a)
    assert sorted(resumed) == [3, 4]
    for step in (3, 4):
        assert abs(resumed[step] - uninterrupted[step]) <= 1e-6, (step, resumed, uninterrupted)

    # Resume on 1 rank: the sharded tensors are joined on read; the data streams restart.
    from curation.training.config import load_pretrain_config
    from curation.training.meta_arch import SSLMetaArch
    from curation.training.optim import build_optimizer
    from curation.training.trainer import pretrain

    cfg = load_pretrain_config(runs.pretrain_config, ["train.steps=4"], data__data=str(shards))
    model = SSLMetaArch(cfg)
    optimizer = build_optimizer(model.student, model.student["backbone"], cfg.optim)
    loaded = load_checkpoint(ckpt, model=model, optimizer=optimizer, scheduler=None, info=DistInfo())
    assert loaded["step"] == 2 and loaded["data"] is None and loaded["rng"] is None  # other world size
    full = read_checkpoint(ckpt)
    for k, v in model.student.state_dict().items():
        torch.testing.assert_close(v, full["student"][k], rtol=0, atol=0)
    moments = [s["exp_avg"] for s in optimizer.state.values()]
    assert moments and all(m.abs().sum() > 0 for m in moments[:4])  # Adam state came back, not zeros
    c = tmp_path / "c"
    checkpoint_at(a, c, 2)
    history = pretrain(cfg, c)
    assert [h["step"] for h in history] == [3, 4]

    # A 1-rank export: one file of full tensors that --backbone and eval read like a directory.
    summary = export_checkpoint(ckpt, tmp_path / "export" / "model.pt")
    state = torch.load(summary["out"], weights_only=True)
    assert summary["tensors"] == sum(len(state[p]) for p in ("student", "teacher", "dino_loss"))
    assert state["step"] == 2 and state["world_size"] == 2 and "optimizer" not in state
    assert state["student"]["backbone.cls_token"].shape == (1, 1, 64)
    for k, v in full["teacher"].items():  # the EMA teacher is in it too
        torch.testing.assert_close(state["teacher"][k], v, rtol=0, atol=0)


def test_ddp_two_ranks_train_and_checkpoint(two_rank_runs):
    _launched(two_rank_runs, "ddp", "ddp", 2)
    ckpt = two_rank_runs.root / "ddp" / LAST
    # Replicated tensors are spread over the ranks for writing: both ranks wrote a shard file.
    assert {"__0_0.distcp", "__1_0.distcp"} <= {p.name for p in ckpt.iterdir()}
    state = read_checkpoint(ckpt)
    assert state["world_size"] == 2 and state["student"]["backbone.cls_token"].shape == (1, 1, 64)

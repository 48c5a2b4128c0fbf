"""The loop: exact resume after a crash, checkpoint contents, loud stop on a non-finite loss."""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed.checkpoint as dcp
from crash_resume import crash_then_resume

from curation.training import trainer
from curation.training.checkpoint import LAST, read_checkpoint

pytestmark = pytest.mark.timeout(120)



def test_resume_gives_the_same_next_step_losses(tmp_path, shards, tiny_config, monkeypatch):
    # Gradient accumulation, a shuffle buffer spanning shards and centering all carry state.
    cfg = tiny_config(shards, "train.steps=5", "train.ckpt_every=2", "train.accum_steps=2")
    uninterrupted = trainer.pretrain(cfg, tmp_path / "a")
    assert len(uninterrupted) == 5

    resumed = crash_then_resume(monkeypatch, lambda: trainer.pretrain(cfg, tmp_path / "b"))

    assert [h["step"] for h in resumed] == [3, 4, 5]
    for a, b in zip(uninterrupted[2:], resumed):
        for key in ("loss", "mae", "cl"):
            assert abs(a[key] - b[key]) <= 1e-6, (key, a, b)

    last = tmp_path / "b" / LAST
    state = read_checkpoint(last)
    assert {"student", "teacher", "dino_loss", "step", "config"} <= set(state)
    assert state["step"] == 5 and state["config"]["train"]["accum_steps"] == 2
    assert last.resolve().name == "checkpoint-00000005"
    saved = dcp.FileSystemReader(last).read_metadata().state_dict_metadata
    assert any(k.startswith("optimizer.state.student.") for k in saved)  # Adam moments
    rank0 = torch.load(last / "rank-00000.pt", weights_only=True)
    assert rank0["data"]["batches"] == 10  # 5 steps x 2 micro-batches
    assert set(rank0["rng"]) >= {"python", "numpy", "torch"}
    final_a = read_checkpoint(tmp_path / "a" / LAST)["student"]
    for k, v in state["student"].items():
        torch.testing.assert_close(v, final_a[k], rtol=0, atol=1e-6)
    assert (tmp_path / "b" / "config.yaml").read_text().startswith("model:")


def test_non_finite_loss_stops_the_run(tmp_path, shards, tiny_config, monkeypatch):
    cfg = tiny_config(shards, "train.steps=3")
    forward = trainer.SSLMetaArch.forward

    def nan_at_second_call(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        nan_at_second_call.calls += 1
        if nan_at_second_call.calls == 2:
            out["mae"] = out["mae"] * float("nan")
        return out

    nan_at_second_call.calls = 0
    monkeypatch.setattr(trainer.SSLMetaArch, "forward", nan_at_second_call)
    with pytest.raises(FloatingPointError, match="non-finite loss at step 1"):
        trainer.pretrain(cfg, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == []  # log_every=2: the run died before its first log line

"""The loop: exact resume after a crash, checkpoint contents, loud stop on a non-finite loss."""

from __future__ import annotations

import json

import pytest
import torch
from crash_resume import crash_then_resume

from curation.training import trainer
from curation.training.checkpoint import LAST

pytestmark = pytest.mark.timeout(120)



def test_resume_gives_the_same_next_step_losses(tmp_path, shards, tiny_config, monkeypatch):
    # Gradient accumulation, a shuffle buffer spanning shards and centering all carry state.
    cfg = tiny_config(shards, "train.steps=5", "train.ckpt_every=2", "train.accum_steps=2")
    uninterrupted = trainer.pretrain(cfg, tmp_path / "a")
    assert len(uninterrupted) == 5

    resumed = crash_then_resume(monkeypatch, trainer, lambda: trainer.pretrain(cfg, tmp_path / "b"))

    assert [h["step"] for h in resumed] == [3, 4, 5]
    for a, b in zip(uninterrupted[2:], resumed):
        for key in ("loss", "mae", "cl"):
            assert abs(a[key] - b[key]) <= 1e-6, (key, a, b)

    state = torch.load(tmp_path / "b" / LAST, weights_only=True)
    assert {
        "student",
        "teacher",
        "dino_loss",
        "optimizer",
        "scheduler",
        "step",
        "rng",
        "data",
        "config",
    } <= set(state)
    assert state["step"] == 5 and state["config"]["train"]["accum_steps"] == 2
    assert state["data"][0]["batches"] == 10  # 5 steps x 2 micro-batches
    final_a = torch.load(tmp_path / "a" / LAST, weights_only=True)["student"]
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

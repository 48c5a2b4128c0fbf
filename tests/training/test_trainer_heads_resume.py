"""The head trainer resumes exactly: a run stopped after a checkpoint continues with the losses of
an uninterrupted run (per-sample augmentation draws, shuffle buffer, optimiser, LR schedule, data
position)."""

from __future__ import annotations

import pytest
import torch
from crash_resume import crash_then_resume

from curation.training.checkpoint import LAST, read_checkpoint
from curation.training.heads import trainer as head_trainer

pytestmark = pytest.mark.timeout(120)



@pytest.mark.parametrize("task", ["seg", "pose"])
def test_head_resume_gives_the_same_next_step_losses(task, tmp_path, labelled, head_config, monkeypatch):
    # Random crops / flips (pose: box jitter and rotation too) and accumulation carry state across steps.
    cfg = head_config(
        task, labelled(task), data={"augment": True},
        train={"steps": 5, "ckpt_every": 2, "accum_steps": 2, "log_every": 1},
    )  # fmt: skip
    uninterrupted = head_trainer.train_head(cfg, tmp_path / "a")
    assert [h["step"] for h in uninterrupted] == [1, 2, 3, 4, 5]

    resumed = crash_then_resume(monkeypatch, lambda: head_trainer.train_head(cfg, tmp_path / "b"))

    assert [h["step"] for h in resumed] == [3, 4, 5]
    for a, b in zip(uninterrupted[2:], resumed, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert abs(a[key] - b[key]) <= 1e-6, (key, a, b)
    final_a = read_checkpoint(tmp_path / "a" / LAST)
    final_b = read_checkpoint(tmp_path / "b" / LAST)
    assert final_b["step"] == 5
    rank_a, rank_b = (torch.load(tmp_path / d / LAST / "rank-00000.pt", weights_only=True) for d in "ab")
    assert rank_b["data"] == rank_a["data"]
    for part in ("backbone", "head"):
        for k, v in final_b[part].items():
            torch.testing.assert_close(v, final_a[part][k], rtol=0, atol=1e-6)

"""Crash a training run right after a checkpoint is written, then resume it: both trainers'
resume tests compare what the resumed run does next with an uninterrupted run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from curation.training import engine


class Crash(Exception):
    pass


def crash_then_resume(monkeypatch, run: Callable[[], Any], at_step: int = 2) -> Any:
    """`run()` once, crashing just after the engine's `save_checkpoint` wrote step `at_step`; then
    `run()` again with the real saver, which must resume from that checkpoint. Returns the
    resumed run's result."""
    real_save = engine.save_checkpoint

    def save_then_crash(*args, **kwargs):
        real_save(*args, **kwargs)
        if kwargs["step"] == at_step:
            raise Crash

    monkeypatch.setattr(engine, "save_checkpoint", save_then_crash)
    with pytest.raises(Crash):
        run()
    monkeypatch.setattr(engine, "save_checkpoint", real_save)
    return run()

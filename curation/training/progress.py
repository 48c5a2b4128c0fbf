"""Training logs: a rich progress bar on a terminal, plain lines otherwise, always `metrics.jsonl`,
and TensorBoard when asked (`train.tensorboard`; the package is optional, not a dependency)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from curation.config import ConfigError


def require_tensorboard():
    """`SummaryWriter`, or a one-line ConfigError naming the fix. Asked-for TensorBoard logs that
    silently never appear are worse than a refusal at start-up, before any step is spent."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "train.tensorboard is true but the tensorboard package is not installed: "
            "pip install tensorboard, or --set train.tensorboard=false"
        ) from None
    return SummaryWriter


def _step_of(line: str) -> float:
    """A row's step; a row torn by a crash mid-write has none and is dropped with the later ones."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


def drop_rows_after(path: Path, step: int) -> None:
    """Remove the rows of `path` logged after `step`: a run resumed from the checkpoint of `step`
    logs those steps again, and each step must appear once."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if _step_of(line) <= step]
    if len(kept) != len(lines):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(path)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class MetricsLogger:
    def __init__(
        self,
        out_dir: Path,
        total_steps: int,
        start_step: int,
        mode: str = "auto",
        tensorboard: bool = False,
        title: str = "pretrain",
    ):
        self.out_dir = out_dir
        self.total = total_steps
        self.console = Console(stderr=True)
        if mode == "auto":
            mode = "bar" if self.console.is_terminal else "lines"
        self.mode = mode
        drop_rows_after(out_dir / "metrics.jsonl", start_step)
        self.jsonl = open(out_dir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115  (closed in close())
        self.progress = None
        if mode == "bar":
            self.progress = Progress(
                TextColumn(f"[bold]{title}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[metrics]}"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.task = self.progress.add_task(
                "pretrain", total=total_steps, completed=start_step, metrics=""
            )
            self.progress.start()
        self.tb = require_tensorboard()(log_dir=str(out_dir / "tensorboard")) if tensorboard else None
        self.last_time = time.perf_counter()
        self.last_step = start_step

    def log(self, step: int, metrics: dict[str, Any], images: int, tokens: int) -> None:
        """`images` and `tokens` processed since the previous call (all ranks)."""
        now = time.perf_counter()
        elapsed = max(now - self.last_time, 1e-9)
        row = {"step": step, **metrics, "images_per_s": images / elapsed, "tokens_per_s": tokens / elapsed}
        self.last_time, self.last_step = now, step
        self.jsonl.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)
        hidden = {"step", "teacher_temp", "epoch", "grad_norm", "warnings", "teacher_entropy"}
        shown = " ".join(f"{k}={_fmt(v)}" for k, v in row.items() if k not in hidden)
        if self.progress is not None:
            self.progress.update(self.task, completed=step, metrics=shown)
        elif self.mode == "lines":
            print(f"step {step}/{self.total} {shown}", file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        if self.mode != "off":
            self.console.print(text) if self.progress is not None else print(
                text, file=sys.stderr, flush=True
            )

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.tb is not None:
            self.tb.close()
        self.jsonl.close()

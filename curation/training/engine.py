"""What pretraining and head training share: start-up, resume, the data stream, one optimiser
step, the logging window and the checkpoint cadence (mae `engine_pretrain.py` style).

A trainer opens a `Session` (process group, device, precision, output folder), builds its model
and optimiser, calls `session.restore` and `session.batches`, then loops `session.micro_steps` +
`session.finish_step` until the last step; `session.due(...)` says when to log and save.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml

from curation.training import distributed as D
from curation.training.checkpoint import load_checkpoint, resume_point, save_checkpoint, set_rng_state
from curation.training.config import TrainConfig
from curation.training.data import DataPosition, SampleStream, build_loader
from curation.training.progress import MetricsLogger

log = logging.getLogger(__name__)


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config mappings."""
    keys = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += changed_keys(a, b, f"{prefix}{k}.")
        elif a != b:
            keys.append(f"{prefix}{k}")
    return keys


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class Session:
    """One training process's run: rank and device, precision, output folder, resume state."""

    def __init__(self, train: TrainConfig, out_dir: str | Path, resume: bool = True):
        self.train = train
        self.owns_group = not dist.is_initialized()
        self.info = D.init_distributed()
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        device = self.info.device.type
        self.bf16 = train.precision == "bf16" or (train.precision == "auto" and device == "cuda")
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls (the heads, the loss) on TF32 cores
        else:
            # LayerScale (1e-4) and Adam's squared-gradient state produce denormal floats, which x86
            # CPUs handle far slower than normal ones; flushing them made CPU steps several times faster.
            torch.set_flush_denormal(True)
        # Read before any model is built, so that a refusal (a former checkpoint layout) costs nothing.
        self.checkpoint = resume_point(self.out) if resume else None
        self.step, self.position, self.logger = 0, None, None
        self._rng = None

    def autocast(self):
        return torch.autocast(self.info.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def restore(self, model, optimizer, scheduler, num_streams: int, config: dict[str, Any]) -> bool:
        """Load the resume checkpoint (if any) into model, optimiser and scheduler, and set the step
        and data position; writes OUT/config.yaml. Returns whether a checkpoint was loaded."""
        self.position = DataPosition(num_streams)
        ckpt = self.checkpoint
        if ckpt is not None:
            loaded = load_checkpoint(ckpt, model=model, optimizer=optimizer, scheduler=scheduler, info=self.info)
            self.step, self._rng = loaded["step"], loaded["rng"]
            if loaded["data"] is None:
                log.warning("%s was saved by a different number of ranks: the data streams restart", ckpt)
            self.position = DataPosition(num_streams, loaded["data"])
            changed = changed_keys(loaded["config"], config)
            if changed:
                log.warning("resuming %s with changed config keys: %s", ckpt, ", ".join(changed))
        if self.info.is_main:
            (self.out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        return ckpt is not None

    def batches(self, shards, decode, data) -> Iterator[dict[str, Any]]:
        """This rank's batches of decoded samples (`data`: a data config section), from the
        restored position; then the RNG state of the checkpoint is put back."""
        dataset = SampleStream(
            shards, decode, self.position, rank=self.info.rank, world_size=self.info.world_size,
            seed=self.train.seed, shuffle_buffer=data.shuffle_buffer, shuffle_initial=data.shuffle_initial,
        )  # fmt: skip
        loader = build_loader(dataset, data.batch_size, data.num_workers, self.info.device.type == "cuda")
        batches = iter(loader)
        if self._rng is not None:  # once: a later stream (a new phase) continues the run's RNG
            set_rng_state(self._rng)
            self._rng = None
        return batches

    def open_log(self, title: str, started: str, strategy: str) -> None:
        """The metrics log and the terminal (on the main rank), with a first line saying what runs."""
        if self.info.is_main:
            t = self.train
            self.logger = MetricsLogger(self.out, t.steps, self.step, t.progress, t.tensorboard, title=title)
            self.message(
                f"{started}, {self.info.world_size} rank(s), strategy {strategy}, "
                f"{'bf16' if self.bf16 else 'fp32'}, "
                f"step {self.step}/{t.steps}, out {self.out}"
            )

    def message(self, text: str) -> None:
        if self.logger is not None:
            self.logger.message(text)

    def micro_steps(
        self, wrapped, batches: Iterator[dict], forward: Callable[[dict], dict[str, torch.Tensor]]
    ) -> dict[str, float]:
        """Forward and backward of `train.accum_steps` micro-batches (gradients synchronised on the
        last only); `forward(batch)` returns losses, `loss` the one to backpropagate. Returns each
        loss averaged over the micro-batches; a non-finite one stops the run."""
        accum, parts = self.train.accum_steps, {}
        for micro in range(accum):
            batch = _to(next(batches), self.info.device)
            self.position.update(batch["position"])
            with D.no_grad_sync(wrapped, skip=micro < accum - 1):
                losses = forward(batch)
                (losses["loss"] / accum).backward()
            values = {k: float(v.detach()) for k, v in losses.items()}
            if not all(np.isfinite(list(values.values()))):
                raise FloatingPointError(f"non-finite loss at step {self.step} ({values}); stopping")
            for k, v in values.items():
                parts[k] = parts.get(k, 0.0) + v / accum
        return parts

    def finish_step(self, optimizer, scheduler, params, clip_grad: float) -> torch.Tensor | None:
        """Clip, step the optimiser and the LR schedule, zero the gradients; returns the norm."""
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip_grad) if clip_grad > 0 else None
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return grad_norm

    def due(self, every: int) -> bool:
        return self.step % every == 0 or self.step == self.train.steps

    def save(self, model, optimizer, scheduler, config: dict[str, Any]) -> None:
        save_checkpoint(
            self.out, model=model, optimizer=optimizer, scheduler=scheduler, step=self.step,
            data_position=self.position.state_dict(), config=config, info=self.info,
            keep=self.train.keep_checkpoints,
        )  # fmt: skip

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()
        if self.owns_group:
            D.shutdown_distributed()


class Window:
    """Sums of per-step losses since the last log line; `means` averages them over steps and ranks."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.steps = 0

    def add(self, parts: dict[str, float]) -> None:
        for k, v in parts.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.steps += 1

    def means(self, info: D.DistInfo) -> tuple[dict[str, float], int]:
        """(mean of each loss, steps in the window); a collective: every rank must call it."""
        keys, sums = list(self.sums), self.sums
        if info.enabled:
            values = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=info.device)
            dist.all_reduce(values)
            sums = dict(zip(keys, (values / info.world_size).tolist(), strict=True))
        n = max(self.steps, 1)
        means = {k: sums[k] / n for k in keys}
        self.sums, self.steps = {}, 0
        return means, n

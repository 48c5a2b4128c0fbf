"""Post-training loop: a task head on a pretrained backbone (frozen, or fine-tuned with layer-wise LR decay).

The same machinery as pretraining: resumable WebDataset streams, AdamW + warmup/cosine, bf16 on
GPU, gradient accumulation and clipping, a loud stop on a non-finite loss, exact-resume
checkpoints, and DDP or FSDP2 (`train.strategy`; auto = FSDP from 1B parameters) under torchrun.
Logged losses are means over the ranks.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from curation.training import distributed as D
from curation.training.checkpoint import load_checkpoint, resume_point, save_checkpoint, set_rng_state
from curation.training.data import DataPosition, SampleStream, build_loader, num_streams_for, resolve_shards
from curation.training.heads.config import HeadTrainConfig
from curation.training.heads.labels import TaskDecoder, require_labels
from curation.training.heads.model import build_task_model
from curation.training.heads.tasks import TASKS
from curation.training.optim import build_optimizer, build_scheduler
from curation.training.progress import MetricsLogger
from curation.training.trainer import seed_all

log = logging.getLogger(__name__)


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
    }


def _mean_over_ranks(sums: dict[str, float], info: D.DistInfo) -> dict[str, float]:
    if not info.enabled:
        return sums
    values = torch.tensor([sums[k] for k in sorted(sums)], dtype=torch.float64, device=info.device)
    dist.all_reduce(values)
    return dict(zip(sorted(sums), (values / info.world_size).tolist(), strict=True))


def train_head(cfg: HeadTrainConfig, out_dir: str | Path, resume: bool = True) -> list[dict[str, float]]:
    """Train (or resume) a task head into `out_dir`; returns this process's per-step losses."""
    cfg.validate()
    owns_group = not dist.is_initialized()
    info = D.init_distributed()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t, task = cfg.train, TASKS[cfg.task]
    bf16 = t.precision == "bf16" or (t.precision == "auto" and info.device.type == "cuda")
    if info.device.type == "cpu":
        torch.set_flush_denormal(True)  # see trainer.pretrain

    shards = resolve_shards(cfg.data.data)
    require_labels(shards, cfg.task)
    ckpt = resume_point(out) if resume else None  # refusals before the model is built
    seed_all(t.seed)  # identical initial head weights on every rank
    model = build_task_model(cfg).to(info.device)
    model.backbone.set_grad_checkpointing(cfg.model.grad_checkpointing)
    strategy = D.resolve_strategy(t.strategy, sum(p.numel() for p in model.backbone.parameters()), info)
    wrapped = model
    if strategy == "fsdp":
        D.shard_task_model(model, info, bf16)  # in place: the optimiser sees this rank's shards
    elif strategy == "ddp":
        wrapped = D.wrap_ddp(model, info)
    optimizer = build_optimizer(model, model.backbone, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, t.steps)
    seed_all(t.seed + 1000 * info.rank)

    num_streams = num_streams_for(len(shards), info.world_size, cfg.data.num_workers)
    position, step, rng = DataPosition(num_streams), 0, None
    if ckpt is not None:
        loaded = load_checkpoint(ckpt, model=model, optimizer=optimizer, scheduler=scheduler, info=info)
        step, rng = loaded["step"], loaded["rng"]
        position = DataPosition(num_streams, loaded["data"])
    if info.is_main:
        (out / "config.yaml").write_text(cfg.to_yaml())
    dataset = SampleStream(
        shards, TaskDecoder(cfg, train=True), position, rank=info.rank, world_size=info.world_size,
        seed=t.seed, shuffle_buffer=cfg.data.shuffle_buffer, shuffle_initial=cfg.data.shuffle_initial,
    )  # fmt: skip
    batches = iter(
        build_loader(dataset, cfg.data.batch_size, cfg.data.num_workers, info.device.type == "cuda")
    )
    if rng is not None:
        set_rng_state(rng)

    logger = (
        MetricsLogger(out, t.steps, step, t.progress, t.tensorboard, title=f"head:{cfg.task}")
        if info.is_main
        else None
    )
    if logger is not None:
        logger.message(
            f"head {cfg.task} on {cfg.model.name} ({cfg.model.mode}): {len(shards)} shards, "
            f"{info.world_size} rank(s), strategy {strategy}, {'bf16' if bf16 else 'fp32'}, "
            f"step {step}/{t.steps}, out {out}"
        )
    images_per_step = cfg.data.batch_size * t.accum_steps * info.world_size
    H, W = cfg.data.input_size
    stride = model.backbone.token_stride  # 64 on the 4K variant's pooled grid
    tokens_per_step = images_per_step * (H // stride) * (W // stride)
    history: list[dict[str, float]] = []
    sums: dict[str, float] = {}
    window = 0
    model.train()
    while step < t.steps:
        parts: dict[str, float] = {}
        for micro in range(t.accum_steps):
            batch = _to(next(batches), info.device)
            position.update(batch["position"])
            with D.no_grad_sync(wrapped, skip=micro < t.accum_steps - 1):
                with torch.autocast(info.device.type, dtype=torch.bfloat16, enabled=bf16):
                    output = wrapped(batch["image"])
                losses = task.loss(output, batch, cfg)
                (losses["loss"] / t.accum_steps).backward()
            values = {k: float(v.detach()) for k, v in losses.items()}
            if not all(torch.isfinite(torch.tensor(list(values.values())))):
                raise FloatingPointError(f"non-finite loss at step {step} ({values}); stopping")
            for k, v in values.items():
                parts[k] = parts.get(k, 0.0) + v / t.accum_steps
        if cfg.optim.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(
                [p for p in model.parameters() if p.requires_grad], cfg.optim.clip_grad
            )
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        history.append({"step": step, **parts})
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v
        window += 1
        if step % t.log_every == 0 or step == t.steps:
            sums = _mean_over_ranks(sums, info)  # collective: every rank takes part
            if logger is not None:
                metrics = {k: v / window for k, v in sums.items()} | {"lr": max(scheduler.get_last_lr())}
                logger.log(step, metrics, images_per_step * window, tokens_per_step * window)
            sums, window = {}, 0
        if step % t.ckpt_every == 0 or step == t.steps:
            save_checkpoint(
                out, model=model, optimizer=optimizer, scheduler=scheduler, step=step,
                data_position=position.state_dict(), config=cfg.to_dict(), info=info, keep=t.keep_checkpoints,
            )  # fmt: skip
    if logger is not None:
        logger.close()
    del batches
    if owns_group:
        D.shutdown_distributed()
    return history

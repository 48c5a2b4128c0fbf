"""The pretraining loop (mae `engine_pretrain.py` / dinov2 `train.py` style).

One optimiser step = `accum_steps` micro-batches; then clip, AdamW, LR schedule, teacher EMA.
Everything that changes from step to step (weights, optimiser, scheduler, RNG, data position,
the CL center) is in the checkpoint, so a resumed run continues the uninterrupted one exactly.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from curation.training import distributed as D
from curation.training.checkpoint import load_checkpoint, resume_point, save_checkpoint, set_rng_state
from curation.training.config import PretrainConfig
from curation.training.data import (
    DataPosition,
    MultiCrop,
    PretrainViews,
    SampleStream,
    build_loader,
    num_streams_for,
    resolve_shards,
)
from curation.training.health import FailureWatch, cpu_warning
from curation.training.init import init_weights
from curation.training.meta_arch import METRICS, SSLMetaArch
from curation.training.optim import build_optimizer, build_scheduler, set_weight_decay
from curation.training.progress import MetricsLogger
from curation.training.schedules import cosine, linear_warmup

log = logging.getLogger(__name__)


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(
    cfg: PretrainConfig, info: D.DistInfo, bf16: bool
) -> tuple[SSLMetaArch, torch.nn.Module, str]:
    """The meta-arch (for EMA, checkpoints) and what forward runs through (DDP wrapper or itself)."""
    with torch.device("meta"):
        probe = SSLMetaArch(cfg)
    num_params = sum(p.numel() for p in probe.student["backbone"].parameters())
    strategy = D.resolve_strategy(cfg.train.strategy, num_params, info)
    if strategy == "fsdp":
        model = probe  # never materialised in full on one rank: shard first, then allocate and init
        D.shard_with_fsdp(model, info, bf16)
        model.to_empty(device=info.device)
        seed_all(cfg.train.seed)
        init_weights(model)
        model.copy_student_to_teacher()
        return model, model, strategy
    seed_all(cfg.train.seed)  # identical initial weights on every rank
    model = SSLMetaArch(cfg).to(info.device)
    wrapped = D.wrap_ddp(model, info) if strategy == "ddp" else model
    return model, wrapped, strategy


def _changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _changed_keys(a, b, f"{prefix}{k}.")
        elif a != b:
            keys.append(f"{prefix}{k}")
    return keys


def tokens_per_image(cfg: PretrainConfig, token_stride: int) -> int:
    (gh, gw), (lh, lw) = cfg.data.global_size, cfg.data.local_size
    return 2 * (gh // token_stride) * (gw // token_stride) + cfg.data.local_crops * (lh // token_stride) * (
        lw // token_stride
    )


def pretrain(cfg: PretrainConfig, out_dir: str | Path, resume: bool = True) -> list[dict[str, float]]:
    """Run (or resume) pretraining into `out_dir`; returns the per-step losses of this process."""
    cfg.validate()
    owns_group = not dist.is_initialized()
    info = D.init_distributed()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = cfg.train
    bf16 = t.precision == "bf16" or (t.precision == "auto" and info.device.type == "cuda")
    if info.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    else:
        # LayerScale (1e-4) and Adam's squared-gradient state produce denormal floats, which x86
        # CPUs handle ~100x slower; flushing them to zero made CPU steps 6x faster.
        torch.set_flush_denormal(True)

    model, wrapped, strategy = build_model(cfg, info, bf16)
    optimizer = build_optimizer(model.student, model.student["backbone"], cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, t.steps)
    seed_all(t.seed + 1000 * info.rank)  # masks differ across ranks

    shards = resolve_shards(cfg.data.data)
    num_streams = num_streams_for(len(shards), info.world_size, cfg.data.num_workers)
    position, step, rng = DataPosition(num_streams), 0, None
    ckpt = resume_point(out) if resume else None
    if ckpt is not None:
        loaded = load_checkpoint(ckpt, model=model, optimizer=optimizer, scheduler=scheduler, info=info)
        step, rng = loaded["step"], loaded["rng"]
        if loaded["data"] is None:
            log.warning("%s was saved by a different number of ranks: the data streams restart", ckpt)
        position = DataPosition(num_streams, loaded["data"])
        changed = _changed_keys(loaded["config"], cfg.to_dict())
        if changed:
            log.warning("resuming %s with changed config keys: %s", ckpt, ", ".join(changed))
    elif cfg.model.init:  # a fresh run from given backbone weights (a resumed one has its own)
        model.load_backbone(cfg.model.init, cfg)
    if info.is_main:
        (out / "config.yaml").write_text(cfg.to_yaml())

    d = cfg.data
    crops = MultiCrop(
        d.global_size,
        d.local_size,
        d.local_crops,
        d.global_scale,
        d.local_scale,
        d.brightness,
        d.contrast,
        d.saturation,
        d.jitter_prob,
        d.hflip_prob,
    )
    dataset = SampleStream(
        shards,
        PretrainViews(crops),
        position,
        rank=info.rank,
        world_size=info.world_size,
        seed=t.seed,
        shuffle_buffer=d.shuffle_buffer,
        shuffle_initial=d.shuffle_initial,
    )
    batches = iter(build_loader(dataset, d.batch_size, d.num_workers, pin_memory=info.device.type == "cuda"))
    if rng is not None:
        set_rng_state(rng)

    logger = MetricsLogger(out, t.steps, step, t.progress, t.tensorboard) if info.is_main else None
    if logger is not None:
        logger.message(
            f"pretrain {cfg.model.name}: {len(shards)} shards, {info.world_size} rank(s), strategy {strategy}, "
            f"{'bf16' if bf16 else 'fp32'}, step {step}/{t.steps}, out {out}"
        )
    cpu_note = cpu_warning(cfg, model.student["backbone"]) if info.device.type == "cpu" else None
    if logger is not None and cpu_note:
        logger.message(cpu_note)
    images_per_step = d.batch_size * t.accum_steps * info.world_size
    tokens_per_step = images_per_step * tokens_per_image(cfg, model.student["backbone"].token_stride)
    history: list[dict[str, float]] = []
    # Sums of METRICS and the step count since the last log line.
    window = torch.zeros(len(METRICS) + 1, dtype=torch.float64)
    watch = FailureWatch(
        max(cfg.optim.warmup_steps, cfg.cl.teacher_temp_warmup_steps), cfg.cl.prototypes, 2 * d.batch_size
    )
    model.train()
    while step < t.steps:
        teacher_temp = linear_warmup(
            step, cfg.cl.teacher_temp_warmup_steps, cfg.cl.teacher_temp_warmup_start, cfg.cl.teacher_temp
        )
        losses = torch.zeros(len(METRICS), dtype=torch.float64)
        for micro in range(t.accum_steps):
            batch = next(batches)
            position.update(batch["position"])
            global_crops = batch["global"].to(info.device, non_blocking=True)
            local_crops = batch["local"].to(info.device, non_blocking=True)
            with D.no_grad_sync(wrapped, skip=micro < t.accum_steps - 1):
                with torch.autocast(info.device.type, dtype=torch.bfloat16, enabled=bf16):
                    out_dict = wrapped(global_crops, local_crops, teacher_temp)
                (out_dict["loss"] / t.accum_steps).backward()
            values = torch.stack([out_dict[k].detach() for k in METRICS]).double().cpu()
            if not torch.isfinite(values).all():
                raise FloatingPointError(
                    f"non-finite loss at step {step} ({', '.join(METRICS)} = {values.tolist()}); stopping"
                )
            losses += values / t.accum_steps
        grad_norm = (
            torch.nn.utils.clip_grad_norm_(model.student.parameters(), t_clip)
            if (t_clip := cfg.optim.clip_grad) > 0
            else None
        )
        if cfg.optim.weight_decay_end is not None:
            set_weight_decay(optimizer, cosine(step, t.steps, cfg.optim.weight_decay, cfg.optim.weight_decay_end))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        model.update_teacher(cosine(step, t.steps, cfg.cl.momentum_start, cfg.cl.momentum_end))
        step += 1
        history.append(
            {"step": step, "loss": losses[0].item(), "mae": losses[1].item(), "cl": losses[2].item()}
        )
        window += torch.cat([losses, torch.ones(1, dtype=torch.float64)])

        if step % t.log_every == 0 or step == t.steps:
            history[-1]["logged"] = _log(
                logger,
                watch,
                window,
                info,
                step,
                scheduler,
                grad_norm,
                teacher_temp,
                position,
                images_per_step,
                tokens_per_step,
            )
            window.zero_()
        if step % t.ckpt_every == 0 or step == t.steps:
            save_checkpoint(
                out,
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                step=step,
                data_position=position.state_dict(),
                config=cfg.to_dict(),
                info=info,
                keep=t.keep_checkpoints,
            )
    if logger is not None:
        logger.close()
    del batches  # stops the DataLoader workers
    if owns_group:
        D.shutdown_distributed()
    return history


def _log(
    logger,
    watch,
    window,
    info,
    step,
    scheduler,
    grad_norm,
    teacher_temp,
    position,
    images_per_step,
    tokens_per_step,
) -> dict[str, Any]:
    """Log the window's averages (over steps and ranks) with any failure warnings; returns them."""
    if info.enabled:
        reduced = window.to(info.device)
        dist.all_reduce(reduced)
        window = reduced.cpu() / info.world_size
    n = max(window[-1].item(), 1.0)
    metrics: dict[str, Any] = {k: window[i].item() / n for i, k in enumerate(METRICS)}
    metrics |= {"lr": max(scheduler.get_last_lr()), "teacher_temp": teacher_temp, "epoch": position.epoch}
    if grad_norm is not None:
        metrics["grad_norm"] = float(grad_norm)
    warnings, started = watch.check(step, metrics)
    if warnings:
        metrics["warnings"] = warnings
    if logger is not None:
        for text in started:
            logger.message(text)
        logger.log(step, metrics, int(images_per_step * n), int(tokens_per_step * n))
    return metrics

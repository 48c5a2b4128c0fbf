"""The pretraining loop (mae `engine_pretrain.py` / dinov2 `train.py` style).

One optimiser step = `accum_steps` micro-batches; then clip, AdamW, LR and weight-decay
schedules, teacher EMA. Everything that changes from step to step (weights, optimiser, scheduler,
RNG, data position, the CL center) is in the checkpoint, so a resumed run continues the
uninterrupted one exactly. Start-up, resume and the step itself are engine.py's, shared with
head training.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from curation.training import distributed as D
from curation.training.config import DataConfig, PretrainConfig
from curation.training.data import MultiCrop, PretrainViews, num_streams_for, resolve_shards
from curation.training.engine import Session, Window, seed_all
from curation.training.health import FailureWatch, cpu_warning
from curation.training.init import init_weights
from curation.training.meta_arch import SSLMetaArch
from curation.training.optim import build_optimizer, build_scheduler, set_weight_decay
from curation.training.schedules import cosine, linear_warmup


def build_model(cfg: PretrainConfig, info: D.DistInfo, bf16: bool) -> tuple[SSLMetaArch, torch.nn.Module, str]:
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


def tokens_per_image(data: DataConfig, token_stride: int) -> int:
    (gh, gw), (lh, lw) = data.global_size, data.local_size
    return 2 * (gh // token_stride) * (gw // token_stride) + data.local_crops * (lh // token_stride) * (
        lw // token_stride
    )


def _phase_data(cfg: PretrainConfig, phase: str) -> DataConfig:
    """The data section a phase reads: the configured one, or the final phase's crops and batch."""
    if phase == "main":
        return cfg.data
    final = cfg.final_phase
    return dataclasses.replace(
        cfg.data, global_size=final.global_size, batch_size=final.batch_size or cfg.data.batch_size
    )


def _crops(d: DataConfig) -> MultiCrop:
    return MultiCrop(
        d.global_size, d.local_size, d.local_crops, d.global_scale, d.local_scale,
        d.brightness, d.contrast, d.saturation, d.jitter_prob, d.hflip_prob,
    )  # fmt: skip


def pretrain(cfg: PretrainConfig, out_dir: str | Path, resume: bool = True) -> list[dict[str, Any]]:
    """Run (or resume) pretraining into `out_dir`; returns the per-step losses of this process."""
    cfg.validate()
    t, d = cfg.train, cfg.data
    run = Session(t, out_dir, resume)
    info = run.info
    model, wrapped, strategy = build_model(cfg, info, run.bf16)
    backbone = model.student["backbone"]
    optimizer = build_optimizer(model.student, backbone, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, t.steps)
    seed_all(t.seed + 1000 * info.rank)  # masks differ across ranks

    shards = resolve_shards(d.data)
    num_streams = num_streams_for(len(shards), info.world_size, d.num_workers)
    resumed = run.restore(model, optimizer, scheduler, num_streams, cfg.to_dict())
    if not resumed and cfg.model.init:  # a fresh run from given backbone weights
        model.load_backbone(cfg.model.init, cfg)
    phase_start = t.steps - cfg.final_phase.steps
    run.open_log("pretrain", f"pretrain {cfg.model.name}: {len(shards)} shards", strategy)
    if run.logger is not None and info.device.type == "cpu" and (note := cpu_warning(cfg, backbone)):
        run.message(note)

    watch = FailureWatch(
        max(cfg.optim.warmup_steps, cfg.cl.teacher_temp_warmup_steps), cfg.cl.prototypes, 2 * d.batch_size
    )
    history: list[dict[str, Any]] = []
    window = Window()
    phase = None
    model.train()
    while run.step < t.steps:
        step = run.step
        if phase != (phase := "final" if step >= phase_start else "main"):
            data = _phase_data(cfg, phase)
            batches = run.batches(shards, PretrainViews(_crops(data)), data)  # from the current position
            images_per_step = data.batch_size * t.accum_steps * info.world_size
            tokens_per_step = images_per_step * tokens_per_image(data, backbone.token_stride)
            watch.new_phase(2 * data.batch_size)
            if phase == "final":
                h, w = (round(s * cfg.mae.output_scale) for s in data.global_size)
                run.message(f"step {step}: final phase, global crops {data.global_size}, MAE output {h}x{w}")
        teacher_temp = linear_warmup(
            step, cfg.cl.teacher_temp_warmup_steps, cfg.cl.teacher_temp_warmup_start, cfg.cl.teacher_temp
        )

        def forward(batch, teacher_temp=teacher_temp):
            with run.autocast():
                return wrapped(batch["global"], batch["local"], teacher_temp)

        parts = run.micro_steps(wrapped, batches, forward)
        if cfg.optim.weight_decay_end is not None:
            set_weight_decay(optimizer, cosine(step, t.steps, cfg.optim.weight_decay, cfg.optim.weight_decay_end))
        grad_norm = run.finish_step(optimizer, scheduler, model.student.parameters(), cfg.optim.clip_grad)
        model.update_teacher(cosine(step, t.steps, cfg.cl.momentum_start, cfg.cl.momentum_end))
        history.append({"step": run.step, "phase": phase, **{k: parts[k] for k in ("loss", "mae", "cl")}})
        window.add(parts)
        if run.due(t.log_every):
            metrics, n = window.means(info)  # collective: every rank takes part
            metrics |= {"lr": max(scheduler.get_last_lr()), "teacher_temp": teacher_temp}
            metrics["epoch"] = run.position.epoch
            if grad_norm is not None:
                metrics["grad_norm"] = float(grad_norm)
            warnings, started = watch.check(run.step, metrics)
            if warnings:
                metrics["warnings"] = warnings
            for text in started:
                run.message(text)
            if run.logger is not None:
                run.logger.log(run.step, metrics, images_per_step * n, tokens_per_step * n)
            history[-1]["logged"] = metrics
        if run.due(t.ckpt_every):
            run.save(model, optimizer, scheduler, cfg.to_dict())
    run.close()
    return history

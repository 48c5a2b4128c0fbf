"""Checkpoints that resume exactly: weights, optimiser, scheduler, step, RNG and data position.

One file, written by rank 0 after gathering the per-rank parts (RNG states and data positions)
from every rank. Model and optimiser states go through `torch.distributed.checkpoint.state_dict`,
which gives full, unsharded, FQN-keyed dicts for a plain module, DDP and FSDP2 alike, so a
checkpoint saved under one strategy loads under another. Every value is a tensor or plain
Python data, so `torch.load(weights_only=True)` reads it without unpickling code.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from curation.training.distributed import DistInfo, all_gather_object

LAST = "checkpoint-last.pt"


def _parts(model: nn.Module) -> list[str]:
    """The model's children (pretraining: student, teacher, dino_loss), stored as separate entries."""
    return [name for name, _ in model.named_children()]


def rng_state() -> dict[str, Any]:
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "gauss": gauss,
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(
    out_dir: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    step: int,
    data_position: dict[str, Any],
    config: dict[str, Any],
    info: DistInfo,
    keep: int = 2,
    numbered: bool = True,
) -> Path | None:
    """Collective: every rank calls it. Writes OUT/checkpoint-last.pt (+ a numbered hard link)."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=options)
    optim = get_optimizer_state_dict(model, optimizer, options=options)
    rngs = all_gather_object(rng_state(), info)
    positions = all_gather_object(data_position, info)
    if not info.is_main:
        return None
    state = {
        part: {k.removeprefix(part + "."): v for k, v in weights.items() if k.startswith(part + ".")}
        for part in _parts(model)
    }
    state.update(
        optimizer=optim,
        scheduler=scheduler.state_dict(),
        step=step,
        rng=rngs,
        data=positions,
        world_size=info.world_size,
        config=config,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    last = out_dir / LAST
    tmp = out_dir / (LAST + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, last)  # atomic: a crash mid-write never leaves a broken checkpoint-last.pt
    if numbered:
        path = out_dir / f"checkpoint-{step:08d}.pt"
        path.unlink(missing_ok=True)
        os.link(last, path)
        old = sorted(
            p for p in out_dir.glob("checkpoint-*.pt") if re.fullmatch(r"checkpoint-\d+\.pt", p.name)
        )
        for p in old[:-keep] if keep > 0 else old:
            p.unlink()
    return last


def load_checkpoint(
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    info: DistInfo,
) -> dict[str, Any]:
    """Restores weights, optimiser and scheduler in place; returns step, this rank's data position
    and RNG state (set it after the data loader exists), and the saved config."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    weights = {f"{part}.{k}": v for part in _parts(model) for k, v in state[part].items()}
    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, weights, options=options)
    if optimizer is not None:
        set_optimizer_state_dict(model, optimizer, state["optimizer"], options=options)
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    same_world = state["world_size"] == info.world_size
    return {
        "step": state["step"],
        "data": state["data"][info.rank] if same_world else None,
        "rng": state["rng"][info.rank] if same_world else None,
        "config": state["config"],
    }

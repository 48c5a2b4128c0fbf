"""Sharded checkpoints that resume exactly: weights, optimiser, scheduler, step, RNG and data position.

A checkpoint is a directory written by every rank at once (`torch.distributed.checkpoint`):

    OUT/checkpoint-00000400/
        .metadata  __0_0.distcp  __1_0.distcp ...   model + optimiser, each rank writing its own shards
        meta.pt                                     step, scheduler, config, world size (rank 0)
        rank-00000.pt  rank-00001.pt ...            each rank's RNG states and data position
    OUT/checkpoint-last -> checkpoint-00000400      the newest complete one

Under FSDP a rank writes and reads only its own parameter and optimiser shards; under DDP the
replicated tensors are spread over the ranks for writing. The saved tensors carry their global
shapes, so a checkpoint written by N ranks loads on M ranks under any strategy (resharding on
read). The RNG states and data positions are per rank: they are restored when the world size is
the same, and the data streams restart at their epoch start otherwise.

`export_checkpoint` turns one into a single consolidated file of full tensors (the layout
`read_checkpoint` returns) for inference, for `--backbone` and for tools that want one file.
Every value is a tensor or plain Python data, so `torch.load(weights_only=True)` reads it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

from curation.config import ConfigError
from curation.training.distributed import DistInfo
from curation.training.rng import rng_state, set_rng_state

__all__ = ["LAST", "export_checkpoint", "load_checkpoint", "read_checkpoint", "resume_point", "rng_state",
           "save_checkpoint", "set_rng_state"]  # fmt: skip

LAST = "checkpoint-last"
META = "meta.pt"
NUMBERED = re.compile(r"checkpoint-\d{8}")


def resume_point(out_dir: Path) -> Path | None:
    """OUT/checkpoint-last when a run left one; refuses a single-file checkpoint of the former
    layout rather than silently starting over beside it."""
    last = out_dir / LAST
    if last.exists():
        return last
    legacy = out_dir / "checkpoint-last.pt"
    if legacy.is_file():
        raise ConfigError(
            f"{legacy} is a single-file checkpoint, which runs no longer resume from: start over with "
            "--no-resume, or from its weights with --init / --backbone (they read it)"
        )
    return None


def _rank_file(rank: int) -> str:
    return f"rank-{rank:05d}.pt"


@contextlib.contextmanager
def _single_process_ok():
    """DCP warns that a single process is "assumed" whenever no process group exists: here that is
    the intent (a 1-rank run, an export), not a mistake worth a warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


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
) -> Path:
    """Collective: every rank calls it. Writes OUT/checkpoint-<step>/, points OUT/checkpoint-last at
    it, and keeps `keep` older numbered checkpoints besides it."""
    name = f"checkpoint-{step:08d}"
    tmp = out_dir / f".{name}.tmp"
    if info.is_main:
        shutil.rmtree(tmp, ignore_errors=True)  # a crash mid-write left it behind
        tmp.mkdir(parents=True)
    _barrier(info)
    state = {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, optimizer)}
    torch.save({"rng": rng_state(), "data": data_position}, tmp / _rank_file(info.rank))
    with _single_process_ok():
        dcp.save(state, checkpoint_id=tmp, no_dist=not info.enabled)
    if info.is_main:
        meta = {"step": step, "scheduler": scheduler.state_dict(), "config": config,
                "world_size": info.world_size, "parts": [n for n, _ in model.named_children()]}  # fmt: skip
        torch.save(meta, tmp / META)
        final = out_dir / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)  # only a complete checkpoint ever carries a numbered name
        link = out_dir / f".{LAST}.tmp"
        link.unlink(missing_ok=True)
        link.symlink_to(name)
        os.replace(link, out_dir / LAST)  # atomic: checkpoint-last never points at a partial write
        numbered = sorted(p for p in out_dir.iterdir() if NUMBERED.fullmatch(p.name) and p.name != name)
        stale = [p for p in out_dir.glob(".checkpoint-*.tmp") if p.is_dir()]  # crashed mid-write
        for old in numbered[: max(len(numbered) - keep, 0)] + stale:
            shutil.rmtree(old)
    _barrier(info)  # on return every rank sees the finished checkpoint
    return out_dir / name


def load_checkpoint(
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    info: DistInfo,
) -> dict[str, Any]:
    """Restores weights, optimiser and scheduler in place, each rank reading the pieces of the
    tensors it holds; returns step, this rank's data position and RNG state (None when the world
    size changed; set the RNG after the data loader exists), and the saved config."""
    path = Path(path)
    if not (path / META).is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint directory (no {META})")
    meta = torch.load(path / META, map_location="cpu", weights_only=True)
    state: dict[str, Any] = {"model": get_model_state_dict(model)}
    if optimizer is not None:
        state["optimizer"] = get_optimizer_state_dict(model, optimizer)
    with _single_process_ok():
        dcp.load(state, checkpoint_id=path, no_dist=not info.enabled)
    set_model_state_dict(model, state["model"])
    if optimizer is not None:
        set_optimizer_state_dict(model, optimizer, state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(meta["scheduler"])
    rank_state = None
    if meta["world_size"] == info.world_size:
        rank_state = torch.load(path / _rank_file(info.rank), map_location="cpu", weights_only=True)
    return {
        "step": meta["step"],
        "data": rank_state["data"] if rank_state else None,
        "rng": rank_state["rng"] if rank_state else None,
        "config": meta["config"],
    }


def _split_parts(weights: dict[str, torch.Tensor], parts: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    return {part: {k.removeprefix(part + "."): v for k, v in weights.items() if k.startswith(part + ".")}
            for part in parts}  # fmt: skip


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The full weights of a checkpoint in one process, as {part: {name: tensor}, "step", "config",
    "world_size"}: from a checkpoint directory (every shard read and joined) or from a consolidated
    file (`export_checkpoint`'s output, or an imported release). Optimiser state is not read."""
    path = Path(path)
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    if not (path / META).is_file():
        raise FileNotFoundError(f"{path}: neither a checkpoint file nor a checkpoint directory")
    meta = torch.load(path / META, map_location="cpu", weights_only=True)
    loaded: dict[str, Any] = {}
    keys = {k for k in dcp.FileSystemReader(path).read_metadata().state_dict_metadata if k.startswith("model.")}
    _load_state_dict(loaded, storage_reader=dcp.FileSystemReader(path),
                     planner=_EmptyStateDictLoadPlanner(keys=keys), no_dist=True)  # fmt: skip
    weights = loaded["model"]
    return {**_split_parts(weights, meta["parts"]), "step": meta["step"], "config": meta["config"],
            "world_size": meta["world_size"]}  # fmt: skip


def export_checkpoint(path: str | Path, output: str | Path) -> dict[str, Any]:
    """One consolidated file of full tensors from a (sharded) checkpoint directory; run on one rank.
    Returns what was written: out, step, world_size (of the saving run), tensors, parameters."""
    state = read_checkpoint(path)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, output)
    tensors = [t for part in meta_parts(state) for t in state[part].values()]
    return {"out": output, "step": state["step"], "world_size": state["world_size"],
            "tensors": len(tensors), "parameters": sum(t.numel() for t in tensors)}  # fmt: skip


def meta_parts(state: dict[str, Any]) -> list[str]:
    """The model parts of a `read_checkpoint` dict (student/teacher/dino_loss, or backbone/head)."""
    return [k for k, v in state.items() if isinstance(v, dict) and k != "config"]

"""torchrun integration: process group, device, and DDP / FSDP2 wrapping of the meta-architecture.

Under `torchrun` (RANK/WORLD_SIZE/LOCAL_RANK set) we join the process group (NCCL on GPU, gloo on
CPU). Small models are replicated with DDP; large ones (>= 1B parameters under `strategy: auto`)
are sharded with FSDP2 `fully_shard`, one unit per transformer block: in pretraining student and
teacher alike, so the teacher's EMA runs on matching local shards; in head training the backbone
and the head.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

FSDP_AUTO_PARAMS = 1_000_000_000


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    rank = dist.get_rank() if dist.is_initialized() else 0
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=device)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_gather_object(obj, info: DistInfo) -> list:
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def resolve_strategy(strategy: str, num_params: int, info: DistInfo) -> str:
    if not info.enabled:
        return "none"
    if strategy == "auto":
        return "fsdp" if num_params >= FSDP_AUTO_PARAMS else "ddp"
    return strategy


def _fsdp_mesh_and_policy(info: DistInfo, bf16: bool):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy

    mesh = init_device_mesh(info.device.type, (info.world_size,))
    mp = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if bf16
        else MixedPrecisionPolicy()
    )
    return mesh, mp


def _shard_backbone(backbone: nn.Module, mesh, mp) -> None:
    """One FSDP unit per transformer block (and the 4K window stage), then the rest of the backbone:
    a rank holds one block's full parameters at a time."""
    from torch.distributed.fsdp import fully_shard

    for blk in backbone.blocks:
        fully_shard(blk, mesh=mesh, mp_policy=mp)
    if backbone.window_stage is not None:
        fully_shard(backbone.window_stage, mesh=mesh, mp_policy=mp)
    fully_shard(backbone, mesh=mesh, mp_policy=mp)


def shard_with_fsdp(model: nn.Module, info: DistInfo, bf16: bool) -> None:
    """Pretraining: FSDP2 per block, then per part, then the whole. The model is still on the meta device."""
    from torch.distributed.fsdp import fully_shard

    mesh, mp = _fsdp_mesh_and_policy(info, bf16)
    for tree in (model.student, model.teacher):
        _shard_backbone(tree["backbone"], mesh, mp)
        fully_shard(tree["dino_head"], mesh=mesh, mp_policy=mp)
    for blk in model.student["mae_decoder"].blocks:
        fully_shard(blk, mesh=mesh, mp_policy=mp)
    fully_shard(model.student["mae_decoder"], mesh=mesh, mp_policy=mp)
    # The meta-arch as root: FSDP keeps a root's parameters unsharded after forward, which would
    # leave the teacher (never run backward) holding full plain tensors at EMA time.
    fully_shard(model, mesh=mesh, mp_policy=mp)


def shard_task_model(model: nn.Module, info: DistInfo, bf16: bool) -> None:
    """Head training: the backbone per block, the head, then the task model as root. Parameter
    names are unchanged, so the optimiser's layer-wise LR decay groups are built as without FSDP."""
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    mesh, mp = _fsdp_mesh_and_policy(info, bf16)
    _shard_backbone(model.backbone, mesh, mp)
    # The task model calls backbone.feature_map, not forward: FSDP must gather around it too.
    register_fsdp_forward_method(model.backbone, "feature_map")
    fully_shard(model.head, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)


def wrap_ddp(model: nn.Module, info: DistInfo) -> nn.Module:
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[info.device.index] if info.device.type == "cuda" else None
    )


@contextlib.contextmanager
def no_grad_sync(wrapped: nn.Module, skip: bool):
    """Skip the gradient all-reduce on the micro-steps of an accumulation before the last one."""
    if not skip:
        yield
        return
    if isinstance(wrapped, nn.parallel.DistributedDataParallel):
        with wrapped.no_sync():
            yield
        return
    from torch.distributed.fsdp import FSDPModule

    fsdp = [m for m in wrapped.modules() if isinstance(m, FSDPModule)]
    for m in fsdp:
        m.set_requires_gradient_sync(False, recurse=False)
    try:
        yield
    finally:
        for m in fsdp:
            m.set_requires_gradient_sync(True, recurse=False)

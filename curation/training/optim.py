"""AdamW with layer-wise LR decay and no weight decay on norms, biases and tokens; warmup + cosine LR."""

from __future__ import annotations

import torch
from torch import nn

from curation.training.config import OptimConfig
from curation.training.schedules import warmup_cosine

NO_DECAY_NAMES = ("cls_token", "register_tokens", "window_cls", "local_pos_embed", "mask_token", "gamma")


def param_groups(
    model: nn.Module, backbone: nn.Module, weight_decay: float, layer_decay: float
) -> list[dict]:
    """Groups keyed by (LR scale, decay or not). Backbone depth i gets `layer_decay**(depth + 1 - i)`;
    everything outside the backbone (heads, decoder) sits above the last block and gets the full LR."""
    top = backbone.depth + 1
    in_backbone = {id(p): name for name, p in backbone.named_parameters()}
    groups: dict[tuple[float, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer = backbone.layer_id(in_backbone[id(param)]) if id(param) in in_backbone else top
        scale = layer_decay ** (top - layer)
        no_decay = param.ndim <= 1 or name.rsplit(".", 1)[-1] in NO_DECAY_NAMES
        group = groups.setdefault(
            (scale, no_decay),
            {"params": [], "names": [], "lr_scale": scale, "weight_decay": 0.0 if no_decay else weight_decay},
        )
        group["params"].append(param)
        group["names"].append(name)
    return list(groups.values())


def build_optimizer(model: nn.Module, backbone: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    groups = param_groups(model, backbone, cfg.weight_decay, cfg.layer_decay)
    for g in groups:
        g["lr"] = cfg.lr * g["lr_scale"]
        del g["names"]  # kept out of the optimizer's state_dict
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), foreach=True)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    """LambdaLR so that the scheduler has a state_dict; the factor is the warmup-cosine curve over
    the peak LR, and multiplies each group's (layer-decayed) base LR."""
    final = cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0

    def factor(step: int) -> float:
        return warmup_cosine(step, total_steps, cfg.warmup_steps, 1.0, final)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def set_weight_decay(optimizer: torch.optim.Optimizer, value: float) -> None:
    """The scheduled weight decay, on the groups that decay at all (norms, biases, tokens stay at 0).
    Told apart by their current value, which a resumed optimiser's state carries too."""
    for group in optimizer.param_groups:
        if group["weight_decay"] > 0:
            group["weight_decay"] = value

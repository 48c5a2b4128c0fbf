"""Joint MAE + [CLS] self-distillation pretraining: L = L_MAE + lambda * L_CL (dinov2 `ssl_meta_arch.py` style).

The student encodes the masked global crops once; that single pass feeds both the MAE decoder
(pixels of the masked patches) and, through its [CLS] token, the prototype head. Local crops go
through the student unmasked. The teacher, an EMA of the student's backbone and head, sees the
full global crops and provides the CL targets.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from curation.config import ConfigError
from curation.training.backbone import (
    arch_options,
    build_backbone,
    default_window_layers,
    read_backbone_weights,
)
from curation.training.config import PretrainConfig
from curation.training.dino_head import DINOHead
from curation.training.health import target_entropies
from curation.training.losses import DINOClsLoss, koleo_loss
from curation.training.mae import MAEDecoder, mae_loss, random_masking

# What forward returns besides the loss to backpropagate; the trainer averages and logs them.
METRICS = ("loss", "mae", "cl", "koleo", "teacher_entropy", "teacher_mi")


class SSLMetaArch(nn.Module):
    def __init__(self, cfg: PretrainConfig):
        super().__init__()
        backbone = build_backbone(
            cfg.model.name,
            window_layers=cfg.model.window_layers,
            layer_scale_init=cfg.model.layer_scale_init,
            **arch_options(dataclasses.asdict(cfg.model)),
        )
        backbone.set_grad_checkpointing(cfg.model.grad_checkpointing)
        head = DINOHead(
            backbone.dim, cfg.cl.prototypes, cfg.cl.head_hidden, cfg.cl.head_bottleneck, cfg.cl.head_layers
        )
        # Reconstruction at output_scale of the input (the 4K variants: 2K), by average pooling
        # the targets: each token then predicts a (token_stride x scale)-pixel patch.
        out_stride = round(backbone.token_stride * cfg.mae.output_scale)
        if out_stride < 1 or backbone.token_stride % out_stride:
            raise ConfigError(
                f"mae.output_scale {cfg.mae.output_scale} does not divide the token stride {backbone.token_stride}"
            )
        self.target_pool = backbone.token_stride // out_stride
        decoder = MAEDecoder(
            backbone.dim,
            backbone.num_prefix_tokens,
            out_stride,
            dim=cfg.model.decoder_dim,
            depth=cfg.model.decoder_depth,
            num_heads=cfg.model.decoder_heads,
        )
        self.student = nn.ModuleDict({"backbone": backbone, "dino_head": head, "mae_decoder": decoder})
        self.teacher = nn.ModuleDict({"backbone": copy.deepcopy(backbone), "dino_head": copy.deepcopy(head)})
        self.teacher.requires_grad_(False)
        self.dino_loss = DINOClsLoss(
            cfg.cl.prototypes,
            student_temp=cfg.cl.student_temp,
            normalization=cfg.cl.normalization,
            center_momentum=cfg.cl.center_momentum,
            sinkhorn_iters=cfg.cl.sinkhorn_iters,
        )
        self.mask_ratio = cfg.mae.mask_ratio
        self.norm_pix = cfg.mae.norm_pix
        self.cl_weight = cfg.cl.weight
        self.koleo_weight = cfg.cl.koleo_weight

    def teacher_student_pairs(self) -> tuple[list[Tensor], list[Tensor]]:
        names = ("backbone", "dino_head")
        teacher = [p for n in names for p in self.teacher[n].parameters()]
        student = [p for n in names for p in self.student[n].parameters()]
        return teacher, student

    @torch.no_grad()
    def copy_student_to_teacher(self) -> None:
        for t, s in zip(*self.teacher_student_pairs()):
            t.copy_(s)  # once, at init: a loop, as DTensor has no _foreach_copy_

    def load_backbone(self, path: str, cfg: PretrainConfig) -> None:
        """Start student and teacher backbones from `path` (an imported release or a checkpoint of
        ours). Its architecture must be the configured one: a mismatch is a ConfigError naming it."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        weights, model_cfg = read_backbone_weights(path)
        backbone = self.student["backbone"]
        window_layers = len(backbone.window_stage.blocks) if backbone.window_stage is not None else 0
        ours = {"name": cfg.model.name, "window_layers": window_layers, **backbone.arch_options}
        theirs = {
            "name": model_cfg["name"],
            "window_layers": model_cfg.get("window_layers") or default_window_layers(model_cfg["name"]),
            **arch_options(model_cfg),
        }
        differ = [k for k in ours if ours[k] != theirs[k]]
        if differ:
            raise ConfigError(
                f"model.init {path}: "
                + ", ".join(f"{k} is {theirs[k]!r} there, {ours[k]!r} here" for k in differ)
            )
        # Works on plain and FSDP-sharded modules alike: full tensors in, each rank keeps its shard.
        set_model_state_dict(backbone, weights, options=StateDictOptions(full_state_dict=True, strict=True))
        self.copy_student_to_teacher()

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """teacher <- momentum * teacher + (1 - momentum) * student, as one foreach op per list."""
        teacher, student = self.teacher_student_pairs()
        torch._foreach_mul_(teacher, momentum)
        torch._foreach_add_(teacher, student, alpha=1.0 - momentum)

    def forward(
        self, global_crops: Tensor, local_crops: Tensor | None, teacher_temp: float
    ) -> dict[str, Tensor]:
        """global_crops [B, G, C, H, W]; local_crops [B, L, C, h, w] or None. Returns the loss dict."""
        B, G = global_crops.shape[:2]
        views = global_crops.transpose(0, 1).flatten(0, 1)  # [G*B, C, H, W], view-major

        with torch.no_grad():
            t_cls = self.teacher["backbone"](views)["cls"]  # [G*B, D]
            t_logits = self.teacher["dino_head"](t_cls)  # [G*B, K]
            all_targets = self.dino_loss.teacher_targets(t_logits, teacher_temp)  # [G*B, K]
            entropy, mi = target_entropies(all_targets)  # collapse signs (health.py)
            targets = all_targets.chunk(G)  # G x [B, K]

        backbone = self.student["backbone"]
        stride = backbone.token_stride
        num_tokens = (views.shape[-2] // stride) * (views.shape[-1] // stride)
        keep, mask, restore = random_masking(G * B, num_tokens, self.mask_ratio, views.device)
        s_out = backbone(views, keep)
        pred = self.student["mae_decoder"](s_out["tokens"], restore, s_out["grid"])  # [G*B, C, H', W']
        target = F.avg_pool2d(views, self.target_pool) if self.target_pool > 1 else views
        loss_mae = mae_loss(target, pred, mask, stride // self.target_pool, self.norm_pix)

        s_cls = [s_out["cls"]]  # [G*B, D]
        if local_crops is not None and local_crops.shape[1] > 0:
            local_views = local_crops.transpose(0, 1).flatten(0, 1)  # [L*B, C, h, w]
            s_cls.append(backbone(local_views)["cls"])  # [L*B, D]
        s_logits = self.student["dino_head"](torch.cat(s_cls))  # [(G+L)*B, K]
        loss_cl = self.dino_loss(list(s_logits.split(B)), list(targets))

        # KoLeo per global crop, summed over crops (dinov2); a single image has no neighbour.
        loss_koleo = views.new_zeros(())
        if self.koleo_weight > 0 and B > 1:
            loss_koleo = sum(koleo_loss(c) for c in s_out["cls"].chunk(G))

        loss = loss_mae + self.cl_weight * loss_cl + self.koleo_weight * loss_koleo
        return {
            "loss": loss,
            "mae": loss_mae.detach(),
            "cl": loss_cl.detach(),
            "koleo": loss_koleo.detach(),
            "teacher_entropy": entropy,
            "teacher_mi": mi,
        }

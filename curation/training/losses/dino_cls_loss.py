"""DINO [CLS] self-distillation loss with centering or Sinkhorn-Knopp teacher targets.

The student's prototype distribution for every crop is pulled towards the teacher's for every
*other* global crop (Caron et al. 2021). Teacher targets are sharpened by a low temperature and
kept from collapsing either by subtracting a running center (DINO) or by Sinkhorn-Knopp
equipartition over the global batch (SwAV / DINOv2).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def _all_reduce(x: Tensor) -> Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(x)
    return x


class DINOClsLoss(nn.Module):
    def __init__(
        self,
        num_prototypes: int,
        student_temp: float = 0.1,
        normalization: str = "centering",
        center_momentum: float = 0.9,
        sinkhorn_iters: int = 3,
    ):
        super().__init__()
        self.student_temp = student_temp
        self.normalization = normalization
        self.center_momentum = center_momentum
        self.sinkhorn_iters = sinkhorn_iters
        # A buffer, so that it is saved with the model and an exact resume restores it.
        self.register_buffer("center", torch.zeros(1, num_prototypes))

    def reset_parameters(self) -> None:
        self.center.zero_()

    @torch.no_grad()
    def teacher_targets(self, teacher_logits: Tensor, teacher_temp: float) -> Tensor:
        """[N, K] teacher logits -> [N, K] target distributions (rows sum to 1)."""
        teacher_logits = teacher_logits.float()
        if self.normalization == "sinkhorn":
            return self.sinkhorn_knopp(teacher_logits, teacher_temp)
        targets = F.softmax((teacher_logits - self.center) / teacher_temp, dim=-1)
        self.update_center(teacher_logits)
        return targets

    @torch.no_grad()
    def update_center(self, teacher_logits: Tensor) -> None:
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        batch_center = _all_reduce(teacher_logits.sum(dim=0, keepdim=True)) / (len(teacher_logits) * world)
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)

    @torch.no_grad()
    def sinkhorn_knopp(self, teacher_logits: Tensor, teacher_temp: float) -> Tensor:
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        # Subtracting the global max changes nothing after normalisation but avoids exp overflow.
        shift = teacher_logits.max().clone()
        if world > 1:
            dist.all_reduce(shift, op=dist.ReduceOp.MAX)
        Q = torch.exp((teacher_logits - shift) / teacher_temp).t()  # [K, N]
        num_samples = Q.shape[1] * world
        K = Q.shape[0]
        Q /= _all_reduce(Q.sum())
        for _ in range(self.sinkhorn_iters):
            Q /= _all_reduce(Q.sum(dim=1, keepdim=True))  # each prototype gets 1/K of the mass
            Q /= K
            Q /= Q.sum(dim=0, keepdim=True)  # each sample is a distribution
            Q /= num_samples
        return (Q * num_samples).t()  # [N, K]

    def forward(self, student_logits: list[Tensor], teacher_targets: list[Tensor]) -> Tensor:
        """student_logits: per crop [B, K], global crops first; teacher_targets: per global crop [B, K]."""
        total, pairs = 0.0, 0
        for t_idx, target in enumerate(teacher_targets):
            for s_idx, logits in enumerate(student_logits):
                if s_idx == t_idx:  # same view: nothing to learn
                    continue
                log_p = F.log_softmax(logits.float() / self.student_temp, dim=-1)
                total = total + torch.sum(-target * log_p, dim=-1).mean()
                pairs += 1
        return total / max(pairs, 1)

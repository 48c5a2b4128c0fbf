"""Signs that a pretraining run is not learning, checked at every log line.

- **CL at ln(K).** With K prototypes, a student whose prototype distribution is uniform scores
  exactly ln(K) against any target. Sitting there after the warm-ups means the [CLS] branch has
  no signal (a collapsed teacher, or a head still at its init).
- **MAE not falling.** The reconstruction loss of a learning model falls early and fast; no new
  best for `patience` log lines after warm-up means the encoder/decoder pair is not learning.
- **Teacher collapse.** The mutual information between image and prototype under the teacher's
  targets, MI = H(mean target) - mean H(target), says how much the targets depend on the image.
  It is 0 when every image gets the same distribution, whether one-hot (sharpening collapse) or
  uniform, and at most ln(min(K, targets in the batch)). The teacher's entropy alone cannot tell:
  a low per-image entropy is the sharpness DINO wants, and a tiny run's teacher gave all 8 images
  of a batch the same distribution over ~10 prototypes (both entropies 2.30 nats, MI 0). Warned
  below `min_mi` of the ceiling.

Each warning is a row key in metrics.jsonl (`warnings`, at every log line while it holds) and a
terminal message when it starts to hold.
"""

from __future__ import annotations

import math
import time

import torch


class FailureWatch:
    """Fed each log line's metrics; says which failure signs hold."""

    def __init__(
        self,
        warmup_steps: int,
        prototypes: int,
        targets_per_step: int,
        cl_tolerance: float = 0.01,
        mae_patience: int = 5,
        min_mi: float = 0.1,
    ):
        self.warmup_steps = warmup_steps  # no verdict before: the LR and teacher-temperature warm-ups
        self.prototypes = prototypes
        self.targets_per_step = targets_per_step  # teacher target rows per step on one rank
        self.cl_tolerance = cl_tolerance  # |cl - ln K| below this fraction of ln K is "at ln K"
        self.mae_patience = mae_patience  # log lines without a 1% better MAE
        self.min_mi = min_mi  # fraction of the ceiling ln(min(K, targets per step))
        self.best_mae, self.since_best = math.inf, 0
        self.active: set[str] = set()

    def new_phase(self, targets_per_step: int) -> None:
        """A new data phase (other crops, other batch): the MAE loss starts a new scale, and the
        MI ceiling follows the batch."""
        self.targets_per_step = targets_per_step
        self.best_mae, self.since_best = math.inf, 0

    def check(self, step: int, metrics: dict[str, float]) -> tuple[list[str], list[str]]:
        """(warnings that hold now, messages for those that just started to hold)."""
        if step <= self.warmup_steps:
            return [], []
        found: dict[str, str] = {}
        ln_k = math.log(self.prototypes)
        cl = metrics.get("cl")
        if cl is not None and abs(cl - ln_k) < self.cl_tolerance * ln_k:
            found["cl_at_ln_prototypes"] = (
                f"cl loss {cl:.4f} sits at ln({self.prototypes}) = {ln_k:.4f} past warm-up: the student's "
                "prototype distribution is uniform, the [CLS] objective is not learning"
            )
        mae = metrics.get("mae")
        if mae is not None:
            if mae < 0.99 * self.best_mae:
                self.best_mae, self.since_best = mae, 0
            else:
                self.since_best += 1
            if self.since_best >= self.mae_patience:
                found["mae_not_falling"] = (
                    f"mae loss {mae:.4f} has not improved on {self.best_mae:.4f} for {self.since_best} "
                    "log lines past warm-up"
                )
        mi = metrics.get("teacher_mi")
        ceiling = math.log(min(self.prototypes, max(self.targets_per_step, 2)))
        if mi is not None and mi < self.min_mi * ceiling:
            found["teacher_collapse"] = (
                f"teacher collapse: its targets carry {mi:.3f} nats about the image (ceiling {ceiling:.3f}): "
                "every image gets nearly the same prototype distribution"
            )
        started = [f"warning: step {step}: {found[k]}" for k in sorted(found) if k not in self.active]
        self.active = set(found)
        return sorted(found), started


def target_entropies(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher targets [N, K] (rows sum to 1) -> (mean per-row entropy, mutual information between
    row and prototype = entropy of the mean row - mean per-row entropy), in nats."""
    t = targets.float()
    per_row = -(t * t.clamp_min(1e-12).log()).sum(dim=-1).mean()
    mean = t.mean(dim=0)
    batch = -(mean * mean.clamp_min(1e-12).log()).sum()
    return per_row, (batch - per_row).clamp_min(0)


def gemm_gflops(seconds: float = 0.3) -> float:
    """This machine's fp32 matmul rate (GFLOP/s) at the threads torch uses: a short measurement."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b  # warm-up
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        a @ b
        count += 1
    return 2 * 1024**3 * count / elapsed / 1e9


def cpu_pretrain_estimate(num_params: int, student_tokens: int, teacher_tokens: int) -> tuple[float, float]:
    """(expected images/s on this CPU, GFLOP per image): 6 FLOPs per parameter and token for the
    student's forward + backward, 2 for the teacher's forward (attention's quadratic term and the
    decoder left out, so the estimate is optimistic), at 84% of the measured GEMM rate (what the
    backbone reached on CPU, docs/benchmarks.md)."""
    gflop = (6 * student_tokens + 2 * teacher_tokens) * num_params / 1e9
    return 0.84 * gemm_gflops() / gflop, gflop


def cpu_warning(cfg, backbone) -> str | None:
    """For sizes from 0.1b up on a CPU: they are meant for GPUs; the rate to expect here."""
    num_params = sum(p.numel() for p in backbone.parameters())
    if num_params < 50e6:
        return None
    s, P, d = backbone.token_stride, backbone.num_prefix_tokens, cfg.data
    n_global = (d.global_size[0] // s) * (d.global_size[1] // s)
    n_local = (d.local_size[0] // s) * (d.local_size[1] // s)
    student = 2 * (round(n_global * (1 - cfg.mae.mask_ratio)) + P) + d.local_crops * (n_local + P)
    rate, gflop = cpu_pretrain_estimate(num_params, student, 2 * (n_global + P))
    return (
        f"warning: {cfg.model.name} ({num_params / 1e6:.0f}M parameters) is meant for GPUs; on this CPU "
        f"expect about {rate:.3g} img/s ({gflop:.0f} GFLOP per image, {torch.get_num_threads()} threads). "
        "Try --model sapiens2-tiny to check the pipeline on a CPU."
    )

"""L = L_MAE + lambda * L_CL on a tiny model: it learns, the teacher is the student's EMA, targets are sane."""

from __future__ import annotations

import pytest
import torch

from curation.training.data import MultiCrop
from curation.training.losses import DINOClsLoss
from curation.training.mae import mae_loss, patchify, random_masking
from curation.training.meta_arch import SSLMetaArch
from curation.training.optim import build_optimizer

pytestmark = pytest.mark.timeout(120)


def _crops(photos, n_local: int = 2):
    crop = MultiCrop((64, 64), (32, 32), n_local, global_scale=(0.9, 1.0), jitter_prob=0.0, hflip_prob=0.0)
    views = [crop(p, torch.Generator().manual_seed(i)) for i, p in enumerate(photos)]
    return torch.stack([v["global"] for v in views]), torch.stack([v["local"] for v in views])


def test_mae_loss_halves_and_cl_loss_moves_on_real_photos(tiny_config, photos):
    cfg = tiny_config("", "optim.lr=2e-3")
    torch.manual_seed(0)
    model = SSLMetaArch(cfg)
    optimizer = build_optimizer(model.student, model.student["backbone"], cfg.optim)
    global_crops, local_crops = _crops(photos)
    mae, cl = [], []
    for _ in range(250):
        out = model(global_crops, local_crops, teacher_temp=0.04)
        out["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
        model.update_teacher(0.99)
        mae.append(out["mae"].item())
        cl.append(out["cl"].item())
        if sum(mae[-10:]) / 10 < 0.5 * sum(mae[:10]) / 10:
            break
    first, last = sum(mae[:10]) / 10, sum(mae[-10:]) / 10
    assert last < 0.5 * first, f"MAE loss {first:.3f} -> {last:.3f} in {len(mae)} steps"
    assert all(torch.isfinite(torch.tensor(cl)))
    assert max(cl) - min(cl) > 0.05, "the CL loss did not move"


def test_teacher_is_the_ema_of_the_student(tiny_config, photos):
    cfg = tiny_config()
    torch.manual_seed(0)
    model = SSLMetaArch(cfg)
    teacher, student = model.teacher_student_pairs()
    assert all(torch.equal(t, s) for t, s in zip(teacher, student))  # starts as a copy
    optimizer = build_optimizer(model.student, model.student["backbone"], cfg.optim)
    global_crops, local_crops = _crops(photos)
    momentum = 0.9
    for _ in range(3):
        before = [t.detach().clone() for t in teacher]
        model(global_crops, local_crops, teacher_temp=0.04)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
        model.update_teacher(momentum)
        for t, t0, s in zip(teacher, before, student):
            torch.testing.assert_close(
                t, momentum * t0 + (1 - momentum) * s.detach(), rtol=1e-6, atol=1e-7
            )  # fp32 rounding of m*t + (1-m)*s
    assert not all(torch.equal(t, s) for t, s in zip(teacher, student))  # it lags the student
    assert all(not t.requires_grad for t in teacher)


def test_mae_loss_counts_masked_patches_only():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 32, 32)
    pred = torch.randn(2, 3, 32, 32)
    _, mask, _ = random_masking(2, 4, 0.5)
    target = patchify(images, 16)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    perfect = patchify(pred, 16).clone()
    perfect[mask.bool()] = target[mask.bool()]  # right on masked patches, wrong on visible ones
    unpatch = perfect.view(2, 2, 2, 16, 16, 3).permute(0, 5, 1, 3, 2, 4).reshape(2, 3, 32, 32)
    assert mae_loss(images, unpatch, mask, 16).item() < 1e-10
    assert mae_loss(images, pred, mask, 16).item() > 0.5
    assert mask.sum(1).tolist() == [2.0, 2.0]


def test_centering_and_sinkhorn_targets():
    torch.manual_seed(0)
    logits = torch.randn(64, 32) + torch.linspace(0, 2, 32)  # some prototypes favoured
    centering = DINOClsLoss(32, normalization="centering", center_momentum=0.5)
    targets = centering.teacher_targets(logits, teacher_temp=0.5)
    torch.testing.assert_close(targets.sum(-1), torch.ones(64))
    torch.testing.assert_close(centering.center, 0.5 * logits.mean(0, keepdim=True))
    sinkhorn = DINOClsLoss(32, normalization="sinkhorn", sinkhorn_iters=10)
    q = sinkhorn.teacher_targets(logits, teacher_temp=0.5)
    torch.testing.assert_close(q.sum(-1), torch.ones(64), atol=1e-4, rtol=0)
    # Equipartition: every prototype gets about 1/K of the batch, unlike plain softmax.
    per_proto = q.sum(0) / 64
    assert (per_proto - 1 / 32).abs().max() < 0.02
    plain = torch.softmax(logits / 0.5, -1).sum(0) / 64
    assert (plain - 1 / 32).abs().max() > 0.05
    # Same-view pairs are skipped: with one student crop per teacher crop there is nothing to learn.
    assert sinkhorn([torch.log(q)], [q]) == 0
    assert sinkhorn([torch.log(q), torch.zeros(64, 32)], [q]) > 0

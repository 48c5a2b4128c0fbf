"""L = L_MAE + lambda * L_CL on a tiny model: it learns, the teacher is the student's EMA, targets are sane."""

from __future__ import annotations

import math

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


def test_koleo_is_lower_for_spread_features_and_pushes_neighbours_apart():
    from curation.training.losses import koleo_loss

    spread = torch.eye(4, 8)  # orthogonal: nearest neighbours sqrt(2) apart
    close = torch.eye(4, 8) + 5.0  # all near the same direction
    assert koleo_loss(spread).item() == pytest.approx(-math.log(math.sqrt(2)), abs=1e-5)
    assert koleo_loss(close) > koleo_loss(spread)
    x = close.clone().requires_grad_()
    koleo_loss(x).backward()
    with torch.no_grad():
        moved = koleo_loss(x - 0.1 * x.grad)
    assert moved < koleo_loss(close)


def test_decoder_and_prototype_head_scale_with_the_model(tmp_path):
    import yaml

    from curation.training.config import load_pretrain_config

    path = tmp_path / "bare.yaml"
    path.write_text(yaml.safe_dump({"model": {"name": "sapiens2-tiny"}}))
    tiny = load_pretrain_config(path)
    assert (tiny.model.decoder_dim, tiny.cl.prototypes, tiny.cl.head_hidden) == (64, 1024, 256)
    big = load_pretrain_config(path, ["model.name=sapiens2-0.4b"])
    assert (big.model.decoder_dim, big.cl.prototypes, big.cl.head_hidden) == (512, 65536, 2048)
    assert load_pretrain_config(path, ["cl.prototypes=4096"]).cl.prototypes == 4096  # a set value wins
    model = SSLMetaArch(tiny)
    megabytes = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**20
    assert megabytes < 10, megabytes  # student + teacher + decoder + head; was ~150 MB of prototypes


def test_weight_decay_follows_its_cosine_schedule_on_decaying_groups_only(tiny_config):
    from curation.training.optim import build_optimizer, set_weight_decay
    from curation.training.schedules import cosine

    cfg = tiny_config("")
    assert (cfg.optim.weight_decay, cfg.optim.weight_decay_end) == (0.04, 0.4)  # dinov2's schedule
    model = SSLMetaArch(cfg)
    optimizer = build_optimizer(model.student, model.student["backbone"], cfg.optim)
    before = [g["weight_decay"] for g in optimizer.param_groups]
    assert 0.0 in before and 0.04 in before
    for step, expected in ((0, 0.04), (50, 0.22), (100, 0.4)):
        set_weight_decay(optimizer, cosine(step, 100, 0.04, 0.4))
        after = [g["weight_decay"] for g in optimizer.param_groups]
        assert all(a == 0.0 for a, b in zip(after, before) if b == 0.0)
        assert all(a == pytest.approx(expected) for a, b in zip(after, before) if b > 0)

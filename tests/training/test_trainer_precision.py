"""Activation checkpointing and bf16 autocast against the plain fp32 path, on CPU.

Tolerances, and why:
- checkpointing recomputes the same ops in the same order, so its gradients equal the plain
  path's to 1e-6 relative in fp32 and 1e-5 under bf16 (observed on CPU: bit-identical);
- bf16 autocast rounds matmul inputs to 8 mantissa bits (relative step 2^-8 = 0.4%); through the
  tiny model's 4 blocks every gradient tensor must stay within 5% of fp32 in relative L2 norm and
  point the same way (cosine > 0.995), the loss within 1% (observed: 1.5%, cosine 0.9999, 0.09%).
"""

from __future__ import annotations

import pytest
import torch

from curation.training.backbone import build_backbone

pytestmark = pytest.mark.timeout(120)


def _grads(model, images, weights, *, checkpointing: bool, bf16: bool):
    model.set_grad_checkpointing(checkpointing)
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        tokens = model(images)["tokens"]
    loss = (tokens.float() * weights).sum()
    loss.backward()
    return loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = build_backbone("sapiens2-tiny").train()
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        n = model(images)["tokens"].shape
    weights = torch.randn(n)
    plain = _grads(model, images, weights, checkpointing=False, bf16=False)
    return model, images, weights, plain


def test_activation_checkpointing_gives_the_plain_gradients(setup):
    model, images, weights, (loss, grads) = setup
    ck_loss, ck_grads = _grads(model, images, weights, checkpointing=True, bf16=False)
    assert ck_loss == pytest.approx(float(loss), rel=1e-6)
    assert ck_grads.keys() == grads.keys() and len(grads) > 20
    for name, g in grads.items():
        torch.testing.assert_close(ck_grads[name], g, rtol=1e-6, atol=1e-9, msg=name)


def test_bf16_autocast_gradients_match_fp32_within_stated_tolerance(setup):
    model, images, weights, (loss, grads) = setup
    bf_loss, bf_grads = _grads(model, images, weights, checkpointing=False, bf16=True)
    assert float(bf_loss) == pytest.approx(float(loss), rel=1e-2)
    assert all(g.dtype == torch.float32 for g in bf_grads.values())  # fp32 master weights and grads
    worst = max(grads, key=lambda n: _relative(bf_grads[n], grads[n]))
    assert _relative(bf_grads[worst], grads[worst]) < 0.05, worst
    for name, g in grads.items():
        cos = torch.nn.functional.cosine_similarity(bf_grads[name].flatten(), g.flatten(), dim=0)
        assert cos > 0.995, (name, float(cos))


def test_checkpointing_under_bf16_recomputes_the_same_bf16_values(setup):
    model, images, weights, _ = setup
    bf_loss, bf_grads = _grads(model, images, weights, checkpointing=False, bf16=True)
    ck_loss, ck_grads = _grads(model, images, weights, checkpointing=True, bf16=True)
    assert float(ck_loss) == pytest.approx(float(bf_loss), rel=1e-6)
    for name, g in bf_grads.items():
        torch.testing.assert_close(ck_grads[name], g, rtol=1e-5, atol=1e-8, msg=name)


def test_checkpointing_saves_less_for_backward(setup):
    # What checkpointing is for: the tensors kept for backward shrink to the block inputs.
    model, images, _, _ = setup

    def saved_bytes(checkpointing: bool) -> int:
        model.set_grad_checkpointing(checkpointing)
        seen: dict[int, int] = {}

        def pack(t):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(images)["tokens"].sum()
        return sum(seen.values())

    assert saved_bytes(True) < 0.5 * saved_bytes(False)


def test_head_training_with_checkpointing_recomputes_and_matches(tmp_path, labelled, head_config, monkeypatch):
    from curation.training import backbone as backbone_module
    from curation.training.heads.trainer import train_head

    calls = []
    real = backbone_module.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(backbone_module, "checkpoint", counting)
    runs = {}
    for flag in (False, True):
        cfg = head_config("seg", labelled("seg"), model={"grad_checkpointing": flag}, train={"steps": 2})
        runs[flag] = train_head(cfg, tmp_path / str(flag))
        assert bool(calls) == flag  # the switch reaches the backbone
    for a, b in zip(runs[False], runs[True], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6)

"""The CUDA paths of the trainer (skipped without a GPU; bench/gpu_check.sh runs them): a bf16
pretraining run that checkpoints and resumes exactly, head training and eval on the GPU, and
activation checkpointing on CUDA kernels."""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.timeout(300),
]


def test_bf16_pretraining_on_cuda_resumes_exactly(tmp_path, shards, tiny_config, monkeypatch):
    from crash_resume import crash_then_resume

    from curation.training import trainer

    cfg = tiny_config(shards, "train.steps=4", "train.ckpt_every=2", "train.precision=bf16")
    uninterrupted = trainer.pretrain(cfg, tmp_path / "a")
    resumed = crash_then_resume(monkeypatch, lambda: trainer.pretrain(cfg, tmp_path / "b"))
    assert [h["step"] for h in resumed] == [3, 4]
    for a, b in zip(uninterrupted[2:], resumed, strict=True):
        # CUDA kernels may pick different reduction orders between runs: bf16 rounding bounds it.
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3), (a, b)


def test_head_trains_and_evaluates_on_cuda(tmp_path, labelled, head_config):
    from curation.training.heads.evaluate import evaluate, load_head_checkpoint
    from curation.training.heads.trainer import train_head

    cfg = head_config("seg", labelled("seg"), train={"steps": 3, "precision": "bf16"})
    history = train_head(cfg, tmp_path / "seg")
    assert len(history) == 3 and all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    model, loaded = load_head_checkpoint(tmp_path / "seg" / "checkpoint-last", "cuda")
    assert next(model.parameters()).device.type == "cuda"
    metrics = evaluate(model, loaded, str(labelled("seg")), bf16=True)
    assert metrics["samples"] == 4 and 0 <= metrics["mIoU"] <= 1


def test_activation_checkpointing_on_cuda(tmp_path):
    from curation.training.backbone import build_backbone

    torch.manual_seed(0)
    model = build_backbone("sapiens2-tiny").cuda().train()
    images = torch.randn(2, 3, 64, 96, device="cuda")
    grads = []
    for checkpointing in (False, True):
        model.set_grad_checkpointing(checkpointing)
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            model(images)["tokens"].float().square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-3, atol=1e-6, msg=name)

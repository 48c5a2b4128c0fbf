"""Training-step throughput: images/s, FLOP rate and MFU of a pretraining or head step.

The trainer's own pieces on synthetic batches (no data loader: this is the step's ceiling; the
loader's required rate is in docs/training.md): the SSL meta-architecture (MAE + [CLS]
distillation, 2 global crops + `--local-crops` local crops, AdamW, teacher EMA) or a task model
(backbone + head, fine-tuned with layer-wise LR decay), forward under autocast, backward, clip,
optimiser step. FLOPs are counted with torch's FlopCounterMode on one step (matmuls and
attention); MFU = counted FLOP/s / `--peak-tflops` (default: the dense bf16 peak of a known GPU).

CPU (the path, not a figure):  python bench/bench_train_step.py --model sapiens2-tiny --height 64 --width 64
GPU:  python bench/bench_train_step.py --device cuda --model sapiens2-0.4b --batch 4 --json step.json
      python bench/bench_train_step.py --device cuda --objective head --batch 8
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

# Dense bf16 tensor-core peaks (TFLOP/s) by device name, from the vendors' data sheets.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "B200": 2250.0}


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given is not None or device.type != "cuda":
        return given
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def pretrain_step(args, device):
    from curation.training.config import PretrainConfig
    from curation.training.meta_arch import SSLMetaArch
    from curation.training.optim import build_optimizer

    tree = {"model": {"name": args.model, "grad_checkpointing": args.grad_checkpointing},
            "data": {"global_size": [args.height, args.width], "local_crops": args.local_crops,
                     "local_size": [args.height // 4, args.width // 4]}}  # fmt: skip
    if args.model.startswith("sapiens2-tiny"):  # small heads for a quick CPU pass
        tree["cl"] = {"prototypes": 128, "head_hidden": 64, "head_bottleneck": 32}
        tree["model"].update(decoder_dim=64, decoder_depth=1, decoder_heads=4)
    cfg = PretrainConfig.from_dict(tree)  # the size's defaults filled in, validated
    model = SSLMetaArch(cfg).to(device).train()
    optimizer = build_optimizer(model.student, model.student["backbone"], cfg.optim)
    B, (H, W), (h, w) = args.batch, cfg.data.global_size, cfg.data.local_size
    global_crops = torch.randn(B, 2, 3, H, W, device=device)
    local_crops = torch.randn(B, args.local_crops, 3, h, w, device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16"):
            loss = model(global_crops, local_crops, 0.07)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.student.parameters(), 3.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.update_teacher(0.999)

    return model.student["backbone"], step


def head_step(args, device):
    from curation.training.heads.config import HeadTrainConfig
    from curation.training.heads.model import build_task_model
    from curation.training.heads.tasks import TASKS
    from curation.training.optim import build_optimizer

    cfg = HeadTrainConfig.from_dict({"task": "seg", "model": {"init": "random", "name": args.model},
                                     "data": {"input_size": [args.height, args.width]}})  # fmt: skip
    model = build_task_model(cfg).to(device).train()
    model.backbone.set_grad_checkpointing(args.grad_checkpointing)
    optimizer = build_optimizer(model, model.backbone, cfg.optim)
    images = torch.randn(args.batch, 3, args.height, args.width, device=device)
    batch = {"labels": torch.randint(0, 29, (args.batch, args.height, args.width), device=device)}

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16"):
            out = model(images)
        TASKS["seg"].loss(out, batch, cfg)["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return model.backbone, step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objective", choices=("pretrain", "head"), default="pretrain")
    ap.add_argument("--model", default="sapiens2-0.4b")
    ap.add_argument("--height", type=int, default=1024)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--batch", type=int, default=4, help="images per step")
    ap.add_argument("--local-crops", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--grad-checkpointing", action="store_true")
    ap.add_argument("--peak-tflops", type=float, help="the device's peak for MFU (default: known GPUs)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    backbone, step = (pretrain_step if args.objective == "pretrain" else head_step)(args, device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    seconds = (time.perf_counter() - start) / args.steps
    peak = peak_tflops(device, args.peak_tflops)
    result = {
        "objective": args.objective, "model": args.model, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "size": [args.height, args.width], "batch": args.batch, "dtype": args.dtype,
        "grad_checkpointing": args.grad_checkpointing,
        "backbone_params_m": sum(p.numel() for p in backbone.parameters()) / 1e6,
        "step_s": seconds, "images_per_s": args.batch / seconds, "tflops_per_s": flops / seconds / 1e12,
        "mfu": flops / seconds / (peak * 1e12) if peak else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }  # fmt: skip
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

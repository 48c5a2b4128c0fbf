"""Memory per GPU and the data-loader rate one node needs, computed from the real model definitions.

Nothing here runs a GPU: the models are built on the meta device (shapes only), their parameters
counted and their FLOPs per image counted by FlopCounterMode on one forward + backward. The
activation cost per block comes from bench/bench_block_memory.py (bytes kept for backward per
token and per feature, under bf16 autocast: `--bytes-per-token-feature`; with checkpointing a
block keeps its fp32 input, 4 bytes per token and feature, and one block at a time is recomputed).

Per GPU, under FSDP over `--gpus` GPUs (student trains, teacher is an EMA copy without gradients):
  states       (fp32 weights + fp32 grads + Adam m, v = 16 B per trained parameter
                + 4 B per teacher parameter) / gpus
  working      two blocks' parameters gathered in bf16 at a time (the one computing, the prefetched)
  activations  per image: encoder blocks (student tokens: visible global tokens + local crops) and
               MAE decoder blocks (all tokens of both global crops; not checkpointed)
Not counted: the CUDA context and allocator slack (~1-3 GiB), the loss's pixel tensors, the
teacher's forward (no_grad: freed block by block), and for head training the dense head's own
decoder activations (its upsampling stages at up to full resolution; measure them on the GPU).

Data loader: images/s per GPU = MFU x peak / FLOPs per image (both stated); one node = x gpus.

    python bench/memory_plan.py [--gpus 8] [--batch 4] [--mfu 0.4] [--peak-tflops 989]
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from curation.training.backbone import SIZES

GIB = 2**30


def count_flops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def pretrain_plan(name: str, height: int, width: int) -> dict:
    from curation.training.config import PretrainConfig
    from curation.training.meta_arch import SSLMetaArch

    cfg = PretrainConfig.from_dict({"model": {"name": name}, "data": {"global_size": [height, width]}})
    with torch.device("meta"):
        model = SSLMetaArch(cfg)
    g = torch.empty(1, 2, 3, height, width, device="meta")
    lh, lw = cfg.data.local_size
    loc = torch.empty(1, cfg.data.local_crops, 3, lh, lw, device="meta")
    flops = count_flops(lambda: model(g, loc, 0.07)["loss"].backward())
    size, prefix = SIZES[name], 9
    grid = (height // 16) * (width // 16)
    visible = round(grid * (1 - cfg.mae.mask_ratio))
    student_tokens = 2 * (visible + prefix) + cfg.data.local_crops * ((lh // 16) * (lw // 16) + prefix)
    return {
        "trained": sum(p.numel() for p in model.student.parameters()),
        "ema": sum(p.numel() for p in model.teacher.parameters()),
        "block_params": sum(p.numel() for p in model.student["backbone"].blocks[0].parameters()),
        "flops": flops, "dim": size.dim, "depth": size.depth, "tokens": student_tokens,
        "decoder": (cfg.model.decoder_dim, cfg.model.decoder_depth, 2 * (grid + 1)),
    }  # fmt: skip


def head_plan(name: str, height: int, width: int) -> dict:
    from curation.training.heads.config import HeadTrainConfig
    from curation.training.heads.model import build_task_model

    cfg = HeadTrainConfig.from_dict({"task": "seg", "model": {"init": "random", "name": name},
                                     "data": {"input_size": [height, width]}})  # fmt: skip
    with torch.device("meta"):
        model = build_task_model(cfg)
    x = torch.empty(1, 3, height, width, device="meta")
    flops = count_flops(lambda: model(x).float().sum().backward())
    size = SIZES[name]
    return {
        "trained": sum(p.numel() for p in model.parameters()), "ema": 0,
        "block_params": sum(p.numel() for p in model.backbone.blocks[0].parameters()),
        "flops": flops, "dim": size.dim, "depth": size.depth,
        "tokens": (height // 16) * (width // 16) + 9, "decoder": (0, 0, 0),
    }  # fmt: skip


def per_gpu(plan: dict, gpus: int, batch: int, per_token_feature: float, checkpointing: bool) -> dict:
    states = (16 * plan["trained"] + 4 * plan["ema"]) / gpus
    working = 2 * plan["block_params"] * 2
    encoder_block = per_token_feature * plan["dim"] * plan["tokens"]
    if checkpointing:
        encoder = plan["depth"] * 4 * plan["dim"] * plan["tokens"] + encoder_block
    else:
        encoder = plan["depth"] * encoder_block
    dd, depth, tokens = plan["decoder"]
    decoder = depth * per_token_feature * dd * tokens
    activations = batch * (encoder + decoder)
    total = states + working + activations
    return {"states": states / GIB, "activations": activations / GIB, "total": total / GIB}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="sapiens2-0.4b,sapiens2-1b,sapiens2-5b")
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4, help="images per GPU per micro-step")
    ap.add_argument("--height", type=int, default=1024)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--bytes-per-token-feature", type=float, default=84.3, help="bench_block_memory.py")
    ap.add_argument("--mfu", type=float, default=0.4, help="assumed model FLOP utilisation")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="H100/H200 dense bf16")
    args = ap.parse_args()
    print(f"# {args.gpus} GPUs, FSDP, micro-batch {args.batch} images/GPU at {args.height}x{args.width}, "
          f"bf16 autocast; loader rate at MFU {args.mfu:.0%} of {args.peak_tflops:g} TFLOP/s")  # fmt: skip
    print("| objective | size | trained params (M) | states/GPU (GiB) | activations/GPU plain / ckpt "
          "(GiB) | total/GPU plain / ckpt (GiB) | TFLOP/image | img/s/GPU | img/s/node |")
    print("|---|---|---|---|---|---|---|---|---|")
    for objective, plan_fn in (("pretrain", pretrain_plan), ("head (seg)", head_plan)):
        for name in args.sizes.split(","):
            plan = plan_fn(name, args.height, args.width)
            plain, ckpt = (per_gpu(plan, args.gpus, args.batch, args.bytes_per_token_feature, c)
                           for c in (False, True))  # fmt: skip
            rate = args.mfu * args.peak_tflops * 1e12 / plan["flops"]
            print(f"| {objective} | {name} | {plan['trained'] / 1e6:.0f} | {plain['states']:.1f} | "
                  f"{plain['activations']:.1f} / {ckpt['activations']:.1f} | "
                  f"{plain['total']:.1f} / {ckpt['total']:.1f} | {plan['flops'] / 1e12:.1f} | {rate:.0f} | "
                  f"{rate * args.gpus:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

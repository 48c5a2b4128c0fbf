"""Forward+backward throughput of the Sapiens2 backbone against timm ViTs of the same width, depth, heads.

Same input tensor, same batch and resolution, same process and torch thread count, interleaved
rounds (each round times every model once, the order rotating between rounds, so that machine
noise hits every model alike); one warm-up fwd+bwd per model is excluded; the median round
counts. Two timm references, both with our width, depth, heads and patch size 16:
  * `timm-vit`: the plain ViT (LayerNorm, GELU MLP with timm's default mlp_ratio 4, learned
    absolute positions, 1 class token);
  * `timm-vit-matched`: the same ViT configured with our block's extra work (RMSNorm, QK-norm,
    SwiGLU with a 4x hidden, LayerScale, 8 registers), i.e. the same FLOPs minus RoPE.
FLOPs are counted with torch's FlopCounterMode on one fwd+bwd, so the FLOP-normalised ratio
(GFLOP/s) compares efficiency independently of how much arithmetic each block does: Sapiens2's
SwiGLU with a 4x hidden has 1.5x the FFN FLOPs of timm's GELU MLP 4x.

CPU:  python bench/bench_backbone.py                       (sapiens2-0.1b at 224x224, batch 8)
GPU:  python bench/bench_backbone.py --device cuda --dtype bf16 --model sapiens2-0.4b \
          --height 1024 --width 768 --batch 8 --peak-tflops 989   (prints MFU)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from curation.training.backbone import build_backbone


def timm_vit(dim: int, depth: int, heads: int, size: tuple[int, int], matched: bool) -> torch.nn.Module:
    from timm.layers import RmsNorm, SwiGLU
    from timm.models.vision_transformer import VisionTransformer

    kwargs = {
        "img_size": size,
        "patch_size": 16,
        "embed_dim": dim,
        "depth": depth,
        "num_heads": heads,
        "mlp_ratio": 4.0,
        "num_classes": 0,
    }
    if matched:
        kwargs.update(qk_norm=True, norm_layer=RmsNorm, mlp_layer=SwiGLU, init_values=1e-4, reg_tokens=8)
    return VisionTransformer(**kwargs)


def fwd_bwd(model, images, dtype):
    with torch.autocast(images.device.type, dtype=dtype, enabled=dtype != torch.float32):
        out = model(images)
        out = out["tokens"] if isinstance(out, dict) else out
        loss = out.float().pow(2).mean()
    loss.backward()


def count_flops(model, images, dtype) -> float:
    with FlopCounterMode(display=False) as counter:
        fwd_bwd(model, images, dtype)
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="sapiens2-0.1b")
    p.add_argument("--height", type=int, default=224)
    p.add_argument("--width", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=2, help="fwd+bwd per round and model")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument(
        "--peak-tflops", type=float, default=0.0, help="device peak for MFU (H100 SXM bf16 dense: 989)"
    )
    p.add_argument(
        "--no-timm", action="store_true", help="only our backbone (e.g. sizes too big for two copies)"
    )
    args = p.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the trainer does on CPU
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    size = (args.height, args.width)
    torch.manual_seed(0)
    ours = build_backbone(args.model)
    models = {"sapiens2": ours}
    if not args.no_timm:
        d, L, h = ours.dim, ours.depth, ours.num_heads
        models["timm-vit"] = timm_vit(d, L, h, size, matched=False)
        models["timm-vit-matched"] = timm_vit(d, L, h, size, matched=True)
    images = torch.randn(args.batch, 3, *size, device=device)
    flops, params = {}, {}
    for name, m in models.items():
        m.to(device).train()
        params[name] = sum(q.numel() for q in m.parameters())
        flops[name] = count_flops(m, images, dtype)
        fwd_bwd(m, images, dtype)  # warm-up
        m.zero_grad(set_to_none=True)

    times: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order
            m = models[name]
            sync(device)
            t0 = time.perf_counter()
            for _ in range(args.iters):
                fwd_bwd(m, images, dtype)
                m.zero_grad(set_to_none=True)
            sync(device)
            times[name].append((time.perf_counter() - t0) / args.iters)

    print(
        f"# {args.model} {size[0]}x{size[1]} batch {args.batch} {args.dtype} on {device} "
        f"({platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__})"
    )
    if not args.no_timm:
        print(
            "# timm references: VisionTransformer(patch_size=16, embed_dim, depth, num_heads as ours, "
            "mlp_ratio=4.0); timm-vit: LayerNorm + GELU MLP; timm-vit-matched: RmsNorm, qk_norm, "
            "SwiGLU (hidden 4x), init_values=1e-4, reg_tokens=8"
        )
    print(f"# {args.rounds} interleaved rounds x {args.iters} fwd+bwd, median round; warm-up excluded")
    print(
        f"{'model':<18} {'params(M)':>9} {'GFLOP/img':>9} {'img/s':>8} {'GFLOP/s':>8}"
        + ("   MFU" if args.peak_tflops else "")
    )
    rate = {}
    for name in models:
        sec = statistics.median(times[name])
        rate[name] = args.batch / sec
        gflop = flops[name] / args.batch / 1e9
        line = f"{name:<18} {params[name] / 1e6:9.1f} {gflop:9.2f} {rate[name]:8.2f} {flops[name] / sec / 1e9:8.1f}"
        if args.peak_tflops:
            line += f" {flops[name] / sec / (args.peak_tflops * 1e12):6.1%}"
        print(line)
    if not args.no_timm:
        for ref in ("timm-vit", "timm-vit-matched"):
            eff = (rate["sapiens2"] * flops["sapiens2"]) / (rate[ref] * flops[ref])
            per_round = sorted(b / a for a, b in zip(times["sapiens2"], times[ref]))
            print(
                f"ratio sapiens2 / {ref}: images/s {rate['sapiens2'] / rate[ref]:.2f} "
                f"(per-round range {per_round[0]:.2f}-{per_round[-1]:.2f}), "
                f"FLOP-normalised (GFLOP/s) {eff:.2f}"
            )


if __name__ == "__main__":
    main()

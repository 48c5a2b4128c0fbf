"""Activation memory of one transformer block, with and without activation checkpointing.

For each named size, one block (full multi-head attention, the larger kind) at the token count of
a 1024x768 image (3072 patch tokens + CLS + 8 registers), under bf16 autocast:
  * saved: bytes of the tensors autograd keeps for backward, counted once per storage through
    `saved_tensors_hooks` (what a block adds to the activation peak of a training step);
  * with checkpointing the block keeps only its input and the RoPE tables; the forward is run
    again during backward, one block at a time;
  * on CUDA also the measured peak (`max_memory_allocated`) of a forward+backward through
    `--blocks` blocks, minus the weights, with and without checkpointing.
Figures are per image: multiply by the per-GPU micro-batch. The counted bytes are the same on
any device for the same kernels; CPU and CUDA pick different attention kernels, so run it on the
target device for the final word.

A full-size bf16 block is slow on a CPU without bf16 matrix units, so `--scale S` counts at the
grid divided by S in each direction and at twice that, and extrapolates linearly in tokens (the
fused attention kernels keep O(tokens) for backward, no tokens x tokens matrix). The fit's fixed
part is autocast's bf16 copies of the block's weights, which autograd also keeps (under FSDP's
bf16 parameters they are the gathered parameters instead); the per-token part is activations.

CPU:  nice python bench/bench_block_memory.py                  (0.4b, 1b, 5b; --scale 4 by default)
GPU:  python bench/bench_block_memory.py --device cuda --blocks 4
"""

from __future__ import annotations

import argparse
import platform

import torch
from torch.utils.checkpoint import checkpoint

from curation.training.backbone import SIZES
from curation.training.layers import Block, Rope2D

MIB = 2**20


def saved_bytes(block: Block, x: torch.Tensor, rope, checkpointing: bool) -> int:
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
    with hooks, torch.autocast(x.device.type, dtype=torch.bfloat16):
        y = checkpoint(block, x, rope, use_reentrant=False) if checkpointing else block(x, rope)
    del y
    return sum(storages.values())


def cuda_peak(blocks: list[Block], x: torch.Tensor, rope, checkpointing: bool) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    h = x
    with torch.autocast("cuda", dtype=torch.bfloat16):
        for blk in blocks:
            h = checkpoint(blk, h, rope, use_reentrant=False) if checkpointing else blk(h, rope)
    h.float().sum().backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    for blk in blocks:
        blk.zero_grad(set_to_none=True)
    return peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="sapiens2-0.4b,sapiens2-1b,sapiens2-5b")
    ap.add_argument("--height", type=int, default=1024)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--blocks", type=int, default=2, help="CUDA peak: blocks in the measured stack")
    ap.add_argument("--scale", type=int, default=4, help="count at grid/scale and grid/(2 scale), extrapolate")
    args = ap.parse_args()
    device = torch.device(args.device)
    grid = (args.height // 16, args.width // 16)
    tokens = 1 + 8 + grid[0] * grid[1]
    print(f"# {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, {device}, "
          f"{args.height}x{args.width} -> {tokens} tokens, bf16 autocast, per image")  # fmt: skip
    head = ("| size | dim | plain: fixed (MiB) | plain: per token (KiB) | saved, plain (MiB) "
            "| saved, checkpointed (MiB) | ratio |")
    if device.type == "cuda":
        head += f" CUDA peak {args.blocks} blocks plain / ckpt (MiB) |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name in args.sizes.split(","):
        size = SIZES[name]
        torch.manual_seed(0)
        block = Block(size.dim, size.heads, size.heads).to(device)
        rope_table = Rope2D(size.dim // size.heads).to(device)
        counted = {}
        for g in ((grid[0] // (2 * args.scale), grid[1] // (2 * args.scale)),
                  (grid[0] // args.scale, grid[1] // args.scale)):  # fmt: skip
            n = 9 + g[0] * g[1]
            x = torch.randn(1, n, size.dim, device=device, requires_grad=True)
            rope = rope_table(*g, num_prefix=9)
            counted[n] = [saved_bytes(block, x, rope, checkpointing=c) for c in (False, True)]
        (n0, (p0, c0)), (n1, (p1, c1)) = sorted(counted.items())
        plain = p0 + (p1 - p0) / (n1 - n0) * (tokens - n0)
        ckpt = c0 + (c1 - c0) / (n1 - n0) * (tokens - n0)
        slope = (p1 - p0) / (n1 - n0)
        fixed = p0 - slope * n0
        row = (f"| {name} | {size.dim} | {fixed / MIB:.1f} | {slope / 1024:.1f} | {plain / MIB:.1f} | "
               f"{ckpt / MIB:.1f} | {plain / ckpt:.0f}x |")  # fmt: skip
        if device.type == "cuda":
            x = torch.randn(1, tokens, size.dim, device=device, requires_grad=True)
            rope = rope_table(*grid, num_prefix=9)
            stack = [block] + [Block(size.dim, size.heads, size.heads).to(device) for _ in range(args.blocks - 1)]
            peaks = [cuda_peak(stack, x, rope, c) / MIB for c in (False, True)]
            row += f" {peaks[0]:.0f} / {peaks[1]:.0f} |"
        print(row, flush=True)

if __name__ == "__main__":
    main()

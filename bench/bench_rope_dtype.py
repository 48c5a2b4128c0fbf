"""CPU cost of the released bf16 RoPE (the default) against our fp32 variant.

With `model.rope_dtype: bf16` (as released) the QK-norm and RoPE of q and k run as plain ops,
rounding through bfloat16 exactly as the release does; with `fp32` they run as one fused CPU
kernel (kernels/cpu.py `qk_norm_rope`). Everything else in the model is the same. This script
times both on the same weights and input, fp32 on CPU as the trainer runs there:

  * forward + backward of a mean-square loss on all output tokens (the student's step);
  * forward without autograd (the teacher's pass, and inference).

Rounds are interleaved (each times every variant once, the order rotating), one warm-up of each
variant is excluded, and the median round counts; the ratio is also given per round. CPU seconds
(this process) are printed beside the wall time, with the load average before and after.

    python bench/bench_rope_dtype.py                    (sapiens2-0.1b, 224x224, batch 8, 5 rounds)
    python bench/bench_rope_dtype.py --model sapiens2-tiny --size 64 --rounds 3   (quick)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from curation.training.backbone import build_backbone

VARIANTS = {"bf16 (released, plain ops)": "bf16", "fp32 (fused CPU kernel)": "fp32"}


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="sapiens2-0.1b")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the trainer does on CPU
    load_before = os.getloadavg()

    torch.manual_seed(0)
    models = {name: build_backbone(args.model, rope_dtype=dtype) for name, dtype in VARIANTS.items()}
    reference = next(iter(models.values())).state_dict()
    for model in models.values():
        model.load_state_dict(reference)  # the same weights (the RoPE periods are in each one's dtype)
    images = torch.randn(args.batch, 3, args.size, args.size)

    def step(model):
        loss = model(images)["tokens"].pow(2).mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    def inference(model):
        with torch.no_grad():
            model(images)

    times: dict[str, dict[str, list[tuple[float, float]]]] = {
        kind: {name: [] for name in models} for kind in ("fwd+bwd", "fwd (no grad)")
    }
    names = list(models)
    for name in names:  # warm-up
        step(models[name])
        inference(models[name])
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            times["fwd+bwd"][name].append(timed(lambda m=models[name]: step(m)))
            times["fwd (no grad)"][name].append(timed(lambda m=models[name]: inference(m)))

    print(
        f"{platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, {args.threads} threads, "
        f"{args.model} {args.size}x{args.size} batch {args.batch}, {args.rounds} rounds, fp32 on CPU"
    )
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    base, other = names
    for kind, per in times.items():
        print(f"\n{kind}: median wall s, median CPU s, images/s")
        for name in names:
            wall = statistics.median(w for w, _ in per[name])
            cpu = statistics.median(c for _, c in per[name])
            print(f"  {name:28s} {wall:8.3f} {cpu:8.3f} {args.batch / wall:8.2f}")
        for i, what in enumerate(("wall", "CPU")):  # CPU time is the steadier on a busy machine
            ratios = [b[i] / o[i] for b, o in zip(per[base], per[other], strict=True)]
            print(
                f"  {what} {base} / {other}: {statistics.median(ratios):.3f} "
                f"(per round {min(ratios):.3f}-{max(ratios):.3f})"
            )


if __name__ == "__main__":
    main()

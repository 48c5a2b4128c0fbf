"""The runner's plan for the per-image job on one node, from the code (no Ray started, no GPU needed):
which units run where, how many actors each, what they hold, and the images/s the pools are
sized to pass.

    python bench/node_plan.py [--cpus 96] [--gpus 8] [--set text.num_gpus=0 ...]

The per-actor times are `curation/models/costs.py`'s (host share measured on a CPU; a GPU node's
own measurement replaces them with CURATE_STAGE_COSTS=file.json) and `Resources.cost` for CPU
stages. Printed figures are derived, not measured on such a node.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DAG = ["decode", "detect", "headpose", "embed", "quality", "text", "filter"]


def plan(cpus: float, gpus: float, overrides: list[str]) -> list[dict]:
    from curation.models.costs import gpu_actor_costs
    from curation.runner import placement
    from curation.runner.fusion import fusable_groups
    from curation.stages.dag import get_stage, load_config

    cfg = load_config(None, overrides)
    saved = placement.cluster_totals
    placement.cluster_totals = lambda: (cpus, gpus)
    try:
        units = fusable_groups([get_stage(n)(cfg) for n in DAG], gpus, cfg.run.fuse_cpu_stages)
        placed = placement.place(units)
    finally:
        placement.cluster_totals = saved
    costs = gpu_actor_costs()
    rows = []
    for u in units:
        p, r = placed[u.name], u.effective_resources()
        on_gpu = p.num_gpus > 0
        seconds = costs[u.name].seconds if on_gpu and u.name in costs else (r.cost or 0.0) / p.threads
        rows.append({"unit": u.name, "kind": "actor" if u.stateful else "task", "device": "gpu" if on_gpu else "cpu",
                     "actors": p.pool_max, "num_cpus": p.num_cpus, "num_gpus": p.num_gpus, "batch": r.batch_size,
                     "actor_s_per_img": seconds,
                     "img_per_s": p.pool_max / seconds if u.stateful and seconds else None})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpus", type=float, default=96.0)
    ap.add_argument("--gpus", type=float, default=8.0)
    ap.add_argument("--set", nargs="*", default=[], help="config overrides, as `curate run --set`")
    args = ap.parse_args()
    rows = plan(args.cpus, args.gpus, args.set)
    print(f"node: {args.cpus:g} CPUs, {args.gpus:g} GPUs; overrides: {' '.join(args.set) or 'none'}\n")
    print("| unit | runs as | device | actors | CPU each | GPU each | batch | actor s/img | pool img/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        rate = f"{r['img_per_s']:.1f}" if r["img_per_s"] else "-"
        actors = r["actors"] if r["kind"] == "actor" else "-"
        print(f"| {r['unit']} | {r['kind']} | {r['device']} | {actors} | {r['num_cpus']:g} | {r['num_gpus']:g} "
              f"| {r['batch']} | {r['actor_s_per_img']:.4f} | {rate} |")
    actors = [r for r in rows if r["kind"] == "actor"]
    held_gpu = sum(r["actors"] * r["num_gpus"] for r in actors)
    held_cpu = sum(r["actors"] * r["num_cpus"] for r in actors)
    bound = min(actors, key=lambda r: r["img_per_s"] or float("inf"))
    print(f"\nactors hold {held_cpu:.1f} of {args.cpus:g} CPUs and {held_gpu:.2f} of {args.gpus:g} GPUs; "
          f"the slowest pool is {bound['unit']} at {bound['img_per_s']:.1f} img/s (every image through every "
          f"stage; an early filter leaves the stages after it with fewer)")


if __name__ == "__main__":
    main()

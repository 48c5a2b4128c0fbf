"""Balance of `cluster` + `sample` at 1, 2 and 3 levels, on planted mixtures with known
components, next to uniform random sampling and a size-aware oracle; wall and CPU seconds of
fit + assignment + sampling.

    python bench/bench_sampling_balance.py                   # 200k x 256, two-level and flat data
    python bench/bench_sampling_balance.py --data two-level --scale 1m
    python bench/bench_sampling_balance.py --threads 1 --upper-capacity 0 --precision float32

Fit options default to the cluster stage's (ClusterConfig): --precision (bfloat16 products where
fast), --fit-points-per-centroid (Lloyd subsample), --upper-capacity (capped levels 2+).

Data (curation.clustering.synthetic): unit vectors from 500 Gaussian components with power-law
sizes (largest/smallest = 200); "two-level" draws the component centres around 20 group centres,
"flat" draws them uniformly on the sphere. The hierarchy is fitted once with 3 levels; levels are
fitted bottom-up from one random stream, so its first 1 or 2 levels are exactly what a 1- or
2-level fit gives, and a depth's time is the sum of its levels' fit times plus one assignment
pass over every row (as the stage's map does) plus sampling.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import faiss
import numpy as np
import torch

from curation.clustering import dense_ops, faiss_ops
from curation.clustering.balanced_sampling import hierarchical_sample
from curation.clustering.hierarchical_kmeans import Hierarchy, Level, hierarchical_kmeans
from curation.clustering.synthetic import Mixture, balance, make_mixture, oracle_counts, uniform_counts
from curation.stages.cluster import ClusterConfig

SCALES = {  # rows, dim, k per level, resampling steps, sample sizes, target
    "200k": (200_000, 256, [2000, 200, 20], [10, 10, 10], [10, 5, 3], 20_000),
    # 1M: level-1 resampling steps each cost a full pass over 1M x 512 against 10k centroids
    # (~1e13 flop); the recipe's own large config runs one such step
    "1m": (1_000_000, 512, [10_000, 1000, 100], [1, 10, 10], [10, 5, 3], 100_000),
}
# facebookresearch/ssl-data-curation on the 200k two-level data recipe, run once on this machine
# (3 levels: 931 s); normalised entropy per depth. Not re-run here: it takes a quarter-hour.
REFERENCE = {1: 0.936, 2: 0.918, 3: 0.914}


def row(name: str, b: dict[str, float], extra: str = "") -> str:
    return (f"| {name} | {b['entropy']:.3f} | {b['max_min']:.1f} | {100 * b['covered']:.1f}% | {extra}")


def run(data: str, scale: str, seed: int, precision: str, fit_points_per_centroid: int,
        upper_capacity: float) -> None:
    n, dim, ks, steps, sizes, target = SCALES[scale]
    m = Mixture(n=n, dim=dim, n_groups=20 if data == "two-level" else 0)
    t = time.perf_counter()
    x, component, _ = make_mixture(m, seed=seed)
    print(f"\n## {data} data, {n:,d} x {dim}, {m.n_components} components (largest/smallest "
          f"{m.size_ratio:.0f}), target {target:,d}; generated in {time.perf_counter() - t:.1f} s", flush=True)
    levels = [Level(k, r, s) for k, r, s in zip(ks, steps, sizes)]
    t0, c0 = time.perf_counter(), time.process_time()
    h = hierarchical_kmeans(x, levels, n_iter=20, seed=seed, precision=precision,
                            fit_points_per_centroid=fit_points_per_centroid, upper_capacity=upper_capacity)
    fit_wall, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
    level_wall = h.stats["seconds_per_level"]
    print(f"fit {[(lv.k, lv.n_resampling_steps, lv.sample_size) for lv in levels]}, precision "
          f"{dense_ops.resolve(precision)}, Lloyd on <= {fit_points_per_centroid} points per centroid, "
          f"upper capacity {upper_capacity}: "
          f"{fit_wall:.1f} s wall, "
          f"{fit_cpu:.1f} s CPU; per level {level_wall} s wall", flush=True)
    # assignment of every row, as the stage's map_batches does: nearest level-1 centroid, then parents
    t1, c1 = time.perf_counter(), time.process_time()
    level1, _ = dense_ops.nearest_rows(x, h.centroids[0], precision, normalize=True)
    labels = Hierarchy(h.centroids, h.parents, level1, np.zeros(0)).lift(level1)
    assign_wall, assign_cpu = time.perf_counter() - t1, time.process_time() - c1
    print("| selection | entropy H/log C | max/min | components covered | time |")
    print("|---|---|---|---|---|")
    print(row("uniform random", balance(component, uniform_counts(n, target, seed), m.n_components)))
    print(row("size-aware oracle (capping on true components)",
              balance(component, oracle_counts(component, target, seed), m.n_components)))
    for depth in range(1, len(levels) + 1):
        t2, c2 = time.perf_counter(), time.process_time()
        counts = hierarchical_sample(labels[:, :depth], target, strategy="random", seed=seed)
        sample_wall, sample_cpu = time.perf_counter() - t2, time.process_time() - c2
        wall = sum(level_wall[:depth]) + assign_wall + sample_wall
        ref = f" (reference {REFERENCE[depth]:.3f})" if data == "two-level" and scale == "200k" else ""
        print(row(f"ours, {depth} level{'s' if depth > 1 else ''}{ref}",
                  balance(component, counts, m.n_components),
                  f"{wall:.1f} s wall (fit {sum(level_wall[:depth]):.1f} + assign {assign_wall:.1f} + "
                  f"sample {sample_wall:.2f})"), flush=True)
    print(f"3 levels: fit + assign + sample {fit_wall + assign_wall + sample_wall:.1f} s wall, "
          f"{fit_cpu + assign_cpu + sample_cpu:.1f} s CPU; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", choices=["two-level", "flat", "both"], default="both")
    ap.add_argument("--scale", choices=sorted(SCALES), default="200k")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", choices=dense_ops.PRECISIONS, default="auto",
                    help="distance products of the fit and the assignment (cluster.precision)")
    ap.add_argument("--fit-points-per-centroid", type=int, default=ClusterConfig.fit_points_per_centroid)
    ap.add_argument("--upper-capacity", type=float, default=ClusterConfig.upper_capacity,
                    help="levels 2+: at most this x the mean children per cluster (0: plain nearest)")
    ap.add_argument("--threads", type=int, default=0, help="torch and faiss threads (0: their default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, faiss GPU: {faiss_ops.use_gpu()}, "
          f"bfloat16 fast: {dense_ops.fast_bfloat16()}, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    for data in (["two-level", "flat"] if args.data == "both" else [args.data]):
        run(data, args.scale, args.seed, args.precision, args.fit_points_per_centroid, args.upper_capacity)


if __name__ == "__main__":
    main()

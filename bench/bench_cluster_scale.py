"""Scale of the `cluster` + `sample` algorithms on one machine: hierarchical k-means with
resampling (3 levels) and balanced sampling of N x 512 float16 embeddings (default 1M), run
through the modules the stages use (curation.clustering.*). Prints seconds per phase, peak RSS
and, as a sanity check, the balance of the sample over the planted mixture components.

    python bench/bench_cluster_scale.py                      # 1M x 512, k = 1000/300/100
    python bench/bench_cluster_scale.py --n 200000 --k 500 50 10
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import numpy as np

from curation.clustering import faiss_ops
from curation.clustering.balanced_sampling import hierarchical_sample
from curation.clustering.hierarchical_kmeans import Level, hierarchical_kmeans
from curation.clustering.synthetic import balance


def mixture(n: int, dim: int, n_components: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float16 points around random unit centres, component sizes ~ rank^-1.2 (a power law)."""
    rng = np.random.default_rng(seed)
    weights = np.arange(1, n_components + 1) ** -1.2
    component = rng.choice(n_components, size=n, p=weights / weights.sum())
    centres = rng.standard_normal((n_components, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.empty((n, dim), dtype=np.float16)
    for start in range(0, n, 100_000):  # chunked: never a float32 copy of the whole set
        c = component[start:start + 100_000]
        noise = rng.standard_normal((len(c), dim), dtype=np.float32) * (0.8 / np.sqrt(dim))
        x[start:start + len(c)] = centres[c] + noise
    return x, component


def entropy(component: np.ndarray, counts: np.ndarray, n_components: int) -> float:
    return balance(component, counts, n_components)["entropy"]


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--components", type=int, default=100)
    ap.add_argument("--k", type=int, nargs="+", default=[1000, 300, 100])
    ap.add_argument("--resampling-steps", type=int, nargs="+", default=[1, 10, 10])
    ap.add_argument("--sample-size", type=int, nargs="+", default=[16, 2, 2])
    ap.add_argument("--n-iter", type=int, default=10)
    ap.add_argument("--fraction", type=float, default=0.1)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, faiss GPU: {faiss_ops.use_gpu()}; "
          f"load average {os.getloadavg()[0]:.1f}")
    t = time.perf_counter()
    x, component = mixture(args.n, args.dim, args.components)
    print(f"data: {args.n:,d} x {args.dim} float16 ({x.nbytes / 2**30:.2f} GiB), {args.components} power-law "
          f"components, generated in {time.perf_counter() - t:.1f} s", flush=True)
    levels = [Level(k, r, s) for k, r, s in zip(args.k, args.resampling_steps, args.sample_size)]
    t0, c0 = time.perf_counter(), time.process_time()
    h = hierarchical_kmeans(x, levels, n_iter=args.n_iter, seed=0)
    fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"hierarchical k-means {[(lv.k, lv.n_resampling_steps, lv.sample_size) for lv in levels]}, "
          f"n_iter {args.n_iter}: {fit_s:.1f} s wall, {fit_cpu:.1f} s CPU; per level {h.stats['seconds_per_level']} s; "
          f"largest level-1 cluster {h.stats['level1_sizes_max']:,d}, empty {h.stats['level1_empty']}", flush=True)
    target = int(args.n * args.fraction)
    t1 = time.perf_counter()
    labels = h.lift(h.labels)
    counts = hierarchical_sample(labels, target, strategy="random", seed=0)
    sample_s = time.perf_counter() - t1
    uniform = np.zeros(args.n)
    uniform[np.random.default_rng(0).choice(args.n, target, replace=False)] = 1
    print(f"balanced sampling to {target:,d}: {sample_s:.2f} s; normalised entropy over components "
          f"{entropy(component, counts, args.components):.3f} "
          f"(uniform random {entropy(component, uniform, args.components):.3f})")
    print(f"total {fit_s + sample_s:.1f} s; peak RSS {peak_rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()

"""Scale of perceptual-hash near-duplicate grouping: 1M and 10M synthetic 64-bit hashes with
planted near-duplicates, through the same algorithm the `phash` stage distributes
(curation.dedup.near_duplicates: unique -> multi-index banding -> verified pairs -> components).

Prints seconds (wall, min over repeats, and CPU), peak RSS, the planted-pair recall and the
10M/1M time ratio (target <= 12: near-linear). A benchmark prints figures; it asserts nothing.

    python bench/bench_phash_scale.py                # 1M and 10M, 3 repeats
    python bench/bench_phash_scale.py --sizes 100000 1000000 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import numpy as np

from curation.dedup.hamming_bands import choose_num_blocks, make_layout
from curation.dedup.near_duplicates import group_near_duplicates


def planted(n: int, dup_fraction: float, max_distance: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n hashes: uniform ones, then copies of random earlier rows with 1..max_distance bits flipped."""
    rng = np.random.default_rng(seed)
    n_dup = int(n * dup_fraction)
    base = rng.integers(0, np.iinfo(np.uint64).max, n - n_dup, dtype=np.uint64, endpoint=True)
    source = rng.integers(0, n - n_dup, n_dup)
    flips = rng.integers(1, max_distance + 1, n_dup)
    mask = np.zeros(n_dup, dtype=np.uint64)
    for k in range(max_distance):  # bit positions may repeat: some copies get fewer flips
        bit = rng.integers(0, 64, n_dup).astype(np.uint64)
        mask |= np.where(k < flips, np.uint64(1) << bit, np.uint64(0))
    return np.concatenate([base, base[source] ^ mask]), source, np.arange(n - n_dup, n)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--max-distance", type=int, default=4)
    ap.add_argument("--dup-fraction", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}; "
          f"load average {os.getloadavg()[0]:.1f}")
    walls = {}
    for n in args.sizes:
        hashes, source, copies = planted(n, args.dup_fraction, args.max_distance)
        blocks = choose_num_blocks(n, args.max_distance)
        tables = len(make_layout(args.max_distance, blocks).tables)
        best_wall, best_cpu = float("inf"), float("inf")
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            labels = group_near_duplicates(hashes, args.max_distance)
            best_wall = min(best_wall, time.perf_counter() - t0)
            best_cpu = min(best_cpu, time.process_time() - c0)
        recall = float(np.mean(labels[copies] == labels[source]))
        n_groups = len(np.unique(labels))
        walls[n] = best_wall
        print(f"n={n:>11,d}  blocks={blocks} tables={tables}  wall {best_wall:7.2f} s  cpu {best_cpu:7.2f} s  "
              f"({best_wall / n * 1e9:6.0f} ns/hash)  planted recall {recall:.4f}  groups {n_groups:,d}  "
              f"peak RSS {peak_rss_mib():,.0f} MiB", flush=True)
    sizes = sorted(walls)
    if len(sizes) >= 2:
        a, b = sizes[0], sizes[-1]
        print(f"time ratio {b // a}x rows: {walls[b] / walls[a]:.2f} (target <= 12)")


if __name__ == "__main__":
    main()

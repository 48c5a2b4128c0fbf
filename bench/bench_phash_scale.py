"""Scale of perceptual-hash near-duplicate grouping: 1M and 10M synthetic 64-bit hashes with
planted near-duplicates, through the same algorithm the `phash` stage distributes
(curation.dedup.near_duplicates: multi-index banding, regrouped by lead block into in-cache
chunks -> verified pairs -> components).

Sizes run interleaved in one process (repeat 1: 1M, 10M; repeat 2: 1M, 10M; ...). Prints every
run with the load average around it (the build machine is shared), then per size the best wall
and CPU seconds, the planted-pair recall and peak numpy memory, and the 10M/1M ratio of the best
times (target <= 12: near-linear). A benchmark prints figures; it asserts nothing.

    python bench/bench_phash_scale.py                # 1M and 10M, 3 repeats
    python bench/bench_phash_scale.py --sizes 100000 1000000 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
import tracemalloc

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


def load() -> float:
    return os.getloadavg()[0]


def timed(hashes: np.ndarray, max_distance: int) -> tuple[float, float, np.ndarray]:
    t0, c0 = time.perf_counter(), time.process_time()
    labels = group_near_duplicates(hashes, max_distance)
    return time.perf_counter() - t0, time.process_time() - c0, labels


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--max-distance", type=int, default=4)
    ap.add_argument("--dup-fraction", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-memory", action="store_true", help="skip the tracemalloc run per size")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}; "
          f"load average {load():.1f}")
    data = {n: planted(n, args.dup_fraction, args.max_distance) for n in args.sizes}
    walls: dict[int, list[float]] = {n: [] for n in args.sizes}
    cpus: dict[int, list[float]] = {n: [] for n in args.sizes}
    loads: list[float] = []
    labels = {}
    # sizes interleaved within each repeat, so that a burst of load on this shared machine
    # lands on both sizes rather than on one of them
    for rep in range(args.repeats):
        for n in args.sizes:
            before = load()
            wall, cpu, labels[n] = timed(data[n][0], args.max_distance)
            walls[n].append(wall)
            cpus[n].append(cpu)
            loads += [before, load()]
            print(f"  repeat {rep + 1} n={n:>11,d}  wall {wall:7.2f} s  cpu {cpu:7.2f} s  "
                  f"load average {before:.1f} -> {load():.1f}", flush=True)
    for n in args.sizes:
        hashes, source, copies = data[n]
        recall = float(np.mean(labels[n][copies] == labels[n][source]))
        blocks = choose_num_blocks(n, args.max_distance)
        tables = len(make_layout(args.max_distance, blocks).tables)
        peak = ""
        if not args.no_memory:  # numpy reports its buffers to tracemalloc; untimed run
            tracemalloc.start()
            group_near_duplicates(hashes, args.max_distance)
            peak = f"  peak numpy memory {tracemalloc.get_traced_memory()[1] / 2**20:,.0f} MiB"
            tracemalloc.stop()
        print(f"n={n:>11,d}  blocks={blocks} tables={tables}  best wall {min(walls[n]):7.2f} s "
              f"(median {np.median(walls[n]):.2f})  best cpu {min(cpus[n]):7.2f} s  "
              f"({min(walls[n]) / n * 1e9:6.0f} ns/hash)  planted recall {recall:.4f}  "
              f"groups {len(np.unique(labels[n])):,d}{peak}", flush=True)
    print(f"process peak RSS {peak_rss_mib():,.0f} MiB; load average during runs "
          f"{min(loads):.1f}-{max(loads):.1f}")
    if len(args.sizes) >= 2:
        a, b = min(args.sizes), max(args.sizes)
        print(f"time ratio {b // a}x rows: wall {min(walls[b]) / min(walls[a]):.2f} (best of "
              f"{args.repeats}), cpu {min(cpus[b]) / min(cpus[a]):.2f} (target <= 12)")


if __name__ == "__main__":
    main()

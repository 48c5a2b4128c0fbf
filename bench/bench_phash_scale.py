"""Scale of perceptual-hash near-duplicate grouping: 1M and 10M synthetic 64-bit hashes with
planted near-duplicates (and 1% byte-identical copies), through two paths:

  single  curation.dedup.near_duplicates.group_near_duplicates: the one-machine reference
          (banding regrouped by lead block into in-cache chunks -> verified pairs -> components).
  stage   what the `phash` stage runs (bench/phash_stage_path.py): band_rows per batch -> rows
          split by `_part` (an in-process stand-in for Ray's groupby shuffle) -> partition_edges
          per partition -> resolve, with the stage's own layout and partition count.

Sizes run interleaved in one process (repeat 1: 1M, 10M; repeat 2: 1M, 10M; ...). Prints every
run with the load average around it (the build machine is shared), then per size the best wall
and CPU seconds, the planted-pair recall and peak numpy memory, and the 10M/1M ratio of the best
times (target <= 12: near-linear). A benchmark prints figures; it asserts nothing.

    python bench/bench_phash_scale.py                # both paths, 1M and 10M, 3 repeats
    python bench/bench_phash_scale.py --path stage --sizes 1000000 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
import tracemalloc

import numpy as np
from phash_stage_path import group_labels, hashed_table, run_stage_path, same_groups

from curation.dedup.hamming_bands import choose_num_blocks, make_layout
from curation.dedup.near_duplicates import group_near_duplicates
from curation.stages.phash import PhashConfig


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


def with_exact_copies(n: int, exact_fraction: float, dup_fraction: float, max_distance: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`planted` on n - n_exact rows, then n_exact byte-identical copies of random rows (same
    phash, same sha1). Returns hashes, near (source, copy) and exact (source, copy) rows, and
    the row each row's bytes come from."""
    n_exact = int(n * exact_fraction)
    hashes, source, copies = planted(n - n_exact, dup_fraction, max_distance)
    exact_source = np.random.default_rng(1).integers(0, n - n_exact, n_exact)
    content_of = np.r_[np.arange(n - n_exact), exact_source]
    return np.r_[hashes, hashes[exact_source]], source, copies, exact_source, content_of


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load() -> float:
    return os.getloadavg()[0]


def timed(hashes: np.ndarray, max_distance: int) -> tuple[float, float, np.ndarray]:
    t0, c0 = time.perf_counter(), time.process_time()
    labels = group_near_duplicates(hashes, max_distance)
    return time.perf_counter() - t0, time.process_time() - c0, labels


def run_single(args, data, sizes) -> dict[int, np.ndarray]:
    walls: dict[int, list[float]] = {n: [] for n in sizes}
    cpus: dict[int, list[float]] = {n: [] for n in sizes}
    loads: list[float] = []
    labels = {}
    # sizes interleaved within each repeat, so that a burst of load on this shared machine
    # lands on both sizes rather than on one of them
    for rep in range(args.repeats):
        for n in sizes:
            before = load()
            wall, cpu, labels[n] = timed(data[n][0], args.max_distance)
            walls[n].append(wall)
            cpus[n].append(cpu)
            loads += [before, load()]
            print(f"  [single] repeat {rep + 1} n={n:>11,d}  wall {wall:7.2f} s  cpu {cpu:7.2f} s  "
                  f"load average {before:.1f} -> {load():.1f}", flush=True)
    for n in sizes:
        hashes, source, copies = data[n][:3]
        recall = float(np.mean(labels[n][copies] == labels[n][source]))
        blocks = choose_num_blocks(n, args.max_distance)
        tables = len(make_layout(args.max_distance, blocks).tables)
        peak = ""
        if not args.no_memory:  # numpy reports its buffers to tracemalloc; untimed run
            tracemalloc.start()
            group_near_duplicates(hashes, args.max_distance)
            peak = f"  peak numpy memory {tracemalloc.get_traced_memory()[1] / 2**20:,.0f} MiB"
            tracemalloc.stop()
        print(f"[single] n={n:>11,d}  blocks={blocks} tables={tables}  best wall {min(walls[n]):7.2f} s "
              f"(median {np.median(walls[n]):.2f})  best cpu {min(cpus[n]):7.2f} s  "
              f"({min(walls[n]) / n * 1e9:6.0f} ns/hash)  planted recall {recall:.4f}  "
              f"groups {len(np.unique(labels[n])):,d}{peak}", flush=True)
    print(f"[single] load average during runs {min(loads):.1f}-{max(loads):.1f}")
    if len(sizes) >= 2:
        a, b = min(sizes), max(sizes)
        print(f"[single] time ratio {b // a}x rows: wall {min(walls[b]) / min(walls[a]):.2f} (best of "
              f"{args.repeats}), cpu {min(cpus[b]) / min(cpus[a]):.2f} (target <= 12)")
    return labels


def run_stage(args, data, sizes, single_labels) -> None:
    cfg = PhashConfig(max_distance=args.max_distance)
    best: dict[int, object] = {}
    for rep in range(args.repeats):
        for n in sizes:
            hashes, source, copies, exact_source, content_of = data[n]
            table = hashed_table(hashes, content_of)
            before = load()
            run = run_stage_path(table, cfg, args.num_cpus, args.batch_rows, args.spill_dir)
            labels = group_labels(n, run.lookup)
            exact_rows = np.arange(n - len(exact_source), n)
            recall = float(np.mean(labels[copies] == labels[source]))
            exact_recall = float(np.mean(labels[exact_rows] == labels[exact_source]))
            phases = "  ".join(f"{k} {v:.2f} s (cpu {run.cpu_seconds[k]:.2f})" for k, v in run.seconds.items())
            agree = (f"  groups identical to single path: {same_groups(labels, single_labels[n])}"
                     if n in single_labels else "")
            print(f"  [stage] repeat {rep + 1} n={n:>11,d}  blocks={run.blocks} tables={run.tables} partitions="
                  f"{run.partitions} band rows {run.band_rows:,d} (largest partition {run.max_partition_rows:,d})\n"
                  f"      {phases}\n      stage functions {run.stage_seconds():.2f} s "
                  f"(cpu {run.stage_seconds(True):.2f}), "
                  f"with stand-in {sum(run.seconds.values()):.2f} s; {run.edges:,d} star edges, "
                  f"{run.lookup.num_rows:,d} duplicates; planted recall near {recall:.4f} exact {exact_recall:.4f}"
                  f"{agree}; peak RSS so far {peak_rss_mib():,.0f} MiB; load average {before:.1f} -> {load():.1f}",
                  flush=True)
            if n not in best or run.stage_seconds() < best[n].stage_seconds():
                best[n] = run
            del table, run
    if len(sizes) >= 2:
        a, b = min(sizes), max(sizes)
        wall = {k: best[b].seconds[k] / max(best[a].seconds[k], 1e-9) for k in best[a].seconds}
        cpu = {k: best[b].cpu_seconds[k] / max(best[a].cpu_seconds[k], 1e-9) for k in best[a].seconds}
        print(f"[stage] time ratio {b // a}x rows (best of {args.repeats}): stage functions wall "
              f"{best[b].stage_seconds() / best[a].stage_seconds():.2f}, cpu "
              f"{best[b].stage_seconds(True) / best[a].stage_seconds(True):.2f} (target <= 12); with stand-in wall "
              f"{sum(best[b].seconds.values()) / sum(best[a].seconds.values()):.2f}\n[stage] by phase, wall (cpu): "
              + ", ".join(f"{k} {wall[k]:.1f} ({cpu[k]:.1f})" for k in wall))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--path", choices=("stage", "single", "both"), default="both")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--max-distance", type=int, default=4)
    ap.add_argument("--dup-fraction", type=float, default=0.1)
    ap.add_argument("--exact-fraction", type=float, default=0.01, help="byte-identical copies")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--num-cpus", type=int, default=2, help="ctx.num_cpus for the stage's partition count")
    ap.add_argument("--batch-rows", type=int, default=262_144, help="hashed rows per band_rows call")
    ap.add_argument("--spill-dir", default=None, help="where the stand-in shuffle writes partitions")
    ap.add_argument("--no-memory", action="store_true", help="skip the tracemalloc run per size")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}; "
          f"load average {os.getloadavg()}")
    data = {n: with_exact_copies(n, args.exact_fraction, args.dup_fraction, args.max_distance) for n in args.sizes}
    single = run_single(args, data, args.sizes) if args.path in ("single", "both") else {}
    if args.path in ("stage", "both"):
        print("[stage] Ray's groupby shuffle is replaced by an in-process stand-in: band batches sorted by "
              "_part into one Arrow IPC file per partition, read back whole (timed apart as 'stand-in')")
        run_stage(args, data, args.sizes, single)
    print(f"process peak RSS {peak_rss_mib():,.0f} MiB; load average {os.getloadavg()}")


if __name__ == "__main__":
    main()

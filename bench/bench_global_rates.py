"""The per-unit rates docs/global_stages.md turns into time per 1B rows, measured (< 3 min):

  pHash        ms per image at 1024x768 / 2048x1536 / 4000x3000 (a real photo upscaled, JPEG
               q90), DCT-scaled decode (the stage's) vs full decode; one core.
  phash stage  band_rows ns per band row emitted, partition_edges ns per band row grouped (one
               partition of the stage's own size), resolve µs per duplicate row; 1M planted
               hashes through bench/phash_stage_path.py (the stage's functions, no Ray).
  faiss        flat nearest-centroid search (the assign step of semdedup and cluster): GFLOP/s
               at 1 and 2 threads, counting 2 x D flops per (query, centroid).
  semdedup     similar_groups (faiss range search + components) within one 10k x 512 cluster,
               seconds at 1 and 2 threads.

    python bench/bench_global_rates.py
    python bench/bench_global_rates.py --only faiss semdedup
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import time

import faiss
import numpy as np
from bench_phash_scale import with_exact_copies
from phash_stage_path import hashed_table, run_stage_path
from PIL import Image

from curation.clustering import faiss_ops
from curation.dedup.perceptual_hash import phash_uint64
from curation.dedup.semantic import similar_groups
from curation.stages.phash import PhashConfig

SIZES = ((1024, 768), (2048, 1536), (4000, 3000))


def best_of(fn, repeats: int) -> float:
    """Best process CPU seconds of `repeats` calls (one core: CPU time is what a worker pays)."""
    times = []
    for _ in range(repeats):
        c0 = time.process_time()
        fn()
        times.append(time.process_time() - c0)
    return min(times)


def best_wall(fn, repeats: int) -> float:
    """Best wall seconds (multi-threaded faiss: CPU time would add the threads up)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def photo_jpeg(width: int, height: int) -> bytes:
    import skimage.data

    im = Image.fromarray(skimage.data.astronaut()).resize((width, height), Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def phash_rates(repeats: int) -> None:
    for w, h in SIZES:
        data = photo_jpeg(w, h)
        scaled = best_of(lambda data=data: phash_uint64(data), repeats)
        full = best_of(lambda data=data: phash_uint64(data, None), max(2, repeats // 2))
        print(f"pHash {w}x{h} JPEG ({len(data) / 1e6:.1f} MB): DCT-scaled decode {scaled * 1e3:6.1f} ms, "
              f"full decode {full * 1e3:6.1f} ms per image (best CPU of {repeats})", flush=True)


def stage_rates(n: int) -> None:
    hashes, _, _, _, content_of = with_exact_copies(n, 0.01, 0.1, 4)
    run = run_stage_path(hashed_table(hashes, content_of), PhashConfig(), num_cpus=2, batch_rows=262_144)
    cpu = run.cpu_seconds
    print(f"phash stage, {n:,d} hashes -> {run.band_rows:,d} band rows in {run.partitions} partitions "
          f"(largest {run.max_partition_rows:,d}), {run.lookup.num_rows:,d} duplicates (CPU time):\n"
          f"  band_rows emit        {cpu['band'] / run.band_rows * 1e9:6.0f} ns per band row\n"
          f"  partition_edges group {cpu['partition_edges'] / run.band_rows * 1e9:6.0f} ns per band row\n"
          f"  resolve               {cpu['resolve'] / max(1, run.lookup.num_rows) * 1e6:6.2f} µs per duplicate row\n"
          f"  per image: {(cpu['band'] + cpu['partition_edges']) / n * 1e6:.1f} µs emit + group, plus "
          f"{cpu['resolve'] / n * 1e6:.2f} µs resolve at {run.lookup.num_rows / n:.0%} duplicates", flush=True)


def faiss_rates(n_queries: int, k: int, dim: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n_queries, dim)).astype(np.float16)
    centroids = rng.standard_normal((k, dim)).astype(np.float32)
    flop = 2.0 * n_queries * k * dim
    for threads in (1, 2):
        faiss.omp_set_num_threads(threads)
        faiss_ops.nearest(x[:1024], centroids)  # warm-up: BLAS and faiss thread pools
        wall = best_wall(lambda: faiss_ops.nearest(x, centroids, normalize=True), 3)
        print(f"faiss flat search {n_queries:,d} x {k:,d} centroids x {dim}, {threads} thread(s): "
              f"{wall:.2f} s, {flop / wall / 1e9:.1f} GFLOP/s ({wall / n_queries * 1e6:.1f} µs per row; "
              f"best wall of 3)", flush=True)


def semdedup_rates(n: int, dim: int, eps: float) -> None:
    """One k-means cluster: points around a centre (cosine to it ~0.7) plus 5% near copies."""
    rng = np.random.default_rng(1)
    centre = rng.standard_normal(dim)
    x = centre + 0.65 * rng.standard_normal((n, dim)) * np.linalg.norm(centre) / np.sqrt(dim)
    copies = rng.integers(0, n, n // 20)
    x[n - len(copies):] = x[copies] + 0.01 * rng.standard_normal((len(copies), dim))
    x = x.astype(np.float16)
    for threads in (1, 2):
        faiss.omp_set_num_threads(threads)
        groups: list[np.ndarray] = []
        wall = best_wall(lambda out=groups: out.append(similar_groups(x, eps)), 2)
        print(f"semdedup similar_groups, one {n:,d} x {dim} cluster, eps {eps}, {threads} thread(s): {wall:.2f} s "
              f"(best wall of 2; {n - len(np.unique(groups[0])):,d} duplicates)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="+", choices=("phash", "stage", "faiss", "semdedup"),
                    default=["phash", "stage", "faiss", "semdedup"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--stage-hashes", type=int, default=1_000_000)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, faiss {faiss.__version__}; "
          f"load average {os.getloadavg()}", flush=True)
    t0 = time.perf_counter()
    if "phash" in args.only:
        phash_rates(args.repeats)
    if "stage" in args.only:
        stage_rates(args.stage_hashes)
    if "faiss" in args.only:
        faiss_rates(65_536, 1000, 512)
    if "semdedup" in args.only:
        semdedup_rates(10_000, 512, 0.05)
    print(f"total {time.perf_counter() - t0:.0f} s; load average {os.getloadavg()}")


if __name__ == "__main__":
    main()

"""Peak RSS of a non-model run (ingest, decode, filter, shard) at 1x and 10x input size.

Target: the 10x run's peak stays within 1.25x of the 1x run's: memory is bounded by shards in
flight, not by the input size. RSS is sampled every 0.2 s over the whole process tree (driver,
Ray's GCS/raylet and every worker), and separately for the driver.

    python bench/bench_memory.py [--scale 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil


def tree_rss(proc: psutil.Process) -> tuple[int, int]:
    total = 0
    try:
        driver = proc.memory_info().rss
        for p in [proc, *proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
    except psutil.Error:
        return 0, 0
    return total, driver


def run(crawl: Path, out: Path) -> tuple[float, int, int]:
    cmd = [sys.executable, "-m", "curation.cli", "run", "-i", str(crawl), "-o", str(out),
           "--set", "run.stages=[ingest,decode,filter,shard]", "--set", "filters.min_person_short_side=null",
           "--set", "ingest.shard_size=50", "--set", "run.num_cpus=2"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ps = psutil.Process(proc.pid)
    peak_total = peak_driver = 0
    while proc.poll() is None:
        total, driver = tree_rss(ps)
        peak_total, peak_driver = max(peak_total, total), max(peak_driver, driver)
        time.sleep(0.2)
    if proc.returncode != 0:
        raise SystemExit(f"run failed: {' '.join(cmd)}")
    return time.perf_counter() - t0, peak_total, peak_driver


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=int, default=10)
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp())
    from curation.sample_crawl import build_sample_crawl

    root = Path(tempfile.mkdtemp(prefix="bench-mem-"))
    one = root / "crawl1"
    info = build_sample_crawl(str(one))
    big = root / f"crawl{args.scale}"
    for i in range(args.scale):
        shutil.copytree(one, big / f"copy{i:02d}")
    results = {}
    for name, crawl in (("1x", one), (f"{args.scale}x", big)):
        secs, total, driver = run(crawl, root / f"out-{name}")
        results[name] = (secs, total, driver)
        n = info["images"] * (1 if name == "1x" else args.scale)
        print(f"{name}: {n} images in {secs:.1f}s ({n / secs:.1f} img/s incl. Ray start), "
              f"peak RSS tree {total / 2**20:.0f} MiB, driver {driver / 2**20:.0f} MiB")
    r_total = results[f"{args.scale}x"][1] / results["1x"][1]
    r_driver = results[f"{args.scale}x"][2] / results["1x"][2]
    print(f"machine: {platform.machine()} {os.cpu_count()} cores")
    print(f"peak RSS ratio {args.scale}x/1x: tree {r_total:.2f}, driver {r_driver:.2f}  (target <= 1.25)")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Peak RSS of a non-model run (ingest, decode, filter, shard) at 1x and 10x input size.

Target: the 10x run's peak stays within 1.25x of the 1x run's: memory is bounded by shards in
flight, not by the input size. RSS is sampled every 0.2 s over the whole process tree (driver,
Ray's GCS/raylet and every worker), and separately for the driver.

    python bench/bench_memory.py [--scale 10] [--timeout 1800]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
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


SAMPLE_S = 0.2


def run(crawl: Path, out: Path, limit_s: float) -> tuple[float, int, int]:
    cmd = [sys.executable, "-m", "curation.cli", "run", "-i", str(crawl), "-o", str(out),
           "--set", "run.stages=[ingest,decode,filter,shard]", "--set", "filters.min_person_short_side=null",
           "--set", "ingest.shard_size=50", "--set", "run.num_cpus=2"]
    t0 = time.perf_counter()
    # Its own process group, so a hung run can be killed with the local Ray it started.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ps = psutil.Process(proc.pid)
    peak_total = peak_driver = 0
    deadline = time.monotonic() + limit_s
    # Bounded in count and in time: one sample of a big process tree can take longer than
    # SAMPLE_S on a loaded machine, so the count alone would not bound the wall clock.
    for _ in range(int(limit_s / SAMPLE_S) + 1):
        if proc.poll() is not None or time.monotonic() > deadline:
            break
        total, driver = tree_rss(ps)
        peak_total, peak_driver = max(peak_total, total), max(peak_driver, driver)
        time.sleep(SAMPLE_S)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):  # it may have ended since the last poll
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        raise SystemExit(f"bench_memory: run did not finish within {limit_s:.0f} s; killed its process group "
                         f"(pid {proc.pid}). Raise --timeout on a slow machine. Command: {' '.join(cmd)}")
    if proc.returncode != 0:
        raise SystemExit(f"run failed: {' '.join(cmd)}")
    return time.perf_counter() - t0, peak_total, peak_driver


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed for each run")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp())
    from curation.sample_crawl import build_sample_crawl

    root = Path(tempfile.mkdtemp(prefix="bench-mem-"))
    try:
        one = root / "crawl1"
        info = build_sample_crawl(str(one))
        big = root / f"crawl{args.scale}"
        for i in range(args.scale):
            shutil.copytree(one, big / f"copy{i:02d}")
        results = {}
        for name, crawl in (("1x", one), (f"{args.scale}x", big)):
            secs, total, driver = run(crawl, root / f"out-{name}", args.timeout)
            results[name] = (secs, total, driver)
            n = info["images"] * (1 if name == "1x" else args.scale)
            print(f"{name}: {n} images in {secs:.1f}s ({n / secs:.1f} img/s incl. Ray start), "
                  f"peak RSS tree {total / 2**20:.0f} MiB, driver {driver / 2**20:.0f} MiB")
        r_total = results[f"{args.scale}x"][1] / results["1x"][1]
        r_driver = results[f"{args.scale}x"][2] / results["1x"][2]
        print(f"machine: {platform.machine()} {os.cpu_count()} cores")
        print(f"peak RSS ratio {args.scale}x/1x: tree {r_total:.2f}, driver {r_driver:.2f}  (target <= 1.25)")
    finally:  # a failed or timed-out run must not leave the copied crawls behind
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Peak worker RSS of a run whose input holds a 3 GiB sparse file, next to the same run without it.

The file must be refused from its size (`too_large`) before a byte is read, so the largest Ray
worker's peak RSS should not move. Every process of the run's tree is sampled from /proc every
0.1 s (Ray's workers are not children `time -v` sees).

    python bench/bench_sparse_ingest.py
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

SAMPLE_S = 0.1


def run(crawl: Path, out: Path) -> tuple[int, int, str, dict, int]:
    """(peak RSS of the largest single process but the driver, peak tree RSS, its name, ingest
    rejects, peak RSS of the process that ran the ingest task)."""
    cmd = [sys.executable, "-m", "curation.cli", "run", "-i", str(crawl), "-o", str(out),
           "--set", "run.stages=[ingest,decode,filter,shard]", "--set", "filters.min_person_short_side=null",
           "--set", "run.num_cpus=2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    me = psutil.Process(proc.pid)
    peak_worker, peak_tree, name, by_name = 0, 0, "", {}
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        tree = 0
        try:
            children = me.children(recursive=True)
        except psutil.Error:
            break
        for p in children:
            try:
                rss, pname = p.memory_info().rss, p.name()
            except psutil.Error:
                continue
            tree += rss
            by_name[pname] = max(by_name.get(pname, 0), rss)
            if rss > peak_worker:
                peak_worker, name = rss, pname
        peak_tree = max(peak_tree, tree)
        time.sleep(SAMPLE_S)
    if proc.wait(timeout=60) != 0:
        raise SystemExit(f"run failed: {' '.join(cmd)}")
    ledger = json.loads((out / "ledger.json").read_text())
    ingest = max((v for k, v in by_name.items() if "ingest" in k), default=0)
    return peak_worker, peak_tree, name, ledger["stages"]["ingest"]["rejects"], ingest


def main() -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from curation.sample_crawl import build_sample_crawl

    root = Path(tempfile.mkdtemp(prefix="bench-sparse-"))
    plain, sparse = root / "plain", root / "sparse"
    build_sample_crawl(str(plain))
    build_sample_crawl(str(sparse))
    with open(sparse / "sparse-3g.jpg", "wb") as f:
        f.truncate(3 << 30)
    for label, crawl in (("without", plain), ("with 3 GiB sparse file", sparse)):
        worker, tree, name, rejects, ingest = run(crawl, root / f"out-{crawl.name}")
        print(f"{label:>24}: ingest worker peak {ingest / 2**20:.0f} MiB; "
              f"largest process (not the driver) peak {worker / 2**20:.0f} MiB ({name}), "
              f"tree peak {tree / 2**20:.0f} MiB, ingest rejects {rejects}")
    print(f"machine: {platform.machine()} {os.cpu_count()} cores")


if __name__ == "__main__":
    main()

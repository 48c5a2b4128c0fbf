"""Bounded memory at scale: a synthetic crawl of N rows (default 10k, then 100k) through
ingest, decode, phash and shard, run as a real `curate run` subprocess with its own local Ray.

The crawl is small generated JPEGs (64x64, noise + a gradient, 1% exact copies so phash has work)
in WebDataset tars of `--per-tar` samples. While the run goes, a sampler records every
`--interval` s: the driver's RSS, each Ray worker's RSS (processes titled `ray::...` under the
driver), the whole process tree, and the bytes in Ray's spill directory (RAY_TMPDIR is pointed at
a private folder, so the session and its spill files are this run's alone). Printed per size:
throughput, peak RSS (driver, largest worker, tree), RSS in the first vs second half of the run
(flat = no growth with rows processed), peak spilled bytes.

Every loop is bounded: the generator by N, the sampler by `--max-seconds` (the run is killed and
reported as such past it).

    python bench/bench_scale.py                 # 10k and 100k
    python bench/bench_scale.py --rows 2000     # a quick look
    python bench/bench_scale.py --rows 10000 100000 200000 --compare-untuned
        # each size also with run.worker_env={} (allocator defaults): the same-process baseline

Per size it also prints the peak anonymous memory per op (the task a worker was running when
sampled), which is how the shard writer's growth was traced to allocator retention.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil


def make_crawl(root: Path, rows: int, per_tar: int, side: int, seed: int = 0) -> None:
    """rows samples in ceil(rows/per_tar) tars; every 100th image repeats an earlier one."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    grad = np.linspace(0, 255, side, dtype=np.float32)[None, :, None]
    previous: list[bytes] = []
    for t in range(-(-rows // per_tar)):
        with tarfile.open(root / f"part-{t:05d}.tar", "w") as tar:
            for i in range(t * per_tar, min(rows, (t + 1) * per_tar)):
                if i % 100 == 99 and previous:
                    data = previous[int(rng.integers(len(previous)))]
                else:
                    pixels = np.clip(rng.normal(0, 60, (side, side, 3)) + grad * rng.random(3), 0, 255)
                    buf = io.BytesIO()
                    Image.fromarray(pixels.astype(np.uint8)).save(buf, format="JPEG", quality=85)
                    data = buf.getvalue()
                    if len(previous) < 1000:
                        previous.append(data)
                info = tarfile.TarInfo(f"s{i:08d}.jpg")
                info.size = len(data)
                info.mtime = 0
                tar.addfile(info, io.BytesIO(data))


def _dir_bytes(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        if "spill" not in dirpath:
            continue
        for f in files:
            try:
                total += os.path.getsize(os.path.join(dirpath, f))
            except OSError:
                pass
    return total


def sample(proc: psutil.Process, tmp: Path) -> dict:
    out = {"t": time.monotonic(), "driver": 0, "workers": {}, "tree": 0, "tree_anon": 0, "spilled": _dir_bytes(tmp)}
    try:
        out["driver"] = proc.memory_info().rss
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return out
    for p in procs:
        try:
            mem, title = p.memory_info(), " ".join(p.cmdline()[:1])
            # anon = RSS minus file-backed and shared pages: a worker's own heap. Plain RSS also
            # counts the object-store (/dev/shm) pages the worker has touched.
            rss, anon = mem.rss, mem.rss - mem.shared
        except psutil.Error:
            continue
        out["tree"] += rss
        out["tree_anon"] = out.get("tree_anon", 0) + anon
        if title.startswith("ray::"):
            out["workers"][p.pid] = (title, rss, anon)
    return out


def run_once(crawl: Path, out: Path, tmp: Path, args: argparse.Namespace, extra: list[str]) -> dict:
    sets = ["run.stages=[ingest,decode,phash,shard]", "filters.min_person_short_side=null",
            "run.num_cpus=2", "shard.samples_per_shard=5000", *args.set, *extra]
    if args.object_store_mb:
        sets.append(f"run.object_store_mb={args.object_store_mb}")
    cmd = [sys.executable, "-m", "curation.cli", "run", "-i", str(crawl), "-o", str(out)]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "RAY_TMPDIR": str(tmp), "RAY_AUTH_MODE": "disabled"}
    log = out.parent / f"{out.name}.log"
    t0 = time.monotonic()
    with open(log, "w") as f:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    ps = psutil.Process(proc.pid)
    samples = []
    while proc.poll() is None:
        if time.monotonic() - t0 > args.max_seconds:  # bounded in time: kill and report
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
            raise SystemExit(f"run exceeded --max-seconds {args.max_seconds}; log: {log}")
        samples.append(sample(ps, tmp))
        time.sleep(args.interval)
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"run failed (rc {proc.returncode}); log: {log}")
    ledger = json.loads((out / "ledger.json").read_text())
    return {"seconds": seconds, "samples": samples, "ledger": ledger}


def summarize(rows: int, r: dict) -> dict:
    s = r["samples"]
    half = len(s) // 2
    worker_peak: dict[int, int] = {}
    for x in s:
        for pid, (_, rss, _) in x["workers"].items():
            worker_peak[pid] = max(worker_peak.get(pid, 0), rss)

    def peak(key, part):
        return max((x[key] for x in part), default=0) / 2**20

    def wpeak(part, i=1):
        return max((w[i] for x in part for w in x["workers"].values()), default=0) / 2**20

    top = max(((w[2], w[0]) for x in s for w in x["workers"].values()), default=(0, ""))
    # Peak anon per task title (what the worker was running when sampled): says which op grows.
    by_op: dict[str, int] = {}
    for x in s:
        for title, _, anon in x["workers"].values():
            op = title.removeprefix("ray::")[:48]
            by_op[op] = max(by_op.get(op, 0), anon)

    return {
        "rows": rows, "seconds": round(r["seconds"], 1), "rows_per_s": round(rows / r["seconds"], 1),
        "kept": r["ledger"]["kept"], "rejects": r["ledger"]["rejects"], "balanced": r["ledger"]["balanced"],
        "driver_peak_mib": round(peak("driver", s)), "worker_peak_mib": round(wpeak(s)),
        "tree_peak_mib": round(peak("tree", s)), "workers_seen": len(worker_peak),
        "driver_first_half_mib": round(peak("driver", s[:half])),
        "driver_second_half_mib": round(peak("driver", s[half:])),
        "worker_first_half_mib": round(wpeak(s[:half])), "worker_second_half_mib": round(wpeak(s[half:])),
        "worker_anon_peak_mib": round(wpeak(s, 2)), "worker_anon_first_half_mib": round(wpeak(s[:half], 2)),
        "worker_anon_second_half_mib": round(wpeak(s[half:], 2)), "largest_anon_worker": top[1][:80],
        "tree_anon_peak_mib": round(peak("tree_anon", s)), "spilled_peak_mib": round(peak("spilled", s), 1),
        "anon_peak_mib_by_op": {op: round(v / 2**20) for op, v in sorted(by_op.items())},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--per-tar", type=int, default=1000)
    ap.add_argument("--side", type=int, default=64)
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--max-seconds", type=float, default=3600)
    ap.add_argument("--object-store-mb", type=int, default=None)
    ap.add_argument("--set", action="append", default=[], help="extra --set for curate run")
    ap.add_argument("--keep", action="store_true", help="keep the crawl and outputs")
    ap.add_argument("--dump", default=None, help="write every RSS sample here (JSON lines), per size")
    ap.add_argument("--compare-untuned", action="store_true",
                    help="also run each size with run.worker_env={} (Ray's and Arrow's allocator defaults)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    results = []
    for rows in args.rows:
        crawl = root / f"crawl-{rows}"
        t = time.monotonic()
        make_crawl(crawl, rows, args.per_tar, args.side)
        print(f"{rows} rows: crawl generated in {time.monotonic() - t:.0f} s", flush=True)
        variants = [("tuned", [])] + ([("untuned", ["run.worker_env={}"])] if args.compare_untuned else [])
        for label, extra in variants:
            tmp = Path(tempfile.mkdtemp(prefix="rb-", dir="/tmp"))  # short: Ray's socket paths are length-capped
            try:
                raw = run_once(crawl, root / f"out-{rows}-{label}", tmp, args, extra)
                res = {"env": label, **summarize(rows, raw)}
                if args.dump:
                    with open(f"{args.dump}.{rows}.{label}.jsonl", "w") as f:
                        f.writelines(json.dumps(x) + "\n" for x in raw["samples"])
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
                if not args.keep:
                    shutil.rmtree(root / f"out-{rows}-{label}", ignore_errors=True)
            results.append(res)
            print(json.dumps(res), flush=True)
        if not args.keep:
            shutil.rmtree(crawl, ignore_errors=True)
    for label in ("tuned", "untuned"):
        runs = [r for r in results if r["env"] == label]
        if len(runs) > 1:
            compare(label, runs[0], runs[-1])
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


def compare(label: str, a: dict, b: dict) -> None:
    def r(key: str) -> str:
        return f"{b[key] / a[key]:.2f}"

    print(f"{label}: peak RSS ratio {b['rows']}/{a['rows']} rows: driver {r('driver_peak_mib')}, largest worker "
          f"{r('worker_peak_mib')}, tree {r('tree_peak_mib')}; anon: largest worker {r('worker_anon_peak_mib')}, "
          f"tree {r('tree_anon_peak_mib')}")
    ops = a["anon_peak_mib_by_op"].keys() & b["anon_peak_mib_by_op"].keys()
    print(f"{label}: anon peak by op, MiB ({a['rows']} -> {b['rows']} rows): " + ", ".join(
        f"{op} {a['anon_peak_mib_by_op'][op]} -> {b['anon_peak_mib_by_op'][op]}" for op in sorted(ops)))


if __name__ == "__main__":
    main()

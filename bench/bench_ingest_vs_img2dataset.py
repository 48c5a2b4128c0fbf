"""URLs to WebDataset shards: `curate run` (ingest, decode, filter, shard) against img2dataset
1.47 on the same URL list, served from loopback, in alternating runs.

What it does, all by itself:
- builds N distinct photos (1024-2048 px long side, JPEG q90) from the real photos that ship
  inside installed packages (skimage, ultralytics, matplotlib, sklearn): random crops, flips,
  scales and a little sensor noise, so no two files are equal and sizes are photo-like;
- serves them from a separate process (HTTP/1.1 keep-alive, ThreadingHTTPServer on 127.0.0.1);
  a list of more URLs than photos maps URL k to photo k mod N;
- installs img2dataset into its own venv under the scratch folder (once);
- runs both tools alternately, `--repeats` times each, at every size in `--sizes`, and prints
  wall time, images/s, images per CPU-second and peak PSS of each tool's whole process tree,
  sampled from /proc every 0.25 s (Ray's workers are not children `time -v` sees).

    python bench/bench_ingest_vs_img2dataset.py [--sizes 2000 20000] [--repeats 3] [--scratch DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_corpus import build_corpus, serve, write_url_list

SAMPLE_S = 0.25
BASE_SRC: list[Path | None] = [None]
RESIZE = 512
BY_PROCESS = [False]
I2D = "img2dataset==1.47.0"


class TreeSampler:
    """CPU seconds (user + system, each pid's last reading) and peak PSS of a process tree."""

    def __init__(self, pid: int):
        self.root = psutil.Process(pid)
        self.cpu: dict[int, float] = {}
        self.by_title: dict[str, float] = {}  # CPU by process title when it was spent (Ray retitles workers)
        self.peak_pss = 0

    def sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        pss = 0
        for p in procs:
            try:
                t = p.cpu_times()
                now = t.user + t.system
                if BY_PROCESS[0]:
                    title = "driver" if p.pid == self.root.pid else \
                        (p.cmdline() or [p.name()])[0].split("/")[-1][:40]
                    self.by_title[title] = self.by_title.get(title, 0.0) + now - self.cpu.get(p.pid, 0.0)
                self.cpu[p.pid] = now
                pss += p.memory_full_info().pss
            except psutil.Error:
                continue
        self.peak_pss = max(self.peak_pss, pss)

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu.values())

    def by_name(self) -> dict[str, float]:
        return dict(sorted(self.by_title.items(), key=lambda kv: -kv[1]))


def run_tool(cmd: list[str], env: dict[str, str], limit_s: float) -> tuple[float, float, int]:
    """(wall s, CPU s of the tree, peak PSS bytes); with --by-process, CPU by process name too."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    sampler = TreeSampler(proc.pid)
    deadline = time.monotonic() + limit_s
    while proc.poll() is None and time.monotonic() < deadline:
        sampler.sample()
        time.sleep(SAMPLE_S)
    wall = time.perf_counter() - t0
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        raise SystemExit(f"timed out after {limit_s:.0f} s: {' '.join(cmd)}")
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{err[-2000:]}")
    if BY_PROCESS[0]:
        top = list(sampler.by_name().items())[:8]
        print("    CPU by process: " + ", ".join(f"{k} {v:.1f}" for k, v in top))
    return wall, sampler.cpu_seconds, sampler.peak_pss


def img2dataset_venv(scratch: Path) -> Path:
    venv = scratch / "venv-img2dataset"
    exe = venv / "bin" / "img2dataset"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", I2D], check=True)
    return exe


def count_tar_samples(folder: Path) -> int:
    import tarfile

    n = 0
    for tar_path in sorted(folder.rglob("*.tar")):
        with tarfile.open(tar_path) as tar:
            n += sum(1 for m in tar.getmembers() if m.name.endswith(".jpg"))
    return n


def commands(tool: str, urls: Path, out: Path, i2d: Path) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    resize = tool.endswith("-resize")  # both tools: shorter side to RESIZE px, one re-encode
    if tool.startswith("img2dataset"):
        env["NO_ALBUMENTATIONS_UPDATE"] = "1"  # else every worker reaches for the network
        mode = ["--resize_mode", "keep_ratio", "--image_size", str(RESIZE)] if resize else ["--resize_mode", "no"]
        return [str(i2d), "--url_list", str(urls), "--input_format", "parquet", "--url_col", "url",
                "--output_format", "webdataset", "--output_folder", str(out), "--processes_count", "2",
                "--thread_count", "32", *mode, "--number_sample_per_shard", "500",
                "--timeout", "10", "--retries", "0", "--enable_wandb", "False",
                "--distributor", "multiprocessing"], env
    env.setdefault("RAY_AUTH_MODE", "disabled")
    sets = ["run.stages=[ingest,decode,filter,shard]", "filters.min_person_short_side=null", "ingest.retries=0"]
    if tool == "curate-base":  # an older checkout (--base-src), before loopback had to be allowed
        env["PYTHONPATH"] = str(BASE_SRC[0])
    else:
        sets.append("ingest.allow_networks=[127.0.0.0/8]")
    if resize:
        sets.append(f"shard.resize={RESIZE}")
    return [sys.executable, "-m", "curation.cli", "run", "-i", str(urls), "-o", str(out),
            *[a for s in sets for a in ("--set", s)]], env


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--photos", type=int, default=2000, help="distinct photos served")
    ap.add_argument("--scratch", type=Path, default=Path.home() / ".cache" / "curation-bench")
    ap.add_argument("--tools", nargs="+", default=["img2dataset", "curate"],
                    help="img2dataset, curate, curate-base (with --base-src); a -resize suffix runs "
                         "img2dataset --resize_mode keep_ratio / curate shard.resize")
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--by-process", action="store_true", help="print each run's CPU by process name")
    ap.add_argument("--base-src", type=Path, help="a checkout of an earlier version, run as tool 'curate-base' "
                                                  "(e.g. git worktree add /tmp/base <commit>)")
    args = ap.parse_args()
    BASE_SRC[:] = [args.base_src]
    BY_PROCESS[:] = [args.by_process]
    args.scratch.mkdir(parents=True, exist_ok=True)
    corpus = build_corpus(args.scratch / f"corpus-{args.photos}", args.photos)
    sizes = [p.stat().st_size for p in corpus]
    print(f"corpus: {len(corpus)} photos, median {statistics.median(sizes) / 1024:.0f} KiB, "
          f"{sum(sizes) / 2**20:.0f} MiB in all")
    i2d = img2dataset_venv(args.scratch) if any(t.startswith("img2dataset") for t in args.tools) else Path("-")
    results: dict[tuple[str, int], list[tuple[float, float, int]]] = {}
    with serve(corpus) as base:
        for n in args.sizes:
            urls = args.scratch / f"urls-{n}.parquet"
            write_url_list(urls, base, n)
            for rep in range(args.repeats):
                for tool in args.tools:
                    out = args.scratch / f"out-{tool}-{n}"
                    shutil.rmtree(out, ignore_errors=True)
                    cmd, env = commands(tool, urls, out, i2d)
                    wall, cpu, pss = run_tool(cmd, env, args.timeout)
                    got = count_tar_samples(out)
                    results.setdefault((tool, n), []).append((wall, cpu, pss))
                    print(f"{tool:>12} n={n} run {rep + 1}: {wall:6.1f} s wall, {n / wall:6.1f} img/s, "
                          f"{n / cpu:6.1f} img/CPU-s ({cpu:.1f} CPU-s), peak PSS {pss / 2**30:.2f} GB, "
                          f"{got} samples in tars", flush=True)
                    shutil.rmtree(out, ignore_errors=True)
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, load now {os.getloadavg()[0]:.1f}")
    print("| tool | URLs | wall s (median) | images/s | images per CPU-s | peak tree PSS GB |")
    print("|---|---|---|---|---|---|")
    for (tool, n), rs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        wall = statistics.median(r[0] for r in rs)
        cpu = statistics.median(r[1] for r in rs)
        pss = max(r[2] for r in rs)
        print(f"| {tool} | {n} | {wall:.1f} | {n / wall:.1f} | {n / cpu:.1f} | {pss / 2**30:.2f} |")
    for n in args.sizes:
        for tool, ref in (("curate", "img2dataset"), ("curate-base", "img2dataset"),
                          ("curate-resize", "img2dataset-resize")):
            a, b = results.get((tool, n)), results.get((ref, n))
            if not (a and b):
                continue
            wall = statistics.median(r[0] for r in a) / statistics.median(r[0] for r in b)
            cpu = statistics.median(r[1] for r in a) / statistics.median(r[1] for r in b)
            print(f"n={n}: {tool}/{ref} wall {wall:.2f} (target <= 0.8), images per CPU-s {1 / cpu:.2f}x "
                  f"(target >= 2), peak PSS {max(r[2] for r in a) / max(r[2] for r in b):.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()

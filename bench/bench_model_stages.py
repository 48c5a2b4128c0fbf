"""Per-image model stages: images/s of each stage alone, then the pipeline efficiency of the fused
per-image DAG on the sample crawl, in the same process.

Each stage runs alone through its real `check()` / `setup()` / `process()` on the decodable rows
of the sample crawl, in its declared batch size, with the thread count the runner gives an actor
on this machine (1); its own reduced-scale decode is part of its time. YOLO, CLIP and the aesthetic
head run with random weights asked for by name (no weights can be had offline here; the compute is
the same); MTCNN and PP-OCRv4 run their real weights. `filters.min_person_short_side` is off so
every row visits every stage (random YOLO finds no one).

Pipeline efficiency = achieved / implied throughput: achieved = decodable rows / wall time of the
fused map job (decode ... text, filter) inside `run_pipeline`; implied = cores / sum over stages of
the seconds per image each stage took alone (decode included), i.e. perfect packing of the same
work on this machine's cores. On a shared machine both walls move with other people's load, so
the script also counts CPU seconds: the stages' own CPU time alone vs all CPU time the run's
process tree (driver, raylet, GCS, workers) spent during the map job. Their ratio is the share of
the pipeline's CPU that went into stage work rather than Ray plumbing, serialisation, actor start.

    python bench/bench_model_stages.py [--stages-only] [--repeat 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

# Ray starts its workers at nice 15 while the stages-alone half runs in this nice-0 process: on a
# machine shared with other people's nice-0 jobs that alone made the pipeline several times
# slower than the reference it is divided by. Both halves run at the same priority here (on an
# idle machine niceness changes nothing).
for _k, _v in {"YOLO_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled",
               "RAY_worker_niceness": "0",
               "YOLO_CONFIG_DIR": tempfile.mkdtemp(prefix="yolo-"), "MPLCONFIGDIR": tempfile.mkdtemp()}.items():
    os.environ.setdefault(_k, _v)

import pyarrow as pa

MODEL_STAGES = ["detect", "headpose", "embed", "quality", "text"]
OVERRIDES = ["detect.weights=random", "embed.weights=random", "quality.weights=random",
             "filters.min_person_short_side=null", "ingest.shard_size=16",
             "run.stages=[ingest,decode,detect,headpose,embed,quality,text,filter,shard]"]


def crawl_rows(crawl: Path, cfg) -> pa.Table:
    """The rows `decode` keeps, with the columns the model stages read."""
    from curation.stages.decode import DecodeStage

    blobs = [p.read_bytes() for p in sorted(crawl.rglob("*")) if p.is_file()]
    out = DecodeStage(cfg).process(pa.table({"image": pa.array(blobs, pa.binary())}))
    keep = [i for i, r in enumerate(out["reject"]) if r is None]
    return pa.table({"image": pa.array([blobs[i] for i in keep], pa.binary()),
                     "width": pa.array([out["width"][i] for i in keep], pa.int32()),
                     "height": pa.array([out["height"][i] for i in keep], pa.int32())})


def time_stage(stage, table: pa.Table, repeat: int, threads: int) -> tuple[float, float, float, dict]:
    """(setup s, best wall s for all rows, CPU s of that pass, outputs of the last pass)."""
    from curation.arrowutil import to_array

    t0 = time.perf_counter()
    stage.check()
    stage.setup(threads)
    setup_s = time.perf_counter() - t0
    bs = stage.effective_resources().batch_size
    cols = [c for c in stage.required_columns() if c in table.column_names]
    stage.process(table.slice(0, bs).select(cols))  # warm-up: lazy inits, allocator, first-call paths
    best, cpu, outs = float("inf"), 0.0, {}
    for _ in range(repeat):
        outs = {c: [] for c in stage.produces}
        t0, c0 = time.perf_counter(), time.process_time()
        for start in range(0, table.num_rows, bs):
            o = stage.process(table.slice(start, bs).select(cols))
            for c in stage.produces:
                outs[c].append(to_array(c, o[c]))
        wall = time.perf_counter() - t0
        if wall < best:
            best, cpu = wall, time.process_time() - c0
    return setup_s, best, cpu, {c: pa.concat_arrays(v) for c, v in outs.items()}


STARTUP = """
import sys, time
c0 = time.process_time()
from curation.stages.dag import load_config
from curation.runner.fusion import FusedStageRunner
from curation.stages.dag import get_stage
cfg = load_config(None, sys.argv[2:])
FusedStageRunner([(get_stage(n), [], 16) for n in sys.argv[1].split("+")], cfg, 1)
print(time.process_time() - c0)
"""


def actor_startup_cpu(names: list[str], overrides: list[str]) -> float:
    """CPU s to build one actor's runner for `names` in a fresh process (imports, model loads,
    `setup()`): what each actor of the pipeline pays before its first batch (Ray's import aside)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", STARTUP, "+".join(names), *overrides], capture_output=True,
                         text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


from actor_busy import ActorBusy
from proc_tree import TreeCPU


def actor_pools(cfg, cores: int) -> dict[str, tuple[list[str], int]]:
    """The runner's actor pools for the per-image job on a `cores`-CPU local Ray (none started):
    pool name -> (model stages it loads, actors)."""
    from curation.runner import placement as ray_runtime
    from curation.runner.fusion import StageGroup, fusable_groups
    from curation.stages.dag import get_stage

    saved = ray_runtime.cluster_totals
    ray_runtime.cluster_totals = lambda: (float(cores), 0.0)
    try:
        units = fusable_groups([get_stage(n)(cfg) for n in ["decode", *MODEL_STAGES, "filter"]], 0.0,
                               cfg.run.fuse_cpu_stages)
        placed = ray_runtime.place(units)
    finally:
        ray_runtime.cluster_totals = saved
    members = {u.name: [s.name for s in u.stages] if isinstance(u, StageGroup) else [u.name] for u in units}
    return {u.name: ([m for m in members[u.name] if m in MODEL_STAGES], placed[u.name].pool_max)
            for u in units if u.stateful}


def run_dag(label: str, overrides: list[str], crawl: Path, out: Path, rows: int, stage_cpu: float,
            implied: float, results: dict, cores: int) -> dict:
    """Run the per-image DAG through `run_pipeline` and print how close it came to `implied`."""
    from curation.runner.pipeline import run_pipeline
    from curation.stages.dag import load_config

    cfg = load_config(None, overrides)
    print(f"\n## pipeline, {label} ({overrides[-1]})")
    t0, c0 = time.perf_counter(), time.process_time()
    marks: list[tuple[list[str], float]] = []  # (stages of the job, tree CPU s) at each shard done
    job_marks: list[tuple[str, float, int]] = []  # the map job's events: (event, wall s, rows)
    with TreeCPU() as tree, ActorBusy(tree) as busy:
        def on_event(e: dict) -> None:
            marks.append((e.get("stages", []), tree.seconds + time.process_time() - c0 - tree.own))
            if "detect" in e.get("stages", []) and e.get("event") in ("job_start", "shard_done"):
                job_marks.append((e["event"], time.perf_counter(), e.get("rows", 0)))

        run_pipeline(cfg, str(crawl), str(out), on_event=on_event)
    wall = time.perf_counter() - t0
    run_cpu = tree.seconds + (time.process_time() - c0) - tree.own  # whole run, Ray start to shutdown
    # The map job's own CPU: from ingest's last shard to the fused job's last shard (ingest,
    # shard and Ray start/stop left out; actor start-up and all plumbing left in).
    ingest_end = max((c for st, c in marks if st == ["ingest"]), default=0.0)
    job_end = max((c for st, c in marks if "detect" in st), default=run_cpu)
    timing = json.loads((out / "detect" / "timing.json").read_text())  # the fused map job
    achieved = rows / timing["seconds"]  # decode rejects the broken files in microseconds
    job_cpu = job_end - ingest_end
    work_share = stage_cpu / job_cpu
    starts = [t for ev, t, _ in job_marks if ev == "job_start"]
    done = [t for ev, t, _ in job_marks if ev == "shard_done"]
    first_shard_s = done[0] - starts[0] if starts and done else float("nan")
    # Steady state: the rows of the shards done after the first, over the time between the first
    # and the last (actor start-up and the pipeline's fill are behind it by then). Beside, never
    # instead of, the whole-job figure.
    after = [r for ev, _, r in job_marks if ev == "shard_done"][1:]
    steady = sum(after) / (done[-1] - done[0]) if len(done) > 2 else float("nan")
    load_during = sum(tree.loads) / max(1, len(tree.loads))
    # The tail: core-seconds the chain actors sat idle at the end, waiting for the last batch.
    tail_idle = busy.idle_core_s(done[-1]) if done else float("nan")
    t_end = done[-1] if done else float("inf")
    fed = [min(k, cores) / cores for t, k in tree.runnable if starts and starts[0] <= t <= t_end]
    fed_share = sum(fed) / max(1, len(fed))
    pools = actor_pools(cfg, cores)
    startup = {name: actor_startup_cpu(models, overrides) for name, (models, _) in pools.items()}
    startup_cpu = sum(startup[name] * k for name, (_, k) in pools.items())
    res = {"overrides": overrides, "pipeline_rows": rows, "pipeline_wall_s": wall, "map_job_s": timing["seconds"],
           "fused": timing.get("fused_with"), "achieved_img_per_s": achieved, "efficiency": achieved / implied,
           "run_cpu_s": run_cpu, "map_job_cpu_s": job_cpu, "cores_used_by_map_job": job_cpu / timing["seconds"],
           "stage_work_share_of_map_job_cpu": work_share, "cores_fed": fed_share,
           "cpu_efficiency_estimate": work_share * fed_share, "first_shard_s": first_shard_s,
           "steady_img_per_s": steady, "steady_efficiency": steady / implied,
           "tail_idle_core_s": tail_idle, "tail_share_of_job": tail_idle / (cores * timing["seconds"]),
           "load_avg_during_pipeline": load_during, "pools": {k: v[1] for k, v in pools.items()},
           "actor_startup_cpu_s": startup, "startup_cpu_s": startup_cpu, "cpu_by_process": tree.by_name()}
    print(f"map job {'+'.join(timing.get('fused_with') or [])}: {rows} rows in {timing['seconds']:.1f} s = "
          f"{achieved:.2f} img/s (whole run incl. Ray start/stop {wall:.1f} s)")
    print(f"pipeline efficiency (achieved / implied): {achieved / implied:.2f} (load avg during the pipeline "
          f"{load_during:.1f})")
    print(f"cores fed (mean min(runnable threads, {cores}) / {cores} over the map job): {fed_share:.2f}; "
          f"x stage work share {work_share:.2f} = {work_share * fed_share:.2f}, the efficiency the "
          f"pipeline would show alone on the machine (an estimate; sampler CPU {tree.own:.1f} s left out)")
    print(f"first shard done {first_shard_s:.1f} s after the job started; after it {steady:.2f} img/s = "
          f"{steady / implied:.2f} of implied (steady state)")
    print(f"tail: chain actors idle {tail_idle:.1f} core-s at the end, waiting for the last batch "
          f"(= {tail_idle / (cores * timing['seconds']):.3f} of the job's core-seconds)")
    print("actor pools: " + ", ".join(f"{k} x{v[1]}" for k, v in pools.items()) + "; CPU s per actor start-up "
          + ", ".join(f"{k} {v:.1f}" for k, v in startup.items())
          + f" -> {startup_cpu:.1f} CPU s = {startup_cpu / job_cpu:.2f} of the map job's CPU")
    print(f"CPU: stages alone {stage_cpu:.1f} s; the map job's process tree {job_cpu:.1f} s "
          f"(= {job_cpu / timing['seconds']:.2f} of {cores} cores on average) -> stage work is "
          f"{work_share:.2f} of the map job's CPU (whole run incl. ingest, shard, Ray: {run_cpu:.1f} s)")
    print("CPU s by process: " + ", ".join(f"{k} {v:.1f}" for k, v in tree.by_name().items() if v >= 1.0))
    res["core_seconds"] = gap = core_seconds(cores * timing["seconds"], stage_cpu, startup_cpu, tail_idle, job_cpu,
                                              tree.by_name())
    print("where the map job's core-seconds went: " + ", ".join(f"{k} {v:.2f}" for k, v in gap.items()))
    return res


def core_seconds(total: float, stage_cpu: float, startup_cpu: float, tail_idle: float, job_cpu: float,
                 by_name: dict[str, float]) -> dict[str, float]:
    """Shares of the map job's core-seconds (cores x wall): the stages' work as timed alone (the
    efficiency itself), the actors' start-up, their CPU beyond both (contention for caches and memory
    bandwidth, plus the plumbing inside the actor), Ray's and the loader's/writer's processes, the
    tail, and what is left: cores not fed (or taken by other people's jobs)."""
    actors = sum(v for k, v in by_name.items() if k.startswith("ray::MapWorker"))
    parts = {"stage work": stage_cpu, "actor start-up": startup_cpu,
             "actors beyond both": actors - startup_cpu - stage_cpu, "Ray and loader/writer": job_cpu - actors,
             "tail": tail_idle}
    parts["unfed"] = total - sum(parts.values())
    return {k: v / total for k, v in parts.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--crawl", type=Path, help="a sample crawl folder (default: build one)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="threads per stage alone (the runner gives 1 here)")
    ap.add_argument("--stages-only", action="store_true", help="skip the pipeline run")
    ap.add_argument("--copies", type=int, default=3,
                    help="the pipeline reads this many copies of the crawl, to amortise 5 actors' start-up")
    ap.add_argument("--compare-unfused", action="store_true",
                    help="also run the DAG with one actor pool per stage (run.fuse_cpu_stages=false)")
    ap.add_argument("--compare-in-flight", type=int, metavar="N",
                    help="also run the fused DAG with N batches in flight per CPU actor (Ray's default: 2)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from curation.sample_crawl import build_sample_crawl
    from curation.stages.dag import get_stage, load_config
    from curation.stages.decode import DecodeStage

    tmp = Path(tempfile.mkdtemp(prefix="bench-models-"))
    crawl = args.crawl or tmp / "crawl"
    if args.crawl is None:
        build_sample_crawl(str(crawl), form="folder", seed=0)
    cfg = load_config(None, OVERRIDES)
    rows = crawl_rows(crawl, cfg)
    n = rows.num_rows
    cores = os.cpu_count() or 1
    print(f"{platform.machine()}, {cores} cores, threads/stage {args.threads}, {n} decodable rows, "
          f"load avg {os.getloadavg()[0]:.2f}")

    results = {}
    blobs = pa.table({"image": pa.array(rows["image"].to_pylist(), pa.binary())})
    t0, c0 = time.perf_counter(), time.process_time()
    DecodeStage(cfg).process(blobs)
    results["decode"] = {"setup_s": 0.0, "seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
    table = rows
    for name in MODEL_STAGES:
        stage = get_stage(name)(cfg)
        setup_s, seconds, cpu, outs = time_stage(stage, table, args.repeat, args.threads)
        for c, arr in outs.items():  # later stages read earlier stages' columns
            table = table.append_column(c, arr)
        results[name] = {"setup_s": setup_s, "seconds": seconds, "cpu_s": cpu}
    print(f"\n| stage | img/s alone ({args.threads} thread) | wall ms/img | CPU ms/img | actor setup s |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        r["img_per_s"] = n / r["seconds"]
        print(f"| {name} | {r['img_per_s']:.1f} | {1000 * r['seconds'] / n:.1f} | {1000 * r['cpu_s'] / n:.1f} "
              f"| {r['setup_s']:.1f} |")
    serial = sum(r["seconds"] for r in results.values()) / n  # wall s per image, all stages, one core
    stage_cpu = sum(r["cpu_s"] for r in results.values())
    implied = (cores // max(1, args.threads)) / serial
    summary = {"rows": n, "cores": cores, "stages": results, "serial_s_per_img": serial,
               "implied_img_per_s": implied, "load_avg_before": os.getloadavg()[0]}
    print(f"\nall stages one after the other: {serial * 1000:.0f} ms/img; implied DAG throughput on {cores} "
          f"cores: {implied:.2f} img/s")

    if not args.stages_only:
        from chain_without_ray import concurrent_ceiling

        ceiling = concurrent_ceiling(rows, OVERRIDES, cores)
        summary["no_ray_ceiling"] = ceiling
        print(f"no Ray: {cores} chain processes at once, each all {n} rows: {ceiling['img_per_s']:.2f} img/s "
              f"= {ceiling['img_per_s'] / implied:.2f} of implied (the cost of sharing the machine's caches "
              f"and memory bandwidth; load avg {os.getloadavg()[0]:.1f})")
        big = tmp / "crawl-copies"
        for k in range(args.copies):  # same images, distinct names: the per-image work is what we measured
            for f in sorted(crawl.rglob("*")):
                if f.is_file():
                    dest = big / f.relative_to(crawl).parent / f"c{k}_{f.name}"
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(f.read_bytes())
        layouts = {"fused": "run.fuse_cpu_stages=true"}
        if args.compare_unfused:
            layouts["one pool per stage"] = "run.fuse_cpu_stages=false"
        if args.compare_in_flight:
            layouts[f"{args.compare_in_flight} in flight"] = "run.fuse_cpu_stages=true"
        from curation.runner import map_job

        default_in_flight = map_job.CPU_POOL_TASKS_IN_FLIGHT
        for label, flag in layouts.items():
            map_job.CPU_POOL_TASKS_IN_FLIGHT = (args.compare_in_flight if label.endswith("in flight")
                                                else default_in_flight)
            res = run_dag(label, [*OVERRIDES, flag], big, tmp / f"out-{len(summary)}", n * args.copies,
                          stage_cpu * args.copies, implied, results, cores)
            res["cpu_tasks_in_flight"] = map_job.CPU_POOL_TASKS_IN_FLIGHT
            res["of_no_ray_ceiling"] = res["achieved_img_per_s"] / ceiling["img_per_s"]
            summary[label] = res
            print(f"  -> {label}: efficiency {res['efficiency']:.2f}; achieved / no-Ray ceiling "
                  f"{res['of_no_ray_ceiling']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

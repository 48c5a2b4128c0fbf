"""Per-image model stages: images/s of each stage alone, then the pipeline efficiency of the fused
per-image DAG on the sample crawl, in the same process.

Each stage runs alone through its real `check()` / `setup()` / `process()` on the decodable rows
of the sample crawl, in its declared batch size, with the thread count the runner gives an actor
on this machine (1); its own reduced-scale decode is part of its time. YOLO, CLIP and the aesthetic
head run with random weights asked for by name (no weights can be had offline here; the compute is
the same); MTCNN and PP-OCRv4 run their real weights. `filters.min_person_short_side` is off so
every row visits every stage (random YOLO finds no one).

Pipeline efficiency = achieved / implied throughput, where achieved = rows / wall time of the fused
map job (decode ... text, filter) in `run_pipeline`, and implied = cores / sum over stages of the
seconds per image each stage took alone (decode included): what perfect packing of the same model
work on this machine's cores would give. Ray plumbing, serialisation and idle cores are the gap.

    python bench/bench_model_stages.py [--stages-only] [--repeat 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

for _k, _v in {"YOLO_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled",
               "YOLO_CONFIG_DIR": tempfile.mkdtemp(prefix="yolo-"), "MPLCONFIGDIR": tempfile.mkdtemp()}.items():
    os.environ.setdefault(_k, _v)

import pyarrow as pa

MODEL_STAGES = ["detect", "headpose", "embed", "quality", "text"]
OVERRIDES = ["detect.weights=random", "embed.weights=random", "quality.weights=random",
             "filters.min_person_short_side=null", "ingest.shard_size=32",
             "run.stages=[ingest,decode,detect,headpose,embed,quality,text,filter,shard]",
             # Until ray_runtime.place() budgets task stages next to 5 actor pools on 2 CPUs, a
             # whole-CPU decode task starves the load/write tasks and the job never finishes.
             "decode.num_cpus=0.2"]


def crawl_rows(crawl: Path, cfg) -> pa.Table:
    """The rows `decode` keeps, with the columns the model stages read."""
    from curation.stages.decode import DecodeStage

    blobs = [p.read_bytes() for p in sorted(crawl.rglob("*")) if p.is_file()]
    out = DecodeStage(cfg).process(pa.table({"image": pa.array(blobs, pa.binary())}))
    keep = [i for i, r in enumerate(out["reject"]) if r is None]
    return pa.table({"image": pa.array([blobs[i] for i in keep], pa.binary()),
                     "width": pa.array([out["width"][i] for i in keep], pa.int32()),
                     "height": pa.array([out["height"][i] for i in keep], pa.int32())})


def time_stage(stage, table: pa.Table, repeat: int) -> tuple[float, float, dict]:
    """(setup seconds, best seconds for all rows, outputs of the last pass)."""
    from curation.arrowutil import to_array

    t0 = time.perf_counter()
    stage.check()
    stage.setup()
    setup_s = time.perf_counter() - t0
    bs = stage.effective_resources().batch_size
    cols = [c for c in stage.required_columns() if c in table.column_names]
    stage.process(table.slice(0, bs).select(cols))  # warm-up: lazy inits, allocator, first-call JIT
    best, outs = float("inf"), {}
    for _ in range(repeat):
        outs = {c: [] for c in stage.produces}
        t0 = time.perf_counter()
        for start in range(0, table.num_rows, bs):
            o = stage.process(table.slice(start, bs).select(cols))
            for c in stage.produces:
                outs[c].append(to_array(c, o[c]))
        best = min(best, time.perf_counter() - t0)
    return setup_s, best, {c: pa.concat_arrays(v) for c, v in outs.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--crawl", type=Path, help="a sample crawl folder (default: build one)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="threads per stage alone (the runner gives 1 here)")
    ap.add_argument("--stages-only", action="store_true", help="skip the pipeline run")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from curation.config import load_config
    from curation.sample_crawl import build_sample_crawl
    from curation.stages.decode import DecodeStage
    from curation.stages.registry import get_stage

    tmp = Path(tempfile.mkdtemp(prefix="bench-models-"))
    crawl = args.crawl or tmp / "crawl"
    if args.crawl is None:
        build_sample_crawl(str(crawl), form="folder", seed=0)
    cfg = load_config(None, OVERRIDES)
    rows = crawl_rows(crawl, cfg)
    n = rows.num_rows
    cores = os.cpu_count() or 1
    print(f"{platform.machine()}, {cores} cores, torch threads/stage {args.threads}, {n} decodable rows, "
          f"load avg {os.getloadavg()[0]:.2f}")

    results = {}
    blobs = pa.table({"image": pa.array(rows["image"].to_pylist(), pa.binary())})
    decode = DecodeStage(cfg)
    t0 = time.perf_counter()
    for _ in range(args.repeat):
        decode.process(blobs)
    results["decode"] = {"setup_s": 0.0, "seconds": (time.perf_counter() - t0) / args.repeat}
    table = rows
    for name in MODEL_STAGES:
        stage = get_stage(name)(cfg)
        stage.num_threads = args.threads
        setup_s, seconds, outs = time_stage(stage, table, args.repeat)
        for c, arr in outs.items():  # later stages read earlier stages' columns
            table = table.append_column(c, arr)
        results[name] = {"setup_s": setup_s, "seconds": seconds}
    print(f"\n| stage | img/s (1 stage alone, {args.threads} thread) | ms/img | actor setup s |")
    print("|---|---|---|---|")
    for name, r in results.items():
        r["img_per_s"] = n / r["seconds"]
        print(f"| {name} | {r['img_per_s']:.1f} | {1000 * r['seconds'] / n:.0f} | {r['setup_s']:.1f} |")
    serial = sum(r["seconds"] for r in results.values()) / n  # seconds per image, all stages, one core
    implied = min(cores, max(1, args.threads and cores // args.threads)) / serial
    summary = {"rows": n, "cores": cores, "stages": results, "serial_s_per_img": serial,
               "implied_img_per_s": implied}
    print(f"\nall per-image stages, one after the other: {serial * 1000:.0f} ms/img on one core; "
          f"implied DAG throughput on {cores} cores: {implied:.2f} img/s")

    if not args.stages_only:
        from curation.pipeline import run_pipeline

        out = tmp / "out"
        events: list[dict] = []
        t0 = time.perf_counter()
        run_pipeline(cfg, str(crawl), str(out), on_event=events.append)
        wall = time.perf_counter() - t0
        timing = json.loads((out / "detect" / "timing.json").read_text())  # the fused map job
        rows = n  # the job also gets the broken files; decode rejects them in microseconds
        achieved = rows / timing["seconds"]
        # Steady state: from the first input shard done to the last, i.e. without actor start-up
        # (model loads) and pipeline fill, which a crawl of 4 shards cannot amortise.
        done = [e for e in events if e.get("event") == "shard_done" and "detect" in e.get("stages", [])]
        steady = None
        if len(done) >= 2:
            steady = sum(e["rows"] for e in done[1:]) / (done[-1]["seconds"] - done[0]["seconds"])
        # With one actor per stage (what place() gives 5 pools on 2 CPUs) the slowest stage alone
        # also bounds the DAG, however well Ray packs the rest.
        bound = min(implied, 1 / max(r["seconds"] / n for r in results.values()))
        summary.update(pipeline_wall_s=wall, map_job_rows=timing["rows"], map_job_s=timing["seconds"],
                       fused=timing.get("fused_with"), achieved_img_per_s=achieved,
                       steady_img_per_s=steady, one_actor_bound_img_per_s=bound,
                       efficiency=achieved / implied,
                       steady_efficiency=None if steady is None else steady / implied)
        print(f"pipeline: map job {'+'.join(timing.get('fused_with') or [])}: {rows} decodable rows in "
              f"{timing['seconds']:.1f} s = {achieved:.2f} img/s (whole run incl. Ray start {wall:.1f} s)")
        print(f"pipeline efficiency (achieved / implied): {achieved / implied:.2f}")
        if steady is not None:
            print(f"steady state (shard 1 done -> last shard done): {steady:.2f} img/s, "
                  f"efficiency {steady / implied:.2f}")
        print(f"bound with one actor per stage (slowest stage alone): {bound:.2f} img/s "
              f"= {bound / implied:.2f} of implied; load avg now {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

"""The model stages on a GPU node: each stage alone on CUDA, then the per-image DAG through
`run_pipeline` on copies of the sample crawl, printing images/s per GPU and the efficiency.

Each stage runs its real `check()` / `setup()` / `process()` on the sample crawl's decodable rows,
at the batch size it gets on its device (`gpu_batch_size` on a GPU), with the precision it uses
there (detect fp16, embed fp16 autocast, headpose and text float32: docs/models.md). YOLO, CLIP
and the aesthetic head run random weights asked for by name (same compute); MTCNN and PP-OCRv4
their shipped weights. The early person filter is off so every row visits every stage.

Implied DAG throughput on a GPU node = the slower of the GPUs (every GPU stage's seconds per image
alone, summed, shared by `gpus` GPUs) and the CPUs (the CPU stages' seconds per image over the
cores left beside one per GPU actor). Efficiency = achieved / implied. Without a GPU the script
says so and prints the CPU figures (the stages on the CPU, the DAG through the fused CPU chain).

    python bench/gpu_model_stages.py [--copies 10] [--stages-only] [--limit N] [--json out.json]

Called by bench/gpu_check.sh; its last line is one JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_model_stages import MODEL_STAGES, OVERRIDES, crawl_rows, time_stage  # sets the offline env first

GPU_STAGES = ["detect", "headpose", "embed", "text"]


def stage_rates(table, cfg, gpu: bool, repeat: int) -> dict[str, dict]:
    """Each model stage alone on this device, later stages reading earlier stages' columns."""
    from curation.stages.dag import get_stage

    out = {}
    for name in MODEL_STAGES:
        stage = get_stage(name)(cfg)
        stage.on_gpu = gpu and name in GPU_STAGES
        threads = 1 if not gpu else max(1, round(stage.effective_resources().num_cpus))
        setup_s, seconds, cpu_s, cols = time_stage(stage, table, repeat, threads)
        for c, arr in cols.items():
            table = table.append_column(c, arr)
        out[name] = {"img_per_s": table.num_rows / seconds, "ms_per_img": 1000 * seconds / table.num_rows,
                     "cpu_ms_per_img": 1000 * cpu_s / table.num_rows, "setup_s": setup_s,
                     "batch": stage.effective_resources().batch_size,
                     "device": "cuda" if stage.on_gpu else "cpu"}
        print(f"| {name} | {out[name]['device']} | {out[name]['batch']} | {out[name]['img_per_s']:.1f} | "
              f"{out[name]['ms_per_img']:.2f} | {out[name]['cpu_ms_per_img']:.1f} | {setup_s:.1f} |", flush=True)
    return out


class ModelClock:
    """CPU seconds spent inside a stage's networks (what moves to the GPU); the rest of the stage's
    time (JPEG decode, resizing, letterboxing, DB box extraction, crops, CTC decoding, PnP) stays
    on the host's CPU on a GPU node, and sizes how many cores each GPU actor needs."""

    def __init__(self, stage):
        self.seconds = 0.0
        m = getattr(stage, "model", None)
        if stage.name == "text":  # rapidocr calls its graphs through these two callables
            m.det.infer = self._timed(m.det.infer)
            if m.rec is not None:
                m.rec.session = self._timed(m.rec.session)
        else:
            nets = {"detect": lambda: [m.model.model], "embed": lambda: [m.model.visual],
                    "headpose": lambda: [m.mtcnn.pnet, m.mtcnn.rnet, m.mtcnn.onet]}.get(stage.name, list)()
            for net in nets:
                net.register_forward_pre_hook(lambda *_: setattr(self, "_t0", time.process_time()))
                net.register_forward_hook(lambda *_: self._add(time.process_time() - self._t0))

    def _add(self, dt: float) -> None:
        self.seconds += dt

    def _timed(self, fn):
        def call(*args):
            t0 = time.process_time()
            try:
                return fn(*args)
            finally:
                self._add(time.process_time() - t0)
        return call


def host_split(table, cfg) -> dict[str, dict]:
    """Per model stage, on this device: CPU ms per image inside its networks vs the rest (host)."""
    import pyarrow as pa

    from curation.arrowutil import to_array
    from curation.stages.dag import get_stage

    out = {}
    for name in MODEL_STAGES:
        stage = get_stage(name)(cfg)
        stage.check()
        stage.setup(1)
        clock = ModelClock(stage)
        cols = [c for c in stage.required_columns() if c in table.column_names]
        bs = stage.effective_resources().batch_size
        t0 = time.process_time()  # CPU time, one thread: what a busy shared machine moves least
        produced = {c: [] for c in stage.produces}
        for start in range(0, table.num_rows, bs):
            o = stage.process(table.slice(start, bs).select(cols))
            for c in stage.produces:
                produced[c].append(o[c])
        wall = time.process_time() - t0
        for c, parts in produced.items():
            table = table.append_column(c, pa.concat_arrays([to_array(c, p) for p in parts]))
        n = table.num_rows
        out[name] = {"model_ms": 1000 * clock.seconds / n, "host_ms": 1000 * (wall - clock.seconds) / n}
        print(f"| {name} | {out[name]['model_ms']:.1f} | {out[name]['host_ms']:.1f} |", flush=True)
    return out


def implied_rate(rates: dict[str, dict], gpus: int, cores: int) -> float:
    """Images/s the node could reach if every device were kept busy by the stages' own work."""
    gpu_s = sum(r["ms_per_img"] for r in rates.values() if r["device"] == "cuda") / 1000
    cpu_s = sum(r["cpu_ms_per_img"] for r in rates.values() if r["device"] == "cpu") / 1000
    # GPU stages also spend CPU (decode, pre/post-processing): one core per GPU actor is theirs.
    gpu_cpu_s = sum(r["cpu_ms_per_img"] for r in rates.values() if r["device"] == "cuda") / 1000
    bounds = []
    if gpus and gpu_s:
        bounds.append(gpus / gpu_s)
    if cpu_s + gpu_cpu_s:
        bounds.append(cores / (cpu_s + gpu_cpu_s))
    return min(bounds)


def run_dag(crawl: Path, copies: int, rows: int, tmp: Path) -> dict:
    """The per-image DAG through run_pipeline on `copies` copies of the crawl: the map job's rate."""
    from curation.runner.pipeline import run_pipeline
    from curation.stages.dag import load_config

    big = tmp / "crawl-copies"
    for k in range(copies):  # same images, distinct names
        for f in sorted(crawl.rglob("*")):
            if f.is_file():
                dest = big / f.relative_to(crawl).parent / f"c{k}_{f.name}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(f.read_bytes())
    out = tmp / "out"
    t0 = time.perf_counter()
    run_pipeline(load_config(None, OVERRIDES), str(big), str(out))
    timing = json.loads((out / "detect" / "timing.json").read_text())  # the whole per-image map job
    return {"rows": rows * copies, "map_job_s": timing["seconds"], "run_s": time.perf_counter() - t0,
            "img_per_s": rows * copies / timing["seconds"], "units": timing.get("fused_with")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=10, help="copies of the sample crawl the DAG reads")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--limit", type=int, help="only the first N decodable rows for the stages alone")
    ap.add_argument("--stages-only", action="store_true")
    ap.add_argument("--host-split", action="store_true",
                    help="also split each stage's time into its networks and the host-side rest")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch

    from curation.sample_crawl import build_sample_crawl
    from curation.stages.dag import load_config

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    cores = os.cpu_count() or 1
    if gpus:
        print(f"{gpus} x {torch.cuda.get_device_name(0)}, {cores} cores")
    else:
        print(f"no GPU found (torch.cuda.is_available() is False): CPU figures only, {cores} cores")
    tmp = Path(tempfile.mkdtemp(prefix="gpu-model-stages-"))
    crawl = tmp / "crawl"
    build_sample_crawl(str(crawl), form="folder", seed=0)
    cfg = load_config(None, OVERRIDES)
    table = crawl_rows(crawl, cfg)
    if args.limit:
        table = table.slice(0, args.limit)
    print(f"\n{table.num_rows} decodable rows; each stage alone\n")
    print("| stage | device | batch | img/s | wall ms/img | CPU ms/img | setup s |\n|---|---|---|---|---|---|---|")
    rates = stage_rates(table, cfg, bool(gpus), args.repeat)
    implied = implied_rate(rates, gpus, cores)
    summary = {"gpus": gpus, "cores": cores, "rows": table.num_rows, "stages": rates, "implied_img_per_s": implied,
               "implied_img_per_s_per_gpu": implied / gpus if gpus else None}
    print(f"\nimplied DAG throughput: {implied:.2f} img/s" + (f" = {implied / gpus:.2f} per GPU" if gpus else ""))
    if args.host_split:
        print("\n| stage | CPU ms/img inside its networks | CPU ms/img around them (stays on the host) |")
        print("|---|---|---|")
        summary["host_split"] = host_split(table, cfg)
    if not args.stages_only:
        dag = run_dag(crawl, args.copies, crawl_rows(crawl, cfg).num_rows, tmp)
        dag["efficiency"] = dag["img_per_s"] / implied
        summary["dag"] = dag
        per_gpu = f" = {dag['img_per_s'] / gpus:.2f} per GPU" if gpus else " (no GPU)"
        print(f"DAG ({'+'.join(dag['units'] or [])}): {dag['rows']} rows in {dag['map_job_s']:.1f} s = "
              f"{dag['img_per_s']:.2f} img/s{per_gpu}; efficiency {dag['efficiency']:.2f} of implied")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

"""The per-image DAG without Ray: `cores` processes at once, each running every stage over the
same decodable rows in the chain's own batches, after all have loaded their models.

This is the ceiling the pipeline can reach on this machine: the stages' work with every core
busy at the same time (so shared caches and memory bandwidth cost what they cost when the
pipeline runs), and nothing else (no Ray, no object store, no Parquet, no actor start-up in
the timed part). bench_model_stages.py divides the pipeline's throughput by it, beside the
issue's own figure (stages timed alone, one at a time, with the other cores idle).

    python bench/chain_without_ray.py ROWS.parquet GO_FILE OVERRIDE...   (one worker; internal)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DAG = ["decode", "detect", "headpose", "embed", "quality", "text", "filter"]


def worker(rows_path: str, go: str, overrides: list[str]) -> None:
    from curation.runner.fusion import FusedStageRunner, StageGroup
    from curation.stages.dag import get_stage, load_config

    cfg = load_config(None, overrides)
    stages = [get_stage(n)(cfg) for n in DAG]
    batch = StageGroup(stages).effective_resources().batch_size
    chain = FusedStageRunner([(type(s), [], s.effective_resources().batch_size) for s in stages], cfg, 1)
    table = pq.read_table(rows_path)
    chain(table.slice(0, 2))  # warm-up, as the stages-alone timing has
    print("ready", flush=True)
    deadline = time.monotonic() + 600
    while not Path(go).exists():  # bounded: a parent that died leaves no worker behind for long
        if time.monotonic() > deadline:
            raise SystemExit("no go signal within 600 s")
        time.sleep(0.01)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, table.num_rows, batch):
        chain(table.slice(i, batch))
    print(json.dumps({"seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}), flush=True)


def concurrent_ceiling(rows: pa.Table, overrides: list[str], cores: int) -> dict:
    """Images/s of `cores` chain processes started together on `rows` (each does all rows)."""
    tmp = Path(tempfile.mkdtemp(prefix="chain-"))
    pq.write_table(rows.append_column("id", pa.array([f"r{i}" for i in range(rows.num_rows)]))
                   .append_column("input_shard", pa.array(["s"] * rows.num_rows)), tmp / "rows.parquet")
    go = tmp / "go"
    procs = [subprocess.Popen([sys.executable, __file__, str(tmp / "rows.parquet"), str(go), *overrides],
                              stdout=subprocess.PIPE, text=True) for _ in range(cores)]
    try:
        for p in procs:  # every worker has loaded its models before any starts the clock
            while (line := p.stdout.readline()) and line.strip() != "ready":
                pass
        go.touch()
        out = [json.loads(p.stdout.read().strip().splitlines()[-1]) for p in procs]
        for p in procs:
            p.wait(timeout=60)
    finally:
        for p in procs:
            p.kill()
    wall = max(o["seconds"] for o in out)
    return {"processes": cores, "rows_each": rows.num_rows, "wall_s": wall,
            "img_per_s": cores * rows.num_rows / wall, "cpu_s": sum(o["cpu_s"] for o in out)}


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2], sys.argv[3:])

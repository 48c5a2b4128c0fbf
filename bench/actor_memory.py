"""Host memory of one actor of each per-image unit, measured, and what a node plan's actors need.

Each unit is built in a fresh process the way an actor builds it (FusedStageRunner, one thread,
on the CPU), then runs the sample crawl's decodable rows in the unit's batches; the process then
reports its peak RSS and its PSS and USS (/proc/self/smaps_rollup; PSS counts the shared
libraries a share each, the honest per-actor figure when many actors share a node). The plan's
actor counts come from `bench/node_plan.py` (the runner's own `place()`), so the last table says
how much host memory the actors of that plan hold together: a bound the plan does not check,
because the runner does not ask Ray for memory.

On a GPU node each GPU actor's weights move to the device and its process gains a CUDA context
instead: those host figures are not measured here (no GPU); the CPU figure is the stand-in.

    python bench/actor_memory.py [--cpus 96] [--gpus 8] [--rows 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_model_stages import OVERRIDES  # sets the offline env first
from node_plan import DAG, plan

# Run in a fresh process: build `units` members as an actor does, run the rows, print the memory.
ACTOR = """
import json, sys
import pyarrow.parquet as pq
from curation.runner.fusion import FusedStageRunner
from curation.stages.dag import get_stage, load_config
cfg = load_config(None, json.loads(sys.argv[3]))
stages = [get_stage(n)(cfg) for n in sys.argv[1].split("+")]
runner = FusedStageRunner([(type(s), [], s.effective_resources().batch_size) for s in stages], cfg, 1)
table = pq.read_table(sys.argv[2])
batch = max(s.effective_resources().batch_size for s in stages)
for start in range(0, table.num_rows, batch):
    runner(table.slice(start, batch))
roll = {}
# VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's peak at fork (Linux).
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
for line in open("/proc/self/smaps_rollup"):
    parts = line.split()
    if parts and parts[0].endswith(":") and len(parts) >= 2 and parts[1].isdigit():
        roll[parts[0][:-1]] = int(parts[1]) / 1024
uss = roll.get("Private_Clean", 0) + roll.get("Private_Dirty", 0)
print(json.dumps({"peak_rss_mib": hwm / 1024,
                  "pss_mib": roll.get("Pss", 0.0), "uss_mib": uss}))
"""


def unit_rows(rows_path: Path, crawl: Path, limit: int) -> None:
    """The decodable rows (with the columns the stages read, and the ones earlier stages produce
    that later ones read) written where each actor process reads them."""
    import pyarrow.parquet as pq
    from bench_model_stages import crawl_rows

    from curation.runner.fusion import FusedStageRunner
    from curation.stages.dag import get_stage, load_config

    cfg = load_config(None, OVERRIDES)
    table = crawl_rows(crawl, cfg).slice(0, limit)
    # The columns detect ... text produce, so a lone later stage (quality reads embed's vectors)
    # gets the inputs it would get in the DAG.
    upstream = [n for n in DAG if n != "filter"]
    runner = FusedStageRunner([(get_stage(n), [], 16) for n in upstream], cfg, 1)
    full = runner(table)
    keep = [c for c in full.column_names if c not in ("reject", "reject_stage", "error")]
    pq.write_table(full.select(keep), rows_path)


def measure(unit: str, rows_path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", ACTOR, unit, str(rows_path), json.dumps(OVERRIDES)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    import tempfile

    ap = argparse.ArgumentParser()
    ap.add_argument("--cpus", type=float, default=96.0)
    ap.add_argument("--gpus", type=float, default=8.0)
    ap.add_argument("--rows", type=int, default=32, help="decodable rows each actor runs before it is measured")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from curation.sample_crawl import build_sample_crawl

    tmp = Path(tempfile.mkdtemp(prefix="actor-memory-"))
    build_sample_crawl(str(tmp / "crawl"), form="folder", seed=0)
    rows_path = tmp / "rows.parquet"
    unit_rows(rows_path, tmp / "crawl", args.rows)
    plans = {f"{args.cpus:g} CPUs, {args.gpus:g} GPUs": plan(args.cpus, args.gpus, []),
             f"{args.cpus:g} CPUs, no GPU": plan(args.cpus, 0.0, [])}
    units = list(dict.fromkeys(r["unit"] for rows in plans.values() for r in rows if r["kind"] == "actor"))
    mem = {u: measure(u, rows_path) for u in units}
    print(f"one actor of each unit, built on the CPU, after {args.rows} rows (MiB)\n")
    print("| unit | peak RSS | PSS | USS |\n|---|---|---|---|")
    for u, m in mem.items():
        print(f"| {u} | {m['peak_rss_mib']:.0f} | {m['pss_mib']:.0f} | {m['uss_mib']:.0f} |")
    summary = {"rows": args.rows, "actors": mem, "plans": {}}
    for label, rows in plans.items():
        actors = [r for r in rows if r["kind"] == "actor"]
        total = sum(r["actors"] * mem[r["unit"]]["pss_mib"] for r in actors) / 1024
        lines = [f"{r['unit']} {r['actors']} x {mem[r['unit']]['pss_mib'] / 1024:.2f}" for r in actors]
        summary["plans"][label] = {"actors_pss_gib": total, "by_unit": lines}
        print(f"\nplan for {label}: actors' PSS together {total:.1f} GiB ({'; '.join(lines)} GiB)")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

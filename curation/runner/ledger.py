"""The ledger: counts and reasons summed from the per-shard completion records.

Accounting invariant, checked for every run: inputs = kept + sum of rejects over all stages.
It holds because a stage is given exactly the rows its predecessor kept, and every row it is
given ends either kept or with one reject reason.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from curation.io import fs
from curation.runner.store import RunStore


def summarize(store: RunStore, stages: list[str]) -> dict[str, Any]:
    per_stage: dict[str, Any] = {}
    from curation.runner.run_folder import load_plan

    total_shards = len(load_plan(store))
    all_rejects: Counter[str] = Counter()
    inputs = kept = None
    for name in stages:
        if name == "shard":
            continue
        recs = store.done_records(name)
        rejects: Counter[str] = Counter()
        rows_in = rows_kept = seconds = 0
        for r in recs.values():
            rows_in += r["in"]
            rows_kept += r["kept"]
            seconds = max(seconds, r.get("seconds", 0.0))
            rejects.update(r["rejects"])
        per_stage[name] = {"shards_done": len(recs), "shards_total": total_shards, "in": rows_in,
                           "kept": rows_kept, "rejects": dict(sorted(rejects.items())),
                           "seconds": round(seconds, 3), **_throughput(store, name)}
        all_rejects.update(rejects)
        if inputs is None:
            inputs = rows_in
        kept = rows_kept
    inputs, kept = inputs or 0, kept or 0
    complete = all(s["shards_done"] == total_shards for s in per_stage.values())
    summary = {
        "inputs": inputs,
        "kept": kept,
        "rejects": dict(sorted(all_rejects.items())),
        "rejected": sum(all_rejects.values()),
        "balanced": inputs == kept + sum(all_rejects.values()),
        "complete": complete,
        "random_weights": (store.read_run_info() or {}).get("random_weights", []),
        "stages": per_stage,
    }
    manifest = store.uri("shards", "manifest.json")
    if fs.exists(manifest):
        m = fs.read_json(manifest)
        summary["shards"] = {"files": len(m["shards"]), "samples": m["counts"]["samples"]}
    return summary


def _throughput(store: RunStore, stage: str) -> dict[str, Any]:
    """Rows/s of the stage's latest job (its timing.json); fused stages share their job's figure."""
    holder = store.holder_of(stage) or store
    uri = holder.uri(stage, "timing.json")
    if not fs.exists(uri):
        return {"job_seconds": None, "rows_per_s": None}
    t = fs.read_json(uri)
    rate = t["rows"] / t["seconds"] if t.get("seconds") else None
    return {"job_seconds": t.get("seconds"), "rows_per_s": None if rate is None else round(rate, 2)}


def write_ledger(store: RunStore, stages: list[str]) -> dict[str, Any]:
    summary = summarize(store, stages)
    fs.write_json(store.uri("ledger.json"), summary)
    return summary

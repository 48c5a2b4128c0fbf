"""Running `ingest`: one Ray task per pending input shard reads it and writes its part.

Each task reads a whole shard, so its row count is known when it returns and the completion
record is exact. URL shards download with a thread pool inside the task (I/O bound).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from curation.manifests.store import RunStore
from curation.run_folder import load_plan
from curation.schema import REJECT


def ingest_task(batch: Any, out: str, stage: Any) -> Any:
    import pyarrow as pa

    store = RunStore(out)
    results = []
    for spec_json in batch.column("spec").to_pylist():
        import json

        spec = json.loads(spec_json)
        t0 = time.perf_counter()
        table = stage.read_shard(spec)
        found = _planned_items(spec)
        if found is not None and found != table.num_rows:  # an item without its row is a bug, not a reject
            raise RuntimeError(f"ingest of {spec['shard']}: {table.num_rows} rows for {found} items found")
        part = store.write_part(stage.name, spec["shard"], table)
        rejects = Counter(r for r in table.column(REJECT).to_pylist() if r is not None)
        results.append({"shard": spec["shard"], "part": part, "rows": table.num_rows,
                        "kept": table.num_rows - sum(rejects.values()), "rejects": json.dumps(rejects),
                        "bytes": int(sum(b or 0 for b in table.column("bytes").to_pylist())),
                        "seconds": time.perf_counter() - t0})
    return pa.Table.from_pylist(results)


def _planned_items(spec: dict[str, Any]) -> int | None:
    """Items the plan found in a shard (a tar's members are only counted as it is read)."""
    if spec["kind"] == "files":
        return len(spec.get("items") or spec.get("uris") or [])
    if spec["kind"] == "urls":
        return spec["stop"] - spec["start"]
    return None


def run_ingest(stage: Any, store: RunStore, input_uri: str, fingerprint: str, emit: Any) -> None:
    import json

    import ray

    plan = load_plan(store)
    done = store.done_records(stage.name)
    pending = [s for s in plan if done.get(s["shard"], {}).get("fingerprint") != fingerprint]
    if not pending:
        return
    for spec in pending:
        store.clear_shard(stage.name, spec["shard"])
    res = stage.effective_resources()
    ds = ray.data.from_items([{"spec": json.dumps(s)} for s in pending], override_num_blocks=len(pending))
    ds = ds.map_batches(ingest_task, batch_size=1, batch_format="pyarrow", num_cpus=res.num_cpus,
                        fn_kwargs={"out": store.out, "stage": stage})
    t0, n_done, rows = time.perf_counter(), 0, 0
    emit({"event": "job_start", "stages": [stage.name], "total": len(pending), "rows": None})
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        for r in batch.to_pylist():
            store.write_done(stage.name, r["shard"], {
                "fingerprint": fingerprint, "in": r["rows"], "kept": r["kept"], "rejects": json.loads(r["rejects"]),
                "parts": [r["part"]], "bytes": r["bytes"], "finished_at": time.time()})
            n_done += 1
            rows += r["rows"]
            emit({"event": "shard_done", "stages": [stage.name], "shard": r["shard"], "rows": r["rows"],
                  "done": n_done, "total": len(pending), "seconds": time.perf_counter() - t0,
                  "counts": {stage.name: {"in": r["rows"], "kept": r["kept"], "rejects": json.loads(r["rejects"])}}})
    from curation.io import fs

    fs.write_json(store.uri(stage.name, "timing.json"), {"rows": rows, "seconds": round(time.perf_counter() - t0, 3)})

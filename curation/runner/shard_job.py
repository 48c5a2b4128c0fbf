"""The job of `shard`: write the kept rows as WebDataset tars (one Ray task per tar), then
`shards/manifest.json`.

Output tar i holds a fixed, deterministic slice of the kept rows (ShardStage.plan_tars), so tars
are written in parallel, each is resumable on its own, and a rerun writes byte-identical tars
(fixed mtime). Samples: `__key__` (the row id), `jpg` and `json`.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from curation.imaging import normalized_jpeg
from curation.io import fs
from curation.manifests.manifest import sample_metadata, write_manifest
from curation.manifests.tar_writer import sample_tar
from curation.models.weights import weights_record
from curation.runner.jobs import RunContext, ShardLedger, job_items, sources_of
from curation.runner.ledger import summarize
from curation.runner.run_folder import check_upstream_complete, load_plan
from curation.runner.segments import load_rows
from curation.stages.dag import weight_files
from curation.stages.shard import ShardStage


def run_shard(ctx: RunContext, stages: list[ShardStage]) -> None:
    import ray

    (stage,), store = stages, ctx.store
    prev, fingerprint = ctx.prev(stage.name), ctx.fps[stage.name]
    check_upstream_complete(store, prev)
    before = ctx.before(stage.name)
    manifest_uri = store.uri("shards", "manifest.json")
    if fs.exists(manifest_uri) and fs.read_json(manifest_uri).get("fingerprint") == fingerprint:
        return
    done = {r["shard"]: r for r in store.done_records(stage.name).values() if r.get("fingerprint") == fingerprint}
    if not done:
        fs.delete_dir(store.uri("shards"))
        fs.delete_dir(store.uri(stage.name, "done"))
    meta_cols = stage.metadata_columns(before)
    sources = sources_of(["image", *meta_cols], before)
    kept = {sh: r["kept"] for sh, r in store.done_records(prev).items()}
    ingest = store.done_records("ingest").values()
    mean_bytes = sum(r.get("bytes", 0) for r in ingest) / max(1, sum(r["kept"] for r in ingest))
    tars = stage.plan_tars([s["shard"] for s in load_plan(store)], kept, mean_bytes)
    items = []
    for i, slices in enumerate(tars):
        if f"{i:06d}" in done:
            continue
        shards = sorted({s for s, _, _ in slices})
        recs = {it["shard"]: it["records"] for it in job_items(store, shards, prev, sources)}
        items.append({"tar": f"{i:06d}", "slices": json.dumps(slices), "records": json.dumps(recs)})
    if items:
        ledger = ShardLedger(ctx, [stage.name], len(tars), None, done=len(done))
        p = stage.params
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(write_tar, batch_size=1, batch_format="pyarrow", num_cpus=1.0,
                            fn_kwargs={"out": store.out, "base": prev, "sources": sources, "meta_cols": meta_cols,
                                       "quality": p.jpeg_quality, "resize": p.resize,
                                       "include_clip": p.include_clip})
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            for r in batch.to_pylist():
                done[r["tar"]] = {**r, "fingerprint": fingerprint}
                counts = {stage.name: {"in": r["samples"], "kept": r["samples"], "rejects": {}}}
                ledger.finish(r["tar"], {stage.name: done[r["tar"]]}, r["samples"], counts)
        ledger.close()
    entries = [done[f"{i:06d}"] for i in range(len(tars))]
    write_manifest(manifest_uri, entries, ctx.config.hash(), fingerprint, summarize(store, ctx.names),
                   weights_record(weight_files(ctx.config)))


def write_tar(batch: pa.Table, out: str, base: str, sources: dict[str, list[str]], meta_cols: list[str],
              quality: int, include_clip: bool, resize: int | None = None) -> pa.Table:
    """Ray task: write one output tar from its slices of input shards, streamed to its final URI
    (memory: one input shard's rows plus one sample, whatever the tar's size)."""
    item = batch.to_pylist()[0]
    slices, records = json.loads(item["slices"]), json.loads(item["records"])
    path = f"{item['tar']}.tar"
    json_cols = [c for c in meta_cols if c != "clip"]  # clip goes to clip.npy, not the json
    with sample_tar(fs.join(out, "shards", path)) as sink:
        for shard, start, stop in slices:
            rows = load_rows(json.loads(records[shard]), base, sources).slice(start, stop - start)
            for chunk in rows.to_batches(max_chunksize=256):  # a chunk of Python objects at a time
                for row in chunk.to_pylist():
                    jpg, scale = normalized_jpeg(row["image"], row.get("format"), row.get("mode"),
                                                 row.get("orientation"), quality, resize)
                    meta = sample_metadata(row, json_cols)
                    if scale != 1.0:  # boxes and sizes in the json stay in original pixels
                        meta = {**meta, "stored_scale": scale}
                    repeats = int(row["selected"]) if row.get("selected") is not None else 1
                    for r in range(max(1, repeats)):
                        sample = {"__key__": row["id"] if r == 0 else f"{row['id']}_r{r}", "jpg": jpg, "json": meta}
                        if include_clip and row.get("clip") is not None:
                            sample["clip.npy"] = np.asarray(row["clip"], dtype=np.float16)
                        sink.write(sample)
    return pa.Table.from_pylist([{"tar": item["tar"], "path": path, "samples": sink.samples, "bytes": sink.bytes,
                                  "sha256": sink.sha256}])



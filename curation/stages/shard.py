"""`shard`: write the kept rows as WebDataset tars, then `shards/manifest.json`.

Output tar i holds a fixed, deterministic slice of the kept rows (input shards in plan order,
rows by id), so tars are written in parallel, each is resumable on its own, and a rerun writes
byte-identical tars (fixed mtime). Samples: `__key__` (the row id), `jpg` and `json`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from curation.config import StageConfig
from curation.io import fs
from curation.manifests.manifest import sample_metadata, write_manifest, write_tar
from curation.runner.store import RunStore
from curation.runner.run_folder import load_plan
from curation.stages.base import Resources, Stage
from curation.stages.registry import all_stages, register_stage


@dataclass
class ShardConfig(StageConfig):
    samples_per_shard: int = 1000
    max_shard_bytes: int = 1_000_000_000  # shards roll over by count or by estimated size
    jpeg_quality: int = 95  # only for images that must be re-encoded (PNG, CMYK, rotated, resized ...)
    # Shorter side to this many pixels (area averaging, one re-encode) for images larger than
    # that; None keeps full resolution, which the trainer needs. The sample json then holds
    # `stored_scale`: its boxes and sizes stay in original pixels.
    resize: int | None = None
    include_clip: bool = False  # add `clip.npy` (float16) to each sample


@register_stage
class ShardStage(Stage):
    name = "shard"
    kind = "write"
    order = 120
    requires = ("image",)
    resources = Resources(num_cpus=1.0, batch_size=1)
    Config = ShardConfig
    description = "WebDataset tars (jpg + json) and shards/manifest.json with sha256 per shard"

    def metadata_columns(self, before: list[str]) -> list[str]:
        stages = all_stages()
        cols = []
        for name in before:
            for c in stages[name].produces:
                if c not in ("image",) and (c != "clip" or self.cfg.include_clip):
                    cols.append(c)
        return cols

    def plan_tars(self, store: RunStore, prev: str) -> list[list[tuple[str, int, int]]]:
        kept = {sh: r["kept"] for sh, r in store.done_records(prev).items()}
        ingest = store.done_records("ingest").values()
        total_bytes = sum(r.get("bytes", 0) for r in ingest)
        mean = total_bytes / max(1, sum(r["kept"] for r in ingest))
        per_tar = max(1, min(self.cfg.samples_per_shard, int(self.cfg.max_shard_bytes // max(mean, 1))))
        tars: list[list[tuple[str, int, int]]] = [[]]
        room = per_tar
        for spec in load_plan(store):
            sh, start, n = spec["shard"], 0, kept.get(spec["shard"], 0)
            while start < n:
                if room == 0:
                    tars.append([])
                    room = per_tar
                take = min(room, n - start)
                tars[-1].append((sh, start, start + take))
                start += take
                room -= take
        return [t for t in tars if t]

    def run_write(self, store: RunStore, prev: str, fingerprint: str, emit: Any) -> None:
        import ray

        from curation.runner.pipeline import dag_names
        from curation.runner.jobs import job_items, sources_of

        names = dag_names(self.config)
        before = names[: names.index(self.name)]
        manifest_uri = store.uri("shards", "manifest.json")
        if fs.exists(manifest_uri) and fs.read_json(manifest_uri).get("fingerprint") == fingerprint:
            return
        done = {r["shard"]: r for r in store.done_records(self.name).values()
                if r.get("fingerprint") == fingerprint}
        if not done:
            fs.delete_dir(store.uri("shards"))
            fs.delete_dir(store.uri(self.name, "done"))
        meta_cols = self.metadata_columns(before)
        sources = sources_of(["image", *meta_cols], before)
        tars = self.plan_tars(store, prev)
        items = []
        for i, slices in enumerate(tars):
            tar_name = f"{i:06d}"
            if tar_name in done:
                continue
            shards = sorted({s for s, _, _ in slices})
            recs = {it["shard"]: it["records"] for it in job_items(store, shards, prev, sources)}
            items.append({"tar": tar_name, "slices": json.dumps(slices), "records": json.dumps(recs)})
        t0 = time.perf_counter()
        if items:
            ds = ray.data.from_items(items, override_num_blocks=len(items))
            ds = ds.map_batches(write_tar, batch_size=1, batch_format="pyarrow", num_cpus=1.0,
                                fn_kwargs={"out": store.out, "base": prev, "sources": sources,
                                           "meta_cols": meta_cols, "quality": self.cfg.jpeg_quality,
                                           "resize": self.cfg.resize,
                                           "include_clip": self.cfg.include_clip})
            for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                for r in batch.to_pylist():
                    rec = {**r, "fingerprint": fingerprint}
                    store.write_done(self.name, r["tar"], rec)
                    done[r["tar"]] = rec
                    emit({"event": "shard_done", "stages": [self.name], "shard": r["tar"], "rows": r["samples"],
                          "done": len(done), "total": len(tars), "seconds": time.perf_counter() - t0,
                          "counts": {self.name: {"in": r["samples"], "kept": r["samples"], "rejects": {}}}})
        entries = [done[f"{i:06d}"] for i in range(len(tars))]
        write_manifest(store, entries, self.config, fingerprint, names)


__all__ = ["ShardStage", "sample_metadata"]

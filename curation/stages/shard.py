"""`shard`: what goes into the WebDataset tars (`jpg`, and a `json` of every column the run's
earlier stages produced) and how the kept rows are cut into tars. The tars and the manifest are
written by the runner (runner/shard_job.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from curation.config import StageConfig
from curation.stages.base import Resources, Stage
from curation.stages.dag import all_stages
from curation.stages.registry import register_stage


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
    requires = ("image",)
    resources = Resources(num_cpus=1.0, batch_size=1)
    Config = ShardConfig
    description = "WebDataset tars (jpg + json) and shards/manifest.json with sha256 per shard"

    def metadata_columns(self, before: list[str]) -> list[str]:
        stages = all_stages()
        cols = []
        for name in before:
            for c in stages[name].produces:
                if c not in ("image",) and (c != "clip" or self.params.include_clip):
                    cols.append(c)
        return cols

    def plan_tars(self, shards: list[str], kept: dict[str, int], mean_bytes: float) -> list[list[tuple[str, int, int]]]:
        """Output tars as slices (input shard, start, stop) of the kept rows, input shards in plan
        order; a tar rolls over at `samples_per_shard` or at about `max_shard_bytes`."""
        p = self.params
        per_tar = max(1, min(p.samples_per_shard, int(p.max_shard_bytes // max(mean_bytes, 1))))
        tars: list[list[tuple[str, int, int]]] = [[]]
        room = per_tar
        for sh in shards:
            start, n = 0, kept.get(sh, 0)
            while start < n:
                if room == 0:
                    tars.append([])
                    room = per_tar
                take = min(room, n - start)
                tars[-1].append((sh, start, start + take))
                start += take
                room -= take
        return [t for t in tars if t]

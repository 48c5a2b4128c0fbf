"""Consecutive CPU map stages fused into one Ray actor pool.

Why: on CPU workers, giving every model stage a pool of its own buys nothing (the cores are
shared either way) and costs a great deal. Each batch then crosses the object store once per
stage (image bytes included), every pool pays its own start-up, the pools' sizes must be
guessed from cost hints, and the job runs only as fast as its worst-fitted pool. Measured on the
2-core build machine (docs/benchmarks.md, "Pipeline efficiency"): five single-stage pools
reached 0.52-0.63 of the throughput the stages' own times imply. A chain runs decode -> detect
-> ... -> filter inside one actor, each stage in its own batch size, so any actor works on any
batch from start to end and every core stays busy while batches are left.

GPU stages are never fused with CPU ones: a GPU actor that also ran PP-OCR on its CPU would leave
its GPU idle. `place()` sees a chain as one stage (`StageGroup`) whose cost is its members' sum.
`run.fuse_cpu_stages: false` restores one pool per stage.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from curation.config import Config
from curation.runner.stage_runner import StageRunner
from curation.stages.base import Resources, Stage


class StageGroup:
    """Consecutive map stages run by one callable; duck-types the Stage attributes place() reads."""

    kind = "map"
    uses_gpu = False

    def __init__(self, stages: list[Stage]):
        self.stages = stages
        self.name = "+".join(s.name for s in stages)
        self.stateful = any(s.stateful for s in stages)

    def effective_resources(self) -> Resources:
        rs = [s.effective_resources() for s in self.stages]
        models = [r for s, r in zip(self.stages, rs) if s.stateful]
        pixel_models = [r for s, r in zip(self.stages, rs) if s.stateful and "image" in s.required_columns()]
        caps = [r.concurrency for r in rs if r.concurrency]
        costs = [r.cost for r in rs if r.cost]
        # The batch the chain is handed: the smallest a model on pixels asks for by default (16:
        # detect, headpose, text; embed asks for 32). A chain runs on CPUs only (GPU stages never
        # fuse), where ViT-B-32 costs the same per image in batches of 16 as of 32 (docs/benchmarks.md),
        # while every batch fewer at the end of a job is a core less idle (the last batch runs on
        # one actor while the others wait). Not quality's 256 rows of vectors: a batch carries
        # image bytes. A batch_size the user sets on a member is honoured: the chain is handed at
        # least that many rows, and FusedStageRunner slices them to each member's own size.
        chosen = [s.params.batch_size for s in self.stages if s.params is not None and s.params.batch_size]
        batch = max([min(r.batch_size for r in (pixel_models or models)), *chosen])
        return Resources(num_cpus=max(r.num_cpus for r in models), num_gpus=0.0, batch_size=batch,
                         concurrency=min(caps) if caps else None, cost=sum(costs) if costs else None)


def fusable_groups(stages: list[Stage], gpus: float, fuse: bool) -> list[Stage | StageGroup]:
    """Runs of consecutive stages that would not take a GPU, each as one StageGroup.

    Marks each stage with where it will run (`Stage.on_gpu`), which picks its batch size: a stage
    that declares `num_gpus` gets a GPU when the cluster has one, and runs on the CPU, in a chain,
    when it has none or `<stage>.num_gpus: 0` says so.
    """
    def on_gpu(s: Stage) -> bool:
        return s.stateful and s.uses_gpu and gpus > 0 and s.effective_resources().num_gpus > 0

    for s in stages:
        s.on_gpu = on_gpu(s)
    units: list[Any] = []
    run: list[Stage] = []
    for s in [*stages, None]:
        if s is not None and fuse and not s.on_gpu:
            run.append(s)
            continue
        if len(run) > 1 and any(r.stateful for r in run):
            units.append(StageGroup(run))
        else:
            units.extend(run)  # a lone stage, or tasks only (Ray Data fuses those itself)
        run = []
        if s is not None:
            units.append(s)
    return units


class FusedStageRunner:
    """The map_batches callable of a StageGroup: one StageRunner per member, applied in order.

    Each member keeps everything StageRunner does alone (rejected rows skip it, the early filter
    after it, failures retried then bisected down to the bad row, image bytes shed after their
    last reader) and sees slices of its own batch size.
    """

    def __init__(self, members: list[tuple[type, list, int]], config: Config, num_threads: int):
        self.runners = [(StageRunner(cls, config, rules, num_threads), batch) for cls, rules, batch in members]

    def __call__(self, table: pa.Table) -> pa.Table:
        for runner, batch in self.runners:
            if table.num_rows <= batch:
                table = runner(table)
                continue
            parts = [runner(table.slice(i, batch)) for i in range(0, table.num_rows, batch)]
            table = pa.concat_tables(parts, promote_options="permissive")
        return table

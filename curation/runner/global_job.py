"""The job of a global stage: it sees all kept rows at once (`Stage.run_global`), and its output
is written per input shard when the whole job is through."""

from __future__ import annotations

from dataclasses import dataclass

from curation.config import Config
from curation.runner.jobs import RunContext, collect, job_items, loaded_rows, sources_of
from curation.runner.run_folder import check_upstream_complete, load_plan
from curation.runner.segments import write_task
from curation.runner.store import RunStore
from curation.stages.base import Stage


@dataclass
class GlobalContext:
    config: Config
    store: RunStore
    cache_uri: str  # OUT/<stage>/cache: intermediates reusable across reruns
    input_fingerprint: str  # changes exactly when the rows/columns fed to the stage change
    seed: int
    num_cpus: float


def run_global_stage(ctx: RunContext, stages: list[Stage]) -> None:
    import ray

    (stage,), store = stages, ctx.store
    prev = ctx.prev(stage.name)
    check_upstream_complete(store, prev)
    plan = [s["shard"] for s in load_plan(store)]
    done = store.done_records(stage.name)
    if all(done.get(sh, {}).get("fingerprint") == ctx.fps[stage.name] for sh in plan):
        return
    for sh in plan:
        store.clear_shard(stage.name, sh)
    base_done = store.done_records(prev)
    expected = {sh: base_done[sh]["kept"] for sh in plan}
    sources = sources_of(list(stage.required_columns()), ctx.before(stage.name))
    ds = loaded_rows(job_items(store, plan, prev, sources), prev, sources)
    gctx = GlobalContext(config=ctx.config, store=store, cache_uri=store.uri(stage.name, "cache"),
                         input_fingerprint=ctx.fps[prev], seed=ctx.config.run.seed,
                         num_cpus=ray.cluster_resources().get("CPU", 1))
    out = stage.run_global(ds, gctx)
    out = out.map_batches(write_task, batch_size=None, batch_format="pyarrow", num_cpus=0.25,
                          fn_kwargs={"out": store.out, "stages": [stage.name],
                                     "produces": {stage.name: list(stage.produces)}})
    collect(ctx, out, [stage.name], expected, all_at_end=True)

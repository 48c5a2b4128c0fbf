"""One curation run shared by the report, status, progress and browser tests (a pipeline run is
most of their time on 2 cores), and the report built from it once."""

from __future__ import annotations

import pytest

# The sample crawl through every non-detector stage: decode rejects, random-weight CLIP scores
# (histograms with data), an aesthetic threshold (a threshold reject), phash duplicates, clusters
# and balanced sampling. detect, headpose and text are left out on purpose: their model costs
# dominate on 2 cores, and the report must say "not computed in this run" for their columns.
STAGES = "run.stages=[ingest,decode,embed,quality,filter,phash,cluster,sample,shard]"
OVERRIDES = [STAGES, "embed.weights=random", "quality.weights=random", "filters.min_person_short_side=null",
             "ingest.shard_size=32", "shard.samples_per_shard=20",
             # ray_runtime.place() gives a task-mode decode a whole CPU beside the actor pools; on 2 CPUs
             # a fractional decode leaves room for the load/write tasks (see tests/stages/test_model_dag.py).
             "decode.num_cpus=0.2"]


@pytest.fixture(scope="session")
def report_run(ray_local, sample_crawl, tmp_path_factory):
    """(run folder, on_event events of [first run, rerun], the rerun's summary, its config)."""
    import statistics

    from curation.config import load_config
    from curation.manifests.store import RunStore
    from curation.pipeline import run_pipeline

    crawl, _ = sample_crawl
    out = tmp_path_factory.mktemp("report-run") / "out"
    # The aesthetic threshold is the median of this run's own random-weight scores, so about half
    # the scored rows are rejected whatever the random head outputs: first run without it, then
    # tighten it, which re-runs only filter and the stages after it.
    events: list[list[dict]] = [[], []]
    cfg = load_config(None, [*OVERRIDES, "filters.min_aesthetic=null"])
    run_pipeline(cfg, str(crawl), str(out), on_event=events[0].append)
    scores = [s for r in RunStore(str(out)).done_records("quality").values() if r["parts"]
              for s in RunStore.read_parts(r, ["aesthetic"]).column("aesthetic").to_pylist() if s is not None]
    threshold = statistics.median(scores)
    cfg = load_config(None, [*OVERRIDES, f"filters.min_aesthetic={threshold}"])
    summary = run_pipeline(cfg, str(crawl), str(out), reconfigure=True, on_event=events[1].append)
    return out, events, summary, cfg


@pytest.fixture(scope="session")
def report_html(report_run):
    from curation.report.build import build_report

    out = report_run[0]
    path = build_report(str(out))
    return out, path

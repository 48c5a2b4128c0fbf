"""Shared test setup: offline, quiet tools; one local Ray for the whole session; the sample crawl."""

from __future__ import annotations

import os
import tempfile

_TMP = tempfile.mkdtemp(prefix="curate-tests-")
for key, value in {
    "RAY_AUTH_MODE": "disabled",
    "YOLO_OFFLINE": "1",
    "YOLO_CONFIG_DIR": os.path.join(_TMP, "yolo"),
    "HF_HUB_OFFLINE": "1",
    "MPLCONFIGDIR": os.path.join(_TMP, "mpl"),
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    "OMP_NUM_THREADS": "1",
}.items():
    os.environ.setdefault(key, value)

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """A 2-CPU local Ray shared by every test that runs the pipeline in-process, with the
    workers' environment a `curate run` gives them (run.worker_env)."""
    import ray

    from curation.config import WORKER_ENV

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False,
                 runtime_env={"env_vars": dict(WORKER_ENV)})
        ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray


@pytest.fixture(scope="session")
def sample_crawl(tmp_path_factory):
    from curation.sample_crawl import build_sample_crawl

    root = tmp_path_factory.mktemp("crawl")
    info = build_sample_crawl(str(root), form="folder", seed=0)
    return root, info



@pytest.fixture(scope="session")
def base_run(ray_local, sample_crawl, tmp_path_factory):
    """The non-model DAG on the sample crawl, run once and shared: (OUT, ledger summary, crawl info).
    Tests that change a run work on a copy or a new folder."""
    from run_helpers import base_overrides

    from curation.runner.pipeline import run_pipeline
    from curation.stages.dag import load_config

    crawl, info = sample_crawl
    out = tmp_path_factory.mktemp("run") / "out"
    summary = run_pipeline(load_config(None, base_overrides("shard.samples_per_shard=40")), str(crawl), str(out))
    return out, summary, info

"""End to end across the product: the runner curates the sample crawl into shards written by the
`shard` stage, then `curate train pretrain` trains the tiny model on exactly those shards."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from curation.runner.pipeline import run_pipeline
from curation.stages.dag import load_config

pytestmark = pytest.mark.timeout(300)


def test_pretrain_on_shards_written_by_the_shard_stage(ray_local, sample_crawl, tmp_path, tiny_tree, curate_app):
    crawl, _ = sample_crawl
    curated = tmp_path / "curated"
    overrides = ["run.stages=[ingest,decode,filter,shard]", "filters.min_person_short_side=null",
                 "ingest.shard_size=32", "shard.samples_per_shard=30"]
    summary = run_pipeline(load_config(None, overrides), str(crawl), str(curated))
    manifest = curated / "shards" / "manifest.json"
    assert summary["balanced"] and json.loads(manifest.read_text())["counts"]["samples"] == summary["kept"] > 0

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_tree))
    out = tmp_path / "pretrain"
    result = CliRunner().invoke(curate_app, ["train", "pretrain", "--data", str(manifest), "--model", "sapiens2-tiny",
                                             "--out", str(out), "--config", str(config), "--set", "train.steps=3"])
    assert result.exit_code == 0, result.output
    assert "done: step 3" in result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(torch.isfinite(torch.tensor([r["loss"], r["mae"], r["cl"]])).all() for r in rows)
    # The trainer read the curated manifest itself, not a copy or a pattern.
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["data"] == str(manifest)

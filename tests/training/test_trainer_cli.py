"""End to end: `curate train pretrain` on WebDataset shards with a manifest, then a resume."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from curation.config import ConfigError
from curation.training.checkpoint import read_checkpoint

pytestmark = pytest.mark.timeout(120)


def _args(shards, out, config, *sets):
    args = [
        "train",
        "pretrain",
        "--data",
        str(shards),
        "--model",
        "sapiens2-tiny",
        "--out",
        str(out),
        "--config",
        str(config),
    ]
    for s in sets:
        args += ["--set", s]
    return args


def test_pretrain_through_the_cli_and_resume(tmp_path, shards, tiny_tree, curate_app):
    config = tmp_path / "tiny.yaml"
    tiny_tree["model"]["name"] = "sapiens2-0.4b"  # --model must win over the file
    config.write_text(yaml.safe_dump(tiny_tree))
    out = tmp_path / "run"
    runner = CliRunner()

    result = runner.invoke(
        curate_app, _args(shards, out, config, "train.steps=3", "cl.normalization=sinkhorn")
    )
    assert result.exit_code == 0, result.output
    assert "done: step 3" in result.output
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["model"]["name"] == "sapiens2-tiny"
    assert resolved["data"]["data"] == str(shards) and resolved["cl"]["normalization"] == "sinkhorn"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 3]
    for r in rows:
        assert r["images_per_s"] > 0 and r["tokens_per_s"] > r["images_per_s"] and r["lr"] > 0
        assert torch.isfinite(torch.tensor([r["loss"], r["mae"], r["cl"]])).all()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == [
        "checkpoint-00000002",
        "checkpoint-00000003",
        "checkpoint-last",
    ]

    # Same command with a longer schedule continues from the checkpoint.
    result = runner.invoke(
        curate_app, _args(shards, out, config, "train.steps=4", "cl.normalization=sinkhorn")
    )
    assert result.exit_code == 0, result.output
    assert "done: step 4" in result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 3, 4]
    assert read_checkpoint(out / "checkpoint-last")["step"] == 4


def test_config_mistakes_are_one_line_errors(tmp_path, shards, curate_app):
    runner = CliRunner()
    out = tmp_path / "bad"
    result = runner.invoke(
        curate_app, ["train", "pretrain", "--data", str(shards), "--out", str(out), "--set", "optim.lrr=1"]
    )
    # ConfigError is what `curate`'s main turns into one line and exit 2 (tests/test_cli.py)
    assert isinstance(result.exception, ConfigError)
    assert "optim.lrr" in str(result.exception) and "lr" in str(result.exception)
    result = runner.invoke(
        curate_app, ["train", "pretrain", "--data", str(shards), "--out", str(out), "--model", "vit-huge"]
    )
    assert isinstance(result.exception, ConfigError) and "unknown model" in str(result.exception)
    assert not (out / "checkpoint-last").exists()

"""Each head overfits a handful of labelled samples through `curate train head`, then `curate train eval`
reports a metric past the stated bar (and far from the untrained model's)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from curation.training.heads.evaluate import evaluate
from curation.training.heads.model import build_task_model

pytestmark = pytest.mark.timeout(120)

# task: (steps, extra --set, metric, bar, higher is better)
CASES = {
    "seg": (100, [], "mIoU", 0.4, True),
    "normal": (80, [], "mean_angular_error", 10.0, False),
    "albedo": (80, [], "PSNR", 20.0, True),
    "pointmap": (100, [], "L2", 1.5, False),
    "pose": (250, ["optim.lr=0.005"], "AP", 0.3, True),  # body AP reaches 1.0, face (sigma 0.02) ~0.5
}


@pytest.mark.parametrize("task", list(CASES))
def test_head_overfits_through_the_cli(task, tmp_path, labelled, head_config, head_tree, curate_app):
    steps, sets, key, bar, higher = CASES[task]
    shards = labelled(task)
    torch.manual_seed(0)
    untrained = evaluate(build_task_model(head_config(task)), head_config(task), str(shards))[key]

    config = tmp_path / "head.yaml"
    config.write_text(yaml.safe_dump(head_tree))
    out = tmp_path / "run"
    args = [
        "train",
        "head",
        "--task",
        task,
        "--data",
        str(shards),
        "--out",
        str(out),
        "--config",
        str(config),
    ]
    for s in [f"train.steps={steps}", *sets]:
        args += ["--set", s]
    result = CliRunner().invoke(curate_app, args)
    assert result.exit_code == 0, result.output
    assert f"done: step {steps}" in result.output

    report = tmp_path / "metrics.json"
    result = CliRunner().invoke(
        curate_app, ["train", "eval", "--checkpoint", str(out / "checkpoint-last.pt"), "--data", str(shards),
                    "--task", task, "--output", str(report)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads(report.read_text())
    assert metrics["task"] == task and metrics["samples"] == 4
    trained = metrics[key]
    if higher:
        assert trained >= bar > untrained, f"{task} {key}: untrained {untrained:.3f}, trained {trained:.3f}"
    else:
        assert trained <= bar < untrained, f"{task} {key}: untrained {untrained:.3f}, trained {trained:.3f}"

"""Failure signs in the metrics log and on the terminal; metrics.jsonl after a resume; the done line."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from typer.testing import CliRunner

from curation.training.health import FailureWatch, target_entropies
from curation.training.progress import MetricsLogger

pytestmark = pytest.mark.timeout(120)


def test_cl_at_ln_prototypes_is_flagged_only_past_warmup():
    watch = FailureWatch(warmup_steps=10, prototypes=128, targets_per_step=8)
    at_ln_k = {"cl": math.log(128) * 1.001, "mae": 1.0, "teacher_mi": 2.0}
    assert watch.check(10, at_ln_k) == ([], [])  # still warming up
    warnings, started = watch.check(20, at_ln_k)
    assert warnings == ["cl_at_ln_prototypes"] and "ln(128)" in started[0] and "step 20" in started[0]
    assert watch.check(30, at_ln_k) == (["cl_at_ln_prototypes"], [])  # still holds: no new message
    assert watch.check(40, {**at_ln_k, "cl": 3.0, "mae": 0.5})[0] == []


def test_mae_that_stops_falling_is_flagged():
    watch = FailureWatch(warmup_steps=0, prototypes=128, targets_per_step=8, mae_patience=3)
    for step, mae in enumerate([1.0, 0.9, 0.8], start=1):
        assert watch.check(step, {"mae": mae})[0] == []
    flagged = [watch.check(step, {"mae": 0.8})[0] for step in range(4, 7)]
    assert flagged == [[], [], ["mae_not_falling"]]


def test_teacher_collapse_is_flagged_from_the_information_its_targets_carry():
    spread = torch.eye(8, 128)  # 8 images, 8 different prototypes: MI ln 8
    one_hot = torch.zeros(8, 128)
    one_hot[:, 3] = 1.0  # every image on prototype 3
    same_soft = torch.softmax(torch.linspace(-3, 3, 128)[None], dim=-1).expand(8, -1)  # all alike, soft
    (row_s, mi_s), (_, mi_c), (row_u, mi_u) = map(target_entropies, (spread, one_hot, same_soft))
    assert row_s.item() == pytest.approx(0, abs=1e-6) and mi_s.item() == pytest.approx(math.log(8))
    assert mi_c.item() == pytest.approx(0, abs=1e-6) and mi_u.item() == pytest.approx(0, abs=1e-4)
    assert row_u.item() > 1.0  # a high per-image entropy does not hide the collapse
    watch = FailureWatch(warmup_steps=0, prototypes=128, targets_per_step=8)
    assert watch.check(1, {"teacher_mi": mi_s.item()})[0] == []
    for step, mi in ((2, mi_c), (3, mi_u)):
        assert watch.check(step, {"teacher_mi": mi.item()})[0] == ["teacher_collapse"]


def test_a_resumed_log_drops_the_rows_after_its_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "loss": 1.0} for s in (2, 4, 6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 8, "lo')  # torn by a crash
    logger = MetricsLogger(tmp_path, total_steps=10, start_step=4, mode="off")
    logger.log(6, {"loss": 0.5}, images=4, tokens=64)
    logger.close()
    steps = [json.loads(line)["step"] for line in path.read_text().splitlines()]
    assert steps == [2, 4, 6]


def test_a_run_logs_its_failure_signs_and_ends_with_the_logged_average(
    tmp_path, shards, tiny_tree, curate_app
):
    """A tiny run with 1-step warm-ups: its freshly initialised teacher gives every image of a batch
    the same targets (MI ~0), which metrics.jsonl and the terminal say; `done:` repeats the last
    row's averages."""
    tiny_tree["optim"]["warmup_steps"] = 1
    tiny_tree["cl"]["teacher_temp_warmup_steps"] = 1
    tiny_tree["train"].update(steps=4, log_every=2, progress="lines")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_tree))
    out = tmp_path / "run"
    args = ["train", "pretrain", "--data", str(shards), "--config", str(config), "--out", str(out)]
    result = CliRunner().invoke(curate_app, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    ln_k = math.log(tiny_tree["cl"]["prototypes"])
    for r in rows:
        assert 0 <= r["teacher_entropy"] <= ln_k + 1e-6 and 0 <= r["teacher_mi"] <= math.log(8) + 1e-6
        flagged = r.get("warnings", [])
        assert ("teacher_collapse" in flagged) == (r["teacher_mi"] < 0.1 * math.log(8))
        assert ("cl_at_ln_prototypes" in flagged) == (abs(r["cl"] - ln_k) < 0.01 * ln_k)
    assert "teacher_collapse" in rows[-1]["warnings"] and "warning: step" in result.output
    last = rows[-1]
    assert (
        f"done: step 4 loss {last['loss']:.4f} (mae {last['mae']:.4f}, cl {last['cl']:.4f};" in result.output
    )


def test_the_readme_default_on_a_cpu_warns_with_the_rate_to_expect(tiny_config):
    from curation.training.backbone import build_backbone
    from curation.training.health import cpu_warning

    cfg = tiny_config(
        "", "model.name=sapiens2-0.4b", "data.global_size=[1024,768]", "data.local_size=[256,192]"
    )
    with torch.device("meta"):
        backbone, tiny = build_backbone("sapiens2-0.4b"), build_backbone("sapiens2-tiny")
    said = cpu_warning(cfg, backbone)
    assert "sapiens2-0.4b (395M parameters) is meant for GPUs" in said
    rate = float(said.split("expect about ")[1].split(" img/s")[0])
    assert 0 < rate < 1  # a 0.4b step on a CPU is seconds per image at best
    assert cpu_warning(cfg, tiny) is None  # the tiny model is for CPUs


def test_eval_json_holds_null_where_a_metric_is_nan():
    from curation.training.cli import _json_safe

    metrics = {
        "miou": 0.5,
        "iou_hair": float("nan"),
        "per_class": [1.0, float("inf")],
        "more": {"x": float("nan")},
    }
    text = json.dumps(_json_safe(metrics), allow_nan=False)
    assert json.loads(text) == {"miou": 0.5, "iou_hair": None, "per_class": [1.0, None], "more": {"x": None}}

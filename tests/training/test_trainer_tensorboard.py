"""Optional TensorBoard: off by default; asked for without the package, a one-line refusal at start-up;
with the package, the logged scalars land in OUT/tensorboard/."""

from __future__ import annotations

import json
import sys

import pytest

from curation.config import ConfigError
from curation.training.config import TrainConfig
from curation.training.progress import MetricsLogger

pytestmark = pytest.mark.timeout(120)


def test_tensorboard_is_off_by_default():
    assert TrainConfig().tensorboard is False


@pytest.mark.parametrize("command", ["pretrain", "head"])
def test_asking_for_tensorboard_without_the_package_is_one_line_before_any_work(command, tmp_path, monkeypatch, capsys):
    # `curate`'s own entry point with torch.utils.tensorboard unimportable, as on a machine without
    # the package (it is not a dependency), whether or not this one has it.
    from curation.cli import main

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    out = tmp_path / "run"
    args = ["train", command, "--data", str(tmp_path / "none.json"), "--out", str(out)]
    args += ["--model", "sapiens2-tiny"] if command == "pretrain" else ["--task", "seg", "--set", "model.init=random"]
    monkeypatch.setattr(sys, "argv", ["curate", *args, "--set", "train.tensorboard=true"])
    with pytest.raises(SystemExit) as exit_:
        main()
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1, lines
    assert "tensorboard package is not installed" in lines[0] and "pip install tensorboard" in lines[0]
    assert "train.tensorboard=false" in lines[0] and "Traceback" not in lines[0]
    assert not out.exists()  # refused before the data, the model or the output folder


def test_the_logger_refuses_rather_than_skipping(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        MetricsLogger(tmp_path, 10, 0, mode="off", tensorboard=True)
    logger = MetricsLogger(tmp_path, 10, 0, mode="off", tensorboard=False)
    logger.log(1, {"loss": 1.5}, images=4, tokens=64)
    logger.close()
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["loss"] == 1.5
    assert not (tmp_path / "tensorboard").exists()


def test_with_the_package_the_scalars_are_in_the_event_file(tmp_path):
    pytest.importorskip("tensorboard", reason="the optional tensorboard package is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = MetricsLogger(tmp_path, 4, 0, mode="off", tensorboard=True)
    for step, loss in ((2, 0.9), (4, 0.5)):
        logger.log(step, {"loss": loss, "lr": 1e-3}, images=8, tokens=128)
    logger.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"loss", "lr", "images_per_s", "tokens_per_s"} <= set(events.Tags()["scalars"])
    assert [(e.step, round(e.value, 6)) for e in events.Scalars("loss")] == [(2, 0.9), (4, 0.5)]

"""Shards without the task's label: one start-up error, never an endless stream of skipped samples."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from curation.config import ConfigError
from curation.training.data import DataPosition, SampleStream, resolve_shards

pytestmark = pytest.mark.timeout(60)


def test_train_head_on_unlabelled_shards_stops_at_start_up(tmp_path, shards, curate_app):
    # `shards` are pretraining shards: jpg + json, no seg.png.
    out = tmp_path / "run"
    args = ["train", "head", "--task", "seg", "--data", str(shards), "--out", str(out)]
    result = CliRunner().invoke(curate_app, [*args, "--set", "model.init=random"])
    assert isinstance(result.exception, ConfigError), result.output
    message = str(result.exception)
    assert "\n" not in message
    assert "000000.tar" in message and "000000_0000.seg.png" in message
    assert "curate train labels" in message
    assert not (out / "config.yaml").exists()  # refused before any training set-up


def test_pointmap_names_every_missing_member(labelled, curate_app, tmp_path):
    # Normal shards have an image and normal.npy but neither pointmap.npy nor intrinsics.json.
    args = ["train", "head", "--task", "pointmap", "--data", str(labelled("normal")), "--out", str(tmp_path)]
    result = CliRunner().invoke(curate_app, [*args, "--set", "model.init=random"])
    assert isinstance(result.exception, ConfigError)
    assert "normal_0000.pointmap.npy, normal_0000.intrinsics.json" in str(result.exception)


def test_a_stream_whose_every_sample_fails_raises_instead_of_looping(shards):
    def broken(raw, gen):
        raise KeyError("seg.png")

    stream = SampleStream(resolve_shards(str(shards)), broken, DataPosition(1), shuffle_buffer=2)
    with pytest.raises(ValueError, match="none of the 24 samples of epoch 0 could be decoded"):
        next(iter(stream))

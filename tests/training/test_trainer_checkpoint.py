"""Checkpoint directories: numbered ones pruned to `keep`, checkpoint-last always complete, and
`curate train export` writing one consolidated file."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from curation.config import ConfigError
from curation.training import trainer
from curation.training.checkpoint import LAST, read_checkpoint

pytestmark = pytest.mark.timeout(120)


def test_keep_prunes_old_checkpoints_and_export_writes_one_file(tmp_path, shards, tiny_config, curate_app):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".checkpoint-00000009.tmp").mkdir()  # left behind by a crash mid-write
    cfg = tiny_config(shards, "train.steps=4", "train.ckpt_every=1", "train.keep_checkpoints=1")
    trainer.pretrain(cfg, out)
    names = sorted(p.name for p in out.iterdir() if p.name.startswith((".checkpoint", "checkpoint")))
    assert names == ["checkpoint-00000003", "checkpoint-00000004", LAST]
    assert (out / LAST).is_symlink() and (out / LAST).resolve().name == "checkpoint-00000004"

    target = tmp_path / "exported" / "model.pt"
    result = CliRunner().invoke(curate_app, ["train", "export", str(out / LAST), "--out", str(target)])
    assert result.exit_code == 0, result.output
    assert "exported step 4 (saved on 1 rank(s))" in result.output
    exported = torch.load(target, weights_only=True)
    joined = read_checkpoint(out / LAST)
    assert set(exported) == set(joined) == {"student", "teacher", "dino_loss", "step", "config", "world_size"}
    for part in ("student", "teacher"):
        for k, v in joined[part].items():
            torch.testing.assert_close(exported[part][k], v, rtol=0, atol=0)

    result = CliRunner().invoke(curate_app, ["train", "export", str(tmp_path), "--out", str(target)])
    assert isinstance(result.exception, ConfigError)
    assert "neither a checkpoint file nor a checkpoint directory" in str(result.exception)


def test_a_former_single_file_checkpoint_is_refused_not_silently_ignored(tmp_path, shards, tiny_config):
    out = tmp_path / "old"
    out.mkdir()
    (out / "checkpoint-last.pt").write_bytes(b"former layout")
    with pytest.raises(ConfigError, match="single-file checkpoint.*--no-resume"):
        trainer.pretrain(tiny_config(shards, "train.steps=1"), out)
    assert [h["step"] for h in trainer.pretrain(tiny_config(shards, "train.steps=1"), out, resume=False)] == [1]

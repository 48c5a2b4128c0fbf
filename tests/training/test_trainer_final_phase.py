"""The 4K variants' short final phase: the last `final_phase.steps` steps take the large global crops
(4096x3072 by default, reconstructed at 2K), and a run resumed inside the phase stays in it."""

from __future__ import annotations

import pytest
from crash_resume import crash_then_resume

from curation.training import trainer
from curation.training.config import PretrainConfig

pytestmark = pytest.mark.timeout(120)


def test_the_phase_defaults_to_the_last_steps_of_4k_runs_only():
    four_k = PretrainConfig.from_dict({"model": {"name": "sapiens2-1b-4k"}, "train": {"steps": 100000}})
    assert four_k.final_phase.steps == 1600 and four_k.final_phase.global_size == [4096, 3072]
    assert four_k.mae.output_scale == 0.5  # 4096x3072 crops reconstructed at 2048x1536
    assert PretrainConfig.from_dict({"train": {"steps": 100000}}).final_phase.steps == 0


def test_the_final_phase_switches_the_crops_and_resumes_inside_it(tmp_path, shards, tiny_config, monkeypatch):
    cfg = tiny_config(
        shards, "model.name=sapiens2-tiny-4k", "train.steps=3", "train.ckpt_every=1", "final_phase.steps=2",
        "final_phase.global_size=[128,128]", "final_phase.batch_size=2", "data.global_size=[64,64]",
        "data.local_size=[64,64]", "data.local_crops=1",
    )  # fmt: skip
    seen = []
    forward = trainer.SSLMetaArch.forward

    def recording(self, global_crops, local_crops, teacher_temp):
        seen.append(tuple(global_crops.shape))
        return forward(self, global_crops, local_crops, teacher_temp)

    monkeypatch.setattr(trainer.SSLMetaArch, "forward", recording)
    uninterrupted = trainer.pretrain(cfg, tmp_path / "a")
    assert [h["phase"] for h in uninterrupted] == ["main", "final", "final"]
    assert seen == [(4, 2, 3, 64, 64), (2, 2, 3, 128, 128), (2, 2, 3, 128, 128)]

    seen.clear()
    resumed = crash_then_resume(monkeypatch, lambda: trainer.pretrain(cfg, tmp_path / "b"))
    assert [h["step"] for h in resumed] == [3] and resumed[0]["phase"] == "final"
    assert seen[-1] == (2, 2, 3, 128, 128)
    for key in ("loss", "mae", "cl"):
        assert abs(resumed[0][key] - uninterrupted[2][key]) <= 1e-6, key

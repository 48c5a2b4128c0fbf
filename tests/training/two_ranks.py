"""One torchrun launch of 2 CPU ranks for all the distributed trainer tests (two_rank_worker.py):
FSDP pretraining, its resume on 2 ranks, DDP pretraining and FSDP head training."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from labelled_data import labelled_sample

PRETRAIN_SETS = ["train.progress=lines", "train.log_every=1"]
HEAD_STEPS = 3


@dataclass
class Job:
    stdout: str
    stderr: str


@dataclass
class TwoRankRuns:
    root: Path
    returncode: int
    stderr: str  # the whole launch's, for failure messages
    jobs: dict[str, Job]
    pretrain_config: Path
    head_tree: dict


def _split(text: str) -> dict[str, str]:
    parts = text.split("=== job ")[1:]
    return {p.split("\n", 1)[0]: p.split("\n", 1)[1] if "\n" in p else "" for p in parts}


def two_albedo_shards(root: Path, photos) -> Path:
    """2 shards x 2 albedo samples, without masks: each rank's shard is one 2-sample batch."""
    import webdataset as wds

    root.mkdir(parents=True)
    rng, entries = np.random.default_rng(0), []
    for s in range(2):
        path = root / f"{s:06d}.tar"
        with wds.TarWriter(str(path)) as writer:
            for i in range(2):
                sample = labelled_sample("albedo", photos[(2 * s + i) % len(photos)], 64, rng)
                writer.write({"__key__": f"albedo_{s}_{i}", **sample})
        blob = path.read_bytes()
        digest = hashlib.sha256(blob).hexdigest()
        entries.append({"path": path.name, "samples": 2, "bytes": len(blob), "sha256": digest})
    (root / "manifest.json").write_text(json.dumps({"shards": entries}))
    return root / "manifest.json"


def _pretrain_argv(shards, config: Path, out: Path, strategy: str, steps: int) -> list[str]:
    sets = [f"train.steps={steps}", f"train.strategy={strategy}", *PRETRAIN_SETS]
    argv = ["pretrain", "--data", str(shards), "--out", str(out), "--config", str(config)]
    return argv + [x for s in sets for x in ("--set", s)]


def launch(root: Path, shards: Path, photos, tiny: dict, head_tiny: dict) -> TwoRankRuns:
    tree = copy.deepcopy(tiny)
    tree["data"]["batch_size"] = 2
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(tree))

    manifest = two_albedo_shards(root / "albedo", photos)
    head = copy.deepcopy(head_tiny)
    head["task"], head["data"]["data"] = "albedo", str(manifest)
    head["optim"].update(warmup_steps=1, layer_decay=0.75)
    head["train"].update(steps=HEAD_STEPS, log_every=1, ckpt_every=HEAD_STEPS, strategy="fsdp", progress="lines")
    head["data"]["batch_size"] = 2  # per rank
    head_config = root / "head.yaml"
    head_config.write_text(yaml.safe_dump(head))

    jobs = [
        {"name": "fsdp", "argv": _pretrain_argv(shards, config, root / "a", "fsdp", 4)},
        {"name": "fsdp-resume", "argv": _pretrain_argv(shards, config, root / "b", "fsdp", 4),
         "resume_from": [str(root / "a"), 2]},
        {"name": "ddp", "argv": _pretrain_argv(shards, config, root / "ddp", "ddp", 2)},
        {"name": "head-fsdp", "argv": ["head", "--task", "albedo", "--data", str(manifest), "--out",
                                       str(root / "head"), "--config", str(head_config)]},
    ]  # fmt: skip
    jobs_file = root / "jobs.json"
    jobs_file.write_text(json.dumps(jobs))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    worker = Path(__file__).with_name("two_rank_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    result = subprocess.run(
        [*cmd, str(worker), str(jobs_file)], check=False, cwd=root, env=env, capture_output=True, text=True,
        timeout=200,
    )  # fmt: skip
    out, err = _split(result.stdout), _split(result.stderr)
    return TwoRankRuns(
        root, result.returncode, result.stderr,
        {name: Job(out.get(name, ""), err.get(name, "")) for name in (j["name"] for j in jobs)},
        config, head,
    )  # fmt: skip

"""Run several `curate train ...` commands in one torchrun launch of 2 CPU ranks (gloo).

Starting torchrun and its ranks costs seconds per launch on a 2-core machine, far more than the
tiny runs themselves; the distributed tests need five such runs, so they share one launch.
Usage: torchrun --nproc-per-node 2 two_rank_worker.py JOBS.json, where JOBS.json lists
{"name", "argv", optional "resume_from": [run directory, step]}. Before each job, rank 0 prints
a `=== job NAME` line to stdout and stderr, so the caller can split the output per job.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch.distributed as dist

from curation.training.checkpoint import LAST
from curation.training.cli import train_app


def checkpoint_at(src: Path, dst_out: Path, step: int) -> None:
    """A run directory whose newest checkpoint is `src`'s step `step`: a run that stopped there."""
    dst_out.mkdir(parents=True)
    name = f"checkpoint-{step:08d}"
    shutil.copytree(src / name, dst_out / name)
    (dst_out / LAST).symlink_to(name)


def main(jobs_file: str) -> None:
    # Joined here, so that the trainer finds a group and leaves it up between the jobs.
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    for job in json.loads(Path(jobs_file).read_text()):
        if rank == 0:
            print(f"=== job {job['name']}", flush=True)
            print(f"=== job {job['name']}", file=sys.stderr, flush=True)
            if "resume_from" in job:
                src, step = job["resume_from"]
                checkpoint_at(Path(src), Path(job["argv"][job["argv"].index("--out") + 1]), step)
        dist.barrier()
        train_app(job["argv"], standalone_mode=False)
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])

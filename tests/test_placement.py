"""place(): on 2 cores, actor pools and task stages of one fused segment must leave room for the
runner's load and write tasks (a whole-CPU decode beside five actor pools hung Ray Data)."""

import pytest

from curation import ray_runtime
from curation.config import load_config
from curation.stages.registry import get_stage

DAG = ["decode", "detect", "headpose", "embed", "quality", "text", "filter"]


def _stages(cfg):
    return [get_stage(name)(cfg) for name in DAG]


@pytest.mark.parametrize("cpus", [2.0, 4.0, 16.0])
def test_actors_and_tasks_leave_a_cpu_for_load_and_write(monkeypatch, cpus):
    monkeypatch.setattr(ray_runtime, "cluster_totals", lambda: (cpus, 0.0))
    stages = _stages(load_config(None, []))
    placed = ray_runtime.place(stages)
    actors = sum(placed[s.name].num_cpus * placed[s.name].pool_max for s in stages if s.stateful)
    assert actors <= cpus - 1.0 + 1e-9
    tasks = [placed[s.name].num_cpus for s in stages if not s.stateful]
    # One task of every task stage fits beside the actors with room for a write task (0.25), and
    # a load task (0.5) fits beside the actors and any one task stage.
    assert actors + sum(tasks) <= cpus - 0.25 + 1e-9
    assert actors + max(tasks) + 0.5 <= cpus + 1e-9


def test_a_segment_without_actors_keeps_whole_cpus_for_its_tasks(monkeypatch):
    monkeypatch.setattr(ray_runtime, "cluster_totals", lambda: (8.0, 0.0))
    cfg = load_config(None, [])
    placed = ray_runtime.place([get_stage("decode")(cfg), get_stage("filter")(cfg)])
    assert placed["decode"].num_cpus == 1.0 and placed["filter"].num_cpus == 0.5


def test_gpu_stages_take_gpu_fractions_and_leave_cpus_to_tasks(monkeypatch):
    monkeypatch.setattr(ray_runtime, "cluster_totals", lambda: (16.0, 1.0))
    stages = _stages(load_config(None, []))
    placed = ray_runtime.place(stages)
    assert placed["detect"].num_gpus > 0 and placed["embed"].num_gpus > 0
    assert placed["decode"].num_cpus > 0

"""place(): on 2 cores, actor pools and task stages of one fused segment must leave room for the
runner's load and write tasks (a whole-CPU decode beside five actor pools hung Ray Data)."""

import pytest

from curation.runner import placement as ray_runtime
from curation.stages.dag import get_stage, load_config

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


@pytest.mark.parametrize("cpus", [2.0, 4.0, 16.0])
def test_the_costliest_stage_gets_enough_actors_to_use_every_core(monkeypatch, cpus):
    # One single-threaded actor per stage capped the DAG at its costliest stage (text, ~60% of
    # the per-image CPU): it needs more than one core's worth of actors on any machine.
    monkeypatch.setattr(ray_runtime, "cluster_totals", lambda: (cpus, 0.0))
    stages = _stages(load_config(None, []))
    placed = ray_runtime.place(stages)
    stateful = [s for s in stages if s.stateful]
    costs = {s.name: s.effective_resources().cost for s in stateful}
    total = sum(costs.values())
    for s in stateful:
        p = placed[s.name]
        assert p.pool_max >= 1 and p.pool_min == p.pool_max
        # enough actors for its share of the cores, and never more than one actor beyond it
        assert p.pool_max * p.threads >= cpus * costs[s.name] / total - 0.1
        assert p.pool_max <= max(1, cpus * costs[s.name] / total + 1)
    assert placed["text"].pool_max >= 2
    assert placed["text"].pool_max >= max(placed[s.name].pool_max for s in stateful)


def test_two_cores_keep_one_chain_in_two_half_cpu_actors(monkeypatch):
    """The 2-core default (ENV.md: pools must never hold every CPU, or Ray Data deadlocks)."""
    from curation.runner.fusion import fusable_groups

    monkeypatch.setattr(ray_runtime, "cluster_totals", lambda: (2.0, 0.0))
    units = fusable_groups(_stages(load_config(None, [])), 0.0, fuse=True)
    [chain] = units
    assert ray_runtime.place(units)[chain.name] == ray_runtime.Placement(
        num_cpus=0.5, num_gpus=0.0, threads=1, pool_max=2, pool_min=2)


def _gpu_node_plan(monkeypatch, overrides=()):
    from curation.runner.fusion import fusable_groups

    monkeypatch.setattr(ray_runtime, "cluster_totals", lambda: (96.0, 8.0))
    units = fusable_groups(_stages(load_config(None, list(overrides))), 8.0, fuse=True)
    return units, ray_runtime.place(units)


def test_a_gpu_node_balances_its_gpu_pools_by_each_actors_time_per_image(monkeypatch):
    from curation.models.costs import gpu_actor_costs

    monkeypatch.delenv("CURATE_STAGE_COSTS", raising=False)
    units, placed = _gpu_node_plan(monkeypatch)
    gpu = {u.name: placed[u.name] for u in units if placed[u.name].num_gpus}
    assert sorted(gpu) == sorted(GPU_STAGES)
    stateful = [placed[u.name] for u in units if u.stateful]
    assert sum(p.num_gpus * p.pool_max for p in stateful) <= 8.0 + 1e-9
    assert sum(p.num_cpus * p.pool_max for p in stateful) <= 95.0 + 1e-9
    seconds = {n: gpu_actor_costs()[n].seconds for n in gpu}
    rate = min(p.pool_max / seconds[n] for n, p in gpu.items())  # the slowest pool sets the segment's rate
    for n, p in gpu.items():  # no pool holds a whole actor more than that rate needs
        assert (p.pool_max - 1) < rate * seconds[n]
    # and the GPUs are used: one more actor of the slowest pool would not fit
    slowest = min(gpu, key=lambda n: gpu[n].pool_max / seconds[n])
    assert sum(p.num_gpus * p.pool_max for p in stateful) + gpu[slowest].num_gpus > 8.0
    # Four pools of nearly equal size (detect 6, headpose 16, embed 6, text 6) were the old plan,
    # sized by GPU fraction: embed's host work is a fifth of detect's.
    assert gpu["headpose"].pool_max > gpu["text"].pool_max > gpu["detect"].pool_max > gpu["embed"].pool_max


def test_a_cheap_cpu_stage_between_gpu_pools_gets_few_actors(monkeypatch):
    # quality (~1 ms an image) alone on the CPU between embed and text took 96 actors at 0.5 CPU.
    units, placed = _gpu_node_plan(monkeypatch)
    assert placed["quality"].num_gpus == 0.0 and placed["quality"].pool_max <= 2
    # A costly stage sent to the CPU on the same node is sized to keep pace with the GPU pools.
    units, placed = _gpu_node_plan(monkeypatch, ["text.num_gpus=0"])
    [chain] = [u for u in units if "text" in u.name]
    assert chain.name == "quality+text+filter" and placed[chain.name].pool_max > 20


def test_measured_costs_from_a_gpu_node_resize_the_pools(monkeypatch, tmp_path):
    import json

    _, before = _gpu_node_plan(monkeypatch)
    measured = {"stages": {"text": {"device": "cuda", "ms_per_img": 400.0}},
                "host_split": {"embed": {"model_ms": 1.0, "host_ms": 60.0}}}
    (tmp_path / "costs.json").write_text(json.dumps(measured))
    monkeypatch.setenv("CURATE_STAGE_COSTS", str(tmp_path / "costs.json"))
    _, after = _gpu_node_plan(monkeypatch)
    assert after["text"].pool_max > before["text"].pool_max
    assert after["embed"].pool_max > before["embed"].pool_max
    assert after["headpose"].pool_max < before["headpose"].pool_max


@pytest.mark.parametrize("content", ["{not json", '{"stages": {"text": {"device": "cuda", "ms_per_img": 0}}}',
                                     '{"stages": {"text": {"device": "cuda"}}}', "[1, 2]"])
def test_a_bad_costs_file_stops_the_run_before_any_work(monkeypatch, tmp_path, content):
    from curation.config import ConfigError
    from curation.runner.pipeline import run_pipeline
    from curation.stages.dag import load_config

    (tmp_path / "costs.json").write_text(content)
    monkeypatch.setenv("CURATE_STAGE_COSTS", str(tmp_path / "costs.json"))
    (tmp_path / "crawl").mkdir()
    cfg = load_config(None, ["run.stages=[ingest,decode]", "filters.min_person_short_side=null"])
    with pytest.raises(ConfigError, match="CURATE_STAGE_COSTS=.*costs.json: not a bench/gpu_model_stages.py"):
        run_pipeline(cfg, str(tmp_path / "crawl"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    monkeypatch.setenv("CURATE_STAGE_COSTS", str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="missing.json"):
        run_pipeline(cfg, str(tmp_path / "crawl"), str(tmp_path / "out"))


def test_stages_without_a_cost_hint_get_equal_pools(monkeypatch):
    monkeypatch.setattr(ray_runtime, "cluster_totals", lambda: (16.0, 0.0))
    cfg = load_config(None, [])
    stages = [get_stage(n)(cfg) for n in ("detect", "headpose", "embed")]
    for s in stages:  # an instance attribute shadows the class's Resources
        s.resources = ray_runtime_resources(s, cost=None)
    placed = ray_runtime.place(stages)
    assert len({placed[s.name].pool_max for s in stages}) == 1
    assert sum(placed[s.name].num_cpus * placed[s.name].pool_max for s in stages) <= 15.0 + 1e-9


def test_concurrency_caps_a_pool(monkeypatch):
    monkeypatch.setattr(ray_runtime, "cluster_totals", lambda: (16.0, 0.0))
    stages = _stages(load_config(None, ["text.concurrency=3"]))
    placed = ray_runtime.place(stages)
    assert placed["text"].pool_max == 3


def ray_runtime_resources(stage, **changes):
    from dataclasses import replace

    return replace(stage.resources, **changes)


def _jpeg_rows(n: int):
    import io

    import pyarrow as pa
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, "JPEG")
    return pa.table({"id": [f"r{i}" for i in range(n)], "input_shard": ["s0"] * n,
                     "image": [buf.getvalue()] * n})


@pytest.mark.parametrize(("dag", "kept"), [
    ("run.stages=[ingest,decode,filter,shard]", False),  # nothing after decode reads the bytes
    ("run.stages=[ingest,decode,detect,filter,shard]", True),  # detect still needs them
])
def test_the_runner_sheds_image_bytes_after_their_last_reader(dag, kept):
    # The writer stores only the job's own columns; the bytes would only ride the object store.
    from curation.runner.stage_runner import StageRunner

    cfg = load_config(None, [dag, "decode.min_side=1"])
    out = StageRunner(get_stage("decode"), cfg, [], 1)(_jpeg_rows(3))
    assert ("image" in out.column_names) is kept
    assert out.column("width").to_pylist() == [64] * 3 and out.column("reject").to_pylist() == [None] * 3


GPU_STAGES = ("detect", "headpose", "embed", "text")


def test_a_stage_given_num_gpus_asks_ray_for_it_at_its_gpu_batch(monkeypatch):
    from curation.runner.fusion import fusable_groups

    monkeypatch.setattr(ray_runtime, "cluster_totals", lambda: (96.0, 8.0))
    cfg = load_config(None, ["text.num_gpus=0.5"])
    units = fusable_groups(_stages(cfg), 8.0, fuse=True)
    placed = ray_runtime.place(units)
    for u in units:
        if u.name in GPU_STAGES:
            r = u.effective_resources()
            assert placed[u.name].num_gpus == r.num_gpus > 0 and r.batch_size == type(u).resources.gpu_batch_size
    assert placed["text"].num_gpus == 0.5 and placed["quality"].num_gpus == 0.0


@pytest.mark.parametrize("gpus", [0.0, 8.0])
def test_the_cpu_fallback_is_explicit(monkeypatch, gpus):
    """No GPU in the cluster, or `num_gpus: 0` for a stage: that stage asks Ray for none, runs in
    the CPU chain at its CPU batch size (and, in the actor, on the CPU: test below)."""
    from curation.runner.fusion import StageGroup, fusable_groups

    monkeypatch.setattr(ray_runtime, "cluster_totals", lambda: (16.0, gpus))
    cfg = load_config(None, [f"{n}.num_gpus=0" for n in GPU_STAGES] if gpus else [])
    units = fusable_groups(_stages(cfg), gpus, fuse=True)
    [chain] = [u for u in units if isinstance(u, StageGroup)]
    assert [s.name for s in chain.stages] == DAG
    assert not any(s.on_gpu for s in chain.stages) and chain.effective_resources().batch_size == 16
    assert ray_runtime.place(units)[chain.name].num_gpus == 0.0


RAY_DEVICE = """
import ray
from curation.config import ConfigError
from curation.models.device import ray_gpus, torch_device
ray.init(num_cpus=1, num_gpus=1, include_dashboard=False, configure_logging=False, log_to_driver=False)

def where(preference):
    try:
        return ray_gpus(), torch_device(preference)
    except ConfigError as e:
        return ray_gpus(), "ConfigError: " + str(e)

print(ray_gpus())  # the driver is no Ray worker
for gpus in (0, 1):
    for preference in (None, "cpu", "cuda"):
        print(gpus, preference, ray.get(ray.remote(num_gpus=gpus)(where).remote(preference)))
"""


@pytest.mark.timeout(180)
def test_in_a_ray_worker_the_device_follows_the_gpus_ray_gave(tmp_path):
    """A Ray cluster that claims one GPU, on this CPU-only machine: a task given no GPU runs its
    model on the CPU and refuses `device: cuda`; a task given the GPU wants CUDA and, with torch
    seeing none, says so instead of quietly running on the CPU."""
    import os
    import subprocess
    import sys

    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a real GPU: the fake one would not be the only answer")
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}  # Ray refuses a GPU hidden by it
    env["RAY_AUTH_MODE"] = "disabled"
    out = subprocess.run([sys.executable, "-c", RAY_DEVICE], capture_output=True, text=True, timeout=150,
                         env=env, cwd=tmp_path, check=True).stdout.splitlines()
    assert out[0] == "None"
    rows = {tuple(line.split(" ", 2)[:2]): line.split(" ", 2)[2] for line in out[1:]}
    assert rows[("0", "None")] == "([], 'cpu')" and rows[("0", "cpu")] == "([], 'cpu')"
    assert "Ray gave this stage no GPU" in rows[("0", "cuda")]
    assert rows[("1", "cpu")] == "(['0'], 'cpu')"
    assert "Ray gave this stage GPU 0 but torch sees no CUDA device" in rows[("1", "None")]
    assert "torch sees no CUDA device" in rows[("1", "cuda")]

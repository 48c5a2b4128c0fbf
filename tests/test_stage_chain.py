"""Fused CPU stages (curation/runner/fusion.py): which stages share an actor, how place() sizes the
chain, and that a chain gives exactly what its stages give one after the other."""

import io

import pyarrow as pa
import pytest
from PIL import Image

from curation.runner import placement as ray_runtime
from curation.runner.fusion import FusedStageRunner, StageGroup, fusable_groups
from curation.runner.stage_runner import StageRunner
from curation.stages.dag import get_stage, load_config
from curation.stages.filters import parse_rules

pytestmark = pytest.mark.timeout(300)
DAG = ["decode", "detect", "headpose", "embed", "quality", "text", "filter"]


def _names(units):
    return [u.name for u in units]


def test_cpu_workers_run_the_whole_per_image_dag_in_one_chain():
    cfg = load_config(None, [])
    units = fusable_groups([get_stage(n)(cfg) for n in DAG], gpus=0.0, fuse=True)
    assert _names(units) == ["+".join(DAG)]
    assert isinstance(units[0], StageGroup) and units[0].stateful
    res = units[0].effective_resources()
    # the smallest batch of a model on pixels (16), not quality's 256 or filter's 4096
    assert res.batch_size == 16 and res.num_gpus == 0.0
    assert res.cost == pytest.approx(sum(get_stage(n).resources.cost or 0 for n in DAG))


def test_a_batch_size_the_user_sets_inside_a_chain_is_honoured():
    raised = load_config(None, ["detect.batch_size=48"])
    units = fusable_groups([get_stage(n)(raised) for n in DAG], gpus=0.0, fuse=True)
    assert units[0].effective_resources().batch_size == 48  # detect sees batches of 48
    lowered = load_config(None, ["embed.batch_size=8"])
    units = fusable_groups([get_stage(n)(lowered) for n in DAG], gpus=0.0, fuse=True)
    assert units[0].effective_resources().batch_size == 8  # the smallest model batch, now embed's


def test_gpu_stages_keep_their_own_pools_and_cpu_runs_between_them_fuse():
    cfg = load_config(None, [])
    units = fusable_groups([get_stage(n)(cfg) for n in DAG], gpus=1.0, fuse=True)
    # detect, headpose, embed and text take GPU fractions; quality (no GPU asked) sits alone
    # between two GPU pools; decode and filter stay tasks
    assert _names(units) == ["decode", "detect", "headpose", "embed", "quality", "text", "filter"]
    assert [s.on_gpu for s in units] == [False, True, True, True, False, True, False]
    assert [s.effective_resources().batch_size for s in units[1:4]] == [
        get_stage(n).resources.gpu_batch_size for n in ("detect", "headpose", "embed")]
    # text asked for no GPU: it runs on the CPU, in a chain with quality, at its CPU batch size
    cfg = load_config(None, ["text.num_gpus=0"])
    units = fusable_groups([get_stage(n)(cfg) for n in DAG], gpus=1.0, fuse=True)
    assert _names(units) == ["decode", "detect", "headpose", "embed", "quality+text+filter"]
    assert units[-1].effective_resources().batch_size == 16


def test_fusion_off_gives_one_unit_per_stage():
    cfg = load_config(None, ["run.fuse_cpu_stages=false"])
    assert _names(fusable_groups([get_stage(n)(cfg) for n in DAG], gpus=0.0, fuse=False)) == DAG


def test_tasks_without_a_model_are_not_wrapped():
    cfg = load_config(None, [])
    units = fusable_groups([get_stage("decode")(cfg), get_stage("filter")(cfg)], gpus=0.0, fuse=True)
    assert _names(units) == ["decode", "filter"]


@pytest.mark.parametrize("cpus", [2.0, 16.0])
def test_place_gives_a_chain_every_core_and_leaves_one_for_load_and_write(monkeypatch, cpus):
    monkeypatch.setattr(ray_runtime, "cluster_totals", lambda: (cpus, 0.0))
    cfg = load_config(None, [])
    [chain] = fusable_groups([get_stage(n)(cfg) for n in DAG], gpus=0.0, fuse=True)
    p = ray_runtime.place([chain])[chain.name]
    assert p.pool_max == p.pool_min == int(cpus) and p.threads == 1
    assert p.num_cpus * p.pool_max <= cpus - 1.0 + 1e-9


def _rows(sizes):
    blobs = []
    for k, (w, h) in enumerate(sizes):
        buf = io.BytesIO()
        Image.new("RGB", (w, h), (40 * k % 255, 90, 160)).save(buf, "JPEG")
        blobs.append(buf.getvalue())
    n = len(blobs)
    return pa.table({"id": [f"r{i}" for i in range(n)], "input_shard": ["s0"] * n, "image": blobs})


def test_a_chain_equals_its_stages_one_after_the_other():
    # decode rejects the too-small images; the early filter after decode rejects the narrow
    # ones; detect (a real YOLO architecture, random weights) must see only the survivors, in
    # batches of 4 although the chain is handed all 11 rows at once.
    cfg = load_config(None, ["run.stages=[ingest,decode,detect,filter,shard]", "detect.weights=random",
                             "filters.min_person_short_side=null", "filters.min_width=100",
                             "decode.min_side=32", "detect.batch_size=4"])
    rows = _rows([(160, 120)] * 5 + [(20, 20)] * 2 + [(64, 200)] * 2 + [(300, 200)] * 2)
    rules = parse_rules(cfg.filters)
    early = {"decode": [r for r in rules if r.column == "width"], "detect": [], "filter": rules}
    names = ["decode", "detect", "filter"]
    chain = FusedStageRunner([(get_stage(n), early[n], get_stage(n)(cfg).effective_resources().batch_size)
                              for n in names], cfg, 1)
    fused = chain(rows)
    table = rows
    for n in names:
        table = StageRunner(get_stage(n), cfg, early[n], 1)(table)
    assert fused.column_names == table.column_names
    key = [("id", "ascending")]
    assert fused.sort_by(key).to_pylist() == table.sort_by(key).to_pylist()
    by_id = {r["id"]: r for r in fused.to_pylist()}
    assert [by_id[f"r{i}"]["reject"] for i in (5, 6)] == ["too_small"] * 2
    assert [by_id[f"r{i}"]["reject"] for i in (7, 8)] == ["min_width"] * 2
    assert all(by_id[f"r{i}"]["person_boxes"] is None for i in range(5, 9))  # detect never saw them
    assert all(by_id[f"r{i}"]["person_boxes"] is not None for i in (*range(5), 9, 10))
    assert chain.runners[1][1] == 4


def test_the_loader_is_never_fused_into_the_chain(ray_local, tmp_path):
    # With the loader fused in, Ray Data bundled the job's input *items* (one per shard) up to
    # the chain's batch size of rows: one actor got every shard and the other idled.
    from ray.data import ActorPoolStrategy

    from curation.runner.jobs import LOAD_ARGS, loaded_rows
    from curation.runner.store import RunStore

    class CountRows:  # defined here: cloudpickle ships a local class by value to the workers
        def __init__(self, config):  # constructor args, as the chain has: the case that fused
            self.config = config

        def __call__(self, table: pa.Table) -> pa.Table:
            import os

            return pa.table({"pid": [os.getpid()], "rows": [table.num_rows]})

    store = RunStore(str(tmp_path))
    items = []
    for k in range(8):
        shard = f"s{k}"
        n = 16
        table = pa.table({"id": [f"{shard}-{i}" for i in range(n)], "input_shard": [shard] * n,
                          "reject": pa.nulls(n, pa.string()), "x": list(range(n))})
        part = store.write_part("ingest", shard, table)
        store.write_done("ingest", shard, {"fingerprint": "f", "in": n, "kept": n, "rejects": {}, "parts": [part]})
        rec = store.done_records("ingest")[shard]
        items.append({"shard": shard, "records": __import__("json").dumps(
            {"ingest": {k2: rec[k2] for k2 in ("_root", "stage", "shard", "parts")}})})
    ds = loaded_rows(items, "ingest", {"ingest": ["x"]})
    # the chain's num_cpus equal to the loader's: exactly the case that fused before
    ds = ds.map_batches(CountRows, fn_constructor_args=({"a": 1},), batch_size=32, batch_format="pyarrow",
                        num_cpus=LOAD_ARGS["num_cpus"], compute=ActorPoolStrategy(min_size=2, max_size=2))
    out = ds.take_all()
    ops = [line for line in ds.stats().splitlines() if line.startswith("Operator")]
    assert not any("load_task->" in op for op in ops), ops
    assert any("MapBatches(load_task): 8 tasks" in op for op in ops), ops  # one load task per shard
    assert sum(r["rows"] for r in out) == 8 * 16
    assert max(r["rows"] for r in out) <= 32  # batches of rows, not bundles of shards


def test_quality_reuses_embeds_clip_when_they_share_an_actor(monkeypatch, tmp_path):
    # Building a second ViT-B-32 for quality's prompts cost each fused actor ~2-3 CPU-s and ~600 MB.
    from curation.models.clip import ClipModel
    from curation.models.realism import RealismScorer, embed_classes

    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))  # nothing cached yet
    built = []
    real_init = ClipModel.__init__

    def counting_init(self, *args, **kwargs):
        built.append(kwargs.get("image_tower", True))
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(ClipModel, "__init__", counting_init)
    cfg = load_config(None, ["embed.weights=random", "quality.weights=random"])
    chain = FusedStageRunner([(get_stage("embed"), [], 32), (get_stage("quality"), [], 32)], cfg, 1)
    assert built == [True]  # embed's model only
    embed, quality = (runner.stage for runner, _ in chain.runners)
    assert quality.realism.classes == pytest.approx(RealismScorer(*embed_classes(embed.model)).classes, abs=1e-6)
    del chain, embed
    import gc

    gc.collect()
    # on its own (another actor, or `--stage quality`), quality loads what the first one cached
    get_stage("quality")(cfg).setup()
    assert built == [True]
    # and with nothing cached, builds its text tower (image tower left out) once
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "empty"))
    get_stage("quality")(cfg).setup()
    assert built == [True, False]

"""The DAG is one list (stages/dag.py), and the package's imports run one way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from curation.stages import dag
from curation.stages.base import ModelStage

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[1]


def test_every_stage_is_in_the_dag_once_and_reads_only_earlier_columns():
    stages = dag.all_stages()
    assert list(stages) == list(dag.DAG) and len(set(dag.DAG)) == len(dag.DAG)
    produced: set[str] = set()
    for name, cls in stages.items():
        stage = cls(dag.load_config(None, []))
        missing = set(stage.required_columns()) - produced
        assert not missing, f"{name} reads {missing}, which no earlier stage produces"
        produced |= set(cls.produces)
    assert [dag.producer_of(c) for c in ("image", "clip", "selected")] == ["ingest", "embed", "sample"]


def test_model_stages_share_one_start_up_path():
    cfg = dag.load_config(None, ["detect.weights=random", "embed.weights=random", "quality.weights=random"])
    models = [n for n, cls in dag.all_stages().items() if issubclass(cls, ModelStage)]
    assert models == ["detect", "headpose", "embed", "quality", "text"]
    for name in models:
        stage = dag.get_stage(name)(cfg)
        assert stage.params is cfg.stages[name] and stage.config is cfg
        assert all(w.stage == name for w in stage.weight_files())
    assert dag.get_stage("detect")(cfg).random_weights and not dag.get_stage("text")(cfg).random_weights


def test_fingerprints_change_from_the_changed_stage_on():
    base = dag.load_config(None, [])
    changed = dag.load_config(None, ["filters.min_aesthetic=6"])
    names = dag.run_stages(base)
    a, b = dag.fingerprints(base, names), dag.fingerprints(changed, names)
    first = names.index("filter")
    assert all(a[n] == b[n] for n in names[:first])
    assert all(a[n] != b[n] for n in names[first:])


def test_no_import_circle_and_no_import_from_a_lower_layer_up():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_graph.py"), "--check"],
                         check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "upward=0 circles=0" in out.stdout

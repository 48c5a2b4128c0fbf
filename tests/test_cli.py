"""The `curate` command as a user meets it: registry listing, status, and one-line errors."""

import json
import subprocess
import sys

import pytest
from run_helpers import base_overrides

from curation.stages.dag import load_config

pytestmark = pytest.mark.timeout(300)


def curate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curation.cli", *args], capture_output=True, text=True, timeout=120,
                          check=False)


def test_stages_lists_the_registry_in_dag_order():
    res = curate("stages", "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    names = [r["name"] for r in rows]
    assert names[0] == "ingest" and names[-1] == "shard"
    assert {"ingest", "decode", "filter", "shard"} <= set(names)
    decode = next(r for r in rows if r["name"] == "decode")
    assert decode["produces"] == ["width", "height", "format", "mode", "orientation"]
    assert "decompression_bomb" in decode["rejects"] and decode["num_cpus"] == 1.0


def test_stages_piped_prints_the_dag_in_full():
    from curation.stages.dag import DAG

    res = curate("stages")  # captured: not a terminal
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:1 + len(DAG)]] == list(DAG)
    assert "…" not in res.stdout and "no_image_in_sample" in res.stdout  # ingest's last reject, uncut
    assert "in its own batch size" in lines[-1]


def test_one_stage_run_says_what_comes_next(ray_local, sample_crawl, tmp_path):
    from typer.testing import CliRunner

    from curation.cli import app

    crawl, _ = sample_crawl
    out = tmp_path / "out"
    args = ["run", "-i", str(crawl), "-o", str(out), "--stage", "ingest"]
    res = CliRunner().invoke(app, [*args, *[a for o in base_overrides() for a in ("--set", o)]])
    assert res.exit_code == 0, res.output[-2000:]
    assert "does not balance" not in res.output
    assert "run incomplete: 'decode' comes next" in res.output  # the funnel's next stage, by name
    assert f"--stage decode --input {out} --output {out}" in res.output.replace("\n", "")


def test_status_json_matches_the_ledger(base_run):
    out = base_run[0]
    res = curate("status", str(out), "--json")
    assert res.returncode == 0, res.stderr
    status = json.loads(res.stdout)
    ledger = json.loads((out / "ledger.json").read_text())
    assert status["stages"] == ledger["stages"] and status["inputs"] == ledger["inputs"]
    assert status["stages"]["decode"]["shards_done"] == status["stages"]["decode"]["shards_total"]


@pytest.mark.parametrize("args,needle", [
    (["run", "-i", "/nonexistent/crawl", "-o", "/tmp/x"], "input not found: /nonexistent/crawl; --input takes"),
    (["run", "-i", "/nonexistent/out", "-o", "/tmp/x", "--stage", "filter"], "--input takes a run folder"),
    (["run", "-i", ".", "-o", "/tmp/x", "--set", "decod.min_side=3"], "did you mean 'decode'"),
    (["run", "-i", ".", "-o", "/tmp/x", "--set", "decode.min_sid=3"], "did you mean 'min_side'"),
    (["run", "-i", ".", "-o", "/tmp/x", "--stage", "detekt"], "unknown stage 'detekt' (did you mean 'detect'?)"),
    (["run", "-i", ".", "-o", "/tmp/x", "--set", "run.stages=[ingest,decod]"], "did you mean 'decode'"),
    (["run", "-i", ".", "-o", "/tmp/x", "--config", "/nonexistent.yaml"], "config file not found"),
    (["run", "-i", ".", "-o", "/tmp/x", "--set", "run.stages=[ingest,detect,shard]",
      "--set", "detect.weights=/nonexistent/yolo.pt"], "/nonexistent/yolo.pt does not exist; fix the path"),
    (["status", "/nonexistent/out"], "not a run folder"),
    (["report", "/nonexistent/out"], "not a run folder"),
    (["manifest", "verify", "/nonexistent/manifest.json"], "manifest not found"),
])
def test_user_mistakes_are_one_line_without_traceback(args, needle):
    res = curate(*args)
    assert res.returncode == 2
    assert needle in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_missing_default_weights_name_the_file_and_how_to_stage_it(sample_crawl, tmp_path):
    """A fresh offline node: no $CURATE_WEIGHTS, empty library caches."""
    import os

    crawl, _ = sample_crawl
    env = {k: v for k, v in os.environ.items() if k != "CURATE_WEIGHTS"}
    env.update(YOLO_CONFIG_DIR=str(tmp_path / "yolo"), HF_HOME=str(tmp_path / "hf"),
               TORCH_HOME=str(tmp_path / "torch"), YOLO_OFFLINE="1", HF_HUB_OFFLINE="1")
    res = subprocess.run([sys.executable, "-m", "curation.cli", "run", "-i", str(crawl), "-o", str(tmp_path / "out"),
                          "--set", "run.stages=[ingest,decode,detect,shard]"], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path, env=env, check=False)
    assert res.returncode == 2, res.stderr
    assert "missing model weights" in res.stderr and "yolo11n.pt" in res.stderr
    assert "curate weights fetch" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # refused before any work


def test_output_from_another_config_is_refused_with_what_to_do(sample_crawl, tmp_path):
    from curation.runner.run_folder import init_run_folder
    from curation.runner.store import RunStore

    crawl, _ = sample_crawl
    out = tmp_path / "out"
    # The run folder header exactly as `curate run` writes it before starting Ray.
    init_run_folder(RunStore(str(out)), load_config(None, base_overrides()), str(crawl), None, False)
    changed = [arg for o in base_overrides("decode.min_side=100") for arg in ("--set", o)]
    res = curate("run", "-i", str(crawl), "-o", str(out), *changed)
    assert res.returncode == 2
    assert "written with a different config (changed: decode)" in res.stderr
    assert "--reconfigure" in res.stderr and "new --output" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_debug_shows_the_traceback():
    res = curate("--debug", "run", "-i", ".", "-o", "/tmp/x", "--set", "decod.min_side=3")
    assert res.returncode != 0 and "Traceback" in res.stderr and "did you mean 'decode'" in res.stderr


def test_input_mistakes_are_one_line(tmp_path):
    """An http:// input, an unreachable bucket and a malformed URL list: one line each, exit 2."""
    bad = tmp_path / "urls.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    noisy = tmp_path / "list.csv"
    noisy.write_text("caption\nno url column here\n")
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
           "AWS_EC2_METADATA_DISABLED": "true"}
    cases = [(["run", "-i", "http://127.0.0.1:9/urls.csv", "-o", str(tmp_path / "o1")], {},
              "unsupported storage scheme http://"),
             (["run", "-i", str(bad), "-o", str(tmp_path / "o2")], {}, "not a readable URL list"),
             (["run", "-i", str(noisy), "-o", str(tmp_path / "o3")], {}, "no 'url' column"),
             (["run", "-i", "s3://no-such-bucket/crawl/", "-o", str(tmp_path / "o4")], env, "cannot reach s3://")]
    for args, extra, needle in cases:
        res = curate_env(extra, *args, *[a for s in base_overrides() for a in ("--set", s)])
        assert res.returncode == 2, (args, res.stderr)
        assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert "Traceback" not in res.stderr


def curate_env(extra: dict, *args: str) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "curation.cli", *args], capture_output=True, text=True, timeout=120,
                          check=False, env={**os.environ, **extra})

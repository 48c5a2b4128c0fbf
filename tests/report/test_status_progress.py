"""`curate status` against the ledger, and the progress events and displays of `curate run`."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections import Counter

import pytest
from rich.console import Console

from curation.progress.live import LineProgress, LiveProgress, progress_for

pytestmark = pytest.mark.timeout(300)


def curate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curation.cli", *args], capture_output=True, text=True, check=False,
                          timeout=120)


def test_status_json_is_the_ledger(report_run):
    out = report_run[0]
    res = curate("status", str(out), "--json")
    assert res.returncode == 0, res.stderr
    status = json.loads(res.stdout)
    ledger = json.loads((out / "ledger.json").read_text())
    assert status == ledger
    assert status["balanced"] and status["complete"]
    assert status["inputs"] == 97 and status["kept"] < status["inputs"]
    assert status["stages"]["decode"]["rows_per_s"] > 0  # throughput from the stage's job timing


def test_status_table_shows_every_stage_with_rejects_and_throughput(report_run):
    out = report_run[0]
    ledger = json.loads((out / "ledger.json").read_text())
    res = curate("status", str(out))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "img/s" in res.stdout and f"inputs {ledger['inputs']} -> kept {ledger['kept']}" in res.stdout
    for name, s in ledger["stages"].items():
        row = next(line for line in lines if line.strip("│┃ ").startswith(name + " "))
        assert f"{s['shards_done']}/{s['shards_total']}" in row and str(s["kept"]) in row, row
    assert "min_height" in res.stdout and "truncated" in res.stdout
    assert f"{ledger['shards']['samples']} samples" in res.stdout


def test_shard_events_add_up_to_the_ledger(report_run):
    """Per stage, the counts carried by `shard_done` events sum to the ledger: the live display
    shows the numbers the run folder ends up with."""
    out, events = report_run[:2]
    ledger = json.loads((out / "ledger.json").read_text())
    for name, s in ledger["stages"].items():
        counts = [e["counts"][name] for e in events if e["event"] == "shard_done" and name in e["counts"]]
        assert counts, name
        assert sum(c["in"] for c in counts) == s["in"], name
        assert sum(c["kept"] for c in counts) == s["kept"], name
        assert dict(sum((Counter(c["rejects"]) for c in counts), Counter())) == s["rejects"], name
    shard = [e["counts"]["shard"] for e in events if e["event"] == "shard_done" and e["stages"] == ["shard"]]
    assert sum(c["kept"] for c in shard) == ledger["shards"]["samples"]
    starts = [e["stages"] for e in events if e["event"] == "job_start"]
    assert starts == [["ingest"], ["decode", "embed", "quality", "filter"], ["phash"], ["cluster"], ["sample"],
                      ["shard"]]


def test_line_progress_prints_a_summary_line_per_stage(report_run):
    buf = io.StringIO()
    progress = LineProgress(Console(file=buf, width=200, force_terminal=False), every_s=3600.0)
    for e in report_run[1]:
        progress(e)
    text = buf.getvalue()
    ledger = json.loads((report_run[0] / "ledger.json").read_text())
    decode = ledger["stages"]["decode"]
    assert "decode+embed+quality+filter: 4/4 shards, 97 images" in text
    assert f"  decode: in 97, kept {decode['kept']}, rejects " in text and "truncated 1" in text
    assert "img/s" in text
    assert "\x1b[" not in text  # no terminal control codes in logs


def test_live_progress_renders_rows_rejects_and_eta():
    buf = io.StringIO()
    console = Console(file=buf, width=160, force_terminal=True, color_system=None)
    with LiveProgress(console) as live:
        live({"event": "job_start", "stages": ["decode", "embed"], "total": 4, "rows": 40})
        for done in (1, 2):
            live({"event": "shard_done", "stages": ["decode", "embed"], "shard": f"s{done}", "rows": 10,
                  "done": done, "total": 4, "seconds": 5.0 * done,
                  "counts": {"decode": {"in": 10, "kept": 9, "rejects": {"truncated": 1}},
                             "embed": {"in": 9, "kept": 9, "rejects": {}}}})
        table = live.render()
    job = live.jobs["decode+embed"]
    assert (job.done, job.total, job.rows) == (2, 4, 20)
    assert job.rate() == pytest.approx(2.0) and job.eta() == pytest.approx(10.0)
    assert table.row_count == 2  # one row per stage of the fused job
    text = buf.getvalue()
    assert "truncated 2" in text and "2/4" in text and "10s" in text and "2.0" in text


def test_progress_is_line_oriented_without_a_terminal():
    assert isinstance(progress_for(Console(file=io.StringIO(), force_terminal=False)), LineProgress)


def test_ray_lines_go_to_the_run_log_and_ours_stay_on_the_terminal(tmp_path, capfd):
    import logging
    import os
    import sys

    from curation.progress.ray_log import ray_lines_to

    out = tmp_path / "out"
    out.mkdir()
    with ray_lines_to(str(out)) as log:
        os.write(2, b"core_worker.cc:2465: Actor with class name ...\n")  # how Ray's C++ core writes
        logging.getLogger("ray.data").warning("Progress bars disabled.")
        print("shard 1/4 done", file=sys.stderr)
    err = capfd.readouterr().err
    assert "core_worker" not in err and "Progress bars" not in err and "shard 1/4 done" in err
    assert log.path == str(out / "logs" / "ray.log")
    text = (out / "logs" / "ray.log").read_text()
    assert "core_worker.cc" in text and "Progress bars disabled." in text
    with ray_lines_to(str(tmp_path / "never-made")) as quiet:
        pass
    assert quiet.path is None and not (tmp_path / "never-made").exists()  # nothing said, nothing left

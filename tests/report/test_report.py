"""The HTML report's content, read back with the standard library's HTML parser."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from curation.runner.store import RunStore

pytestmark = pytest.mark.timeout(300)


class Page(HTMLParser):
    """Collects the elements the tests look at: images, plot figures, gallery tiles, sections."""

    def __init__(self, text: str):
        super().__init__()
        self.imgs: list[dict] = []
        self.plots: list[str] = []
        self.tiles: list[str] = []
        self.sections: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
        if "data-plot" in a:
            self.plots.append(a["data-plot"])
        if "data-id" in a:
            self.tiles.append(a["data-id"])
        if tag == "section":
            self.sections.append(a["id"])


def _rows(out, stage, columns):
    store = RunStore(str(out))
    return [r for rec in store.done_records(stage).values() if rec["parts"]
            for r in RunStore.read_parts(rec, ["id", "reject", *columns]).to_pylist()]


def test_report_has_every_section_and_embeds_every_image(report_html):
    _, index = report_html
    text = Path(index).read_text()
    page = Page(text)
    assert page.sections == ["run", "funnel", "rejects", "scores", "clusters", "duplicates", "galleries", "config"]
    assert page.imgs and all(i["src"].startswith("data:image/") for i in page.imgs)
    assert "http://" not in text and "https://" not in text  # nothing to fetch when viewed


def test_histograms_drawn_for_computed_columns_and_marked_for_absent_ones(report_html):
    _, index = report_html
    text = Path(index).read_text()
    page = Page(text)
    drawn = {i["alt"] for i in page.imgs if i["src"].startswith("data:image/png")}
    assert {"aesthetic score", "realism score", "funnel", "rejects by reason", "cluster sizes"} <= drawn
    # detect, headpose and text are not in this run's DAG
    for title in ("largest person, box short side (px)", "text area (fraction of the image)",
                  "head yaw (degrees)", "head pitch (degrees)"):
        assert title in page.plots and title not in drawn
        assert f"{title}: not computed in this run" in text


def test_galleries_cover_kept_each_reject_reason_and_each_top_cluster(report_html):
    out, index = report_html
    text = Path(index).read_text()
    ledger = json.loads((out / "ledger.json").read_text())
    for reason in ledger["rejects"]:
        assert f"Rejected: {reason} <small>" in text, reason
    kept = ledger["kept"]
    assert f"Kept <small>({min(24, kept)} of {kept} kept images" in text
    clusters = {r["cluster_l1"] for r in _rows(out, "cluster", ["cluster_l1"]) if r["cluster_l1"] is not None}
    shown = {c for c in clusters if f"<h3>Cluster {c} <small>" in text}
    assert shown == clusters or len(shown) == 12
    # broken files have no pixels: they get a text tile, never a broken <img>
    assert "no preview: the bytes do not decode" in text


def test_duplicate_groups_show_the_kept_copy_beside_its_duplicates(report_html):
    out, index = report_html
    page = Page(Path(index).read_text())
    dups = [r for r in _rows(out, "phash", ["dup_of"]) if r["dup_of"] is not None and r["dup_of"] != r["id"]]
    assert dups, "the sample crawl holds near duplicates (dup_ items)"
    for r in dups[:5]:
        i = page.tiles.index(r["dup_of"])  # the group's first tile is the kept copy
        assert r["id"] in page.tiles[i:i + 20]
        assert r["reject"] in ("exact_duplicate", "near_duplicate")


def test_report_shows_the_resolved_config_and_code_version(report_html):
    out, index = report_html
    text = Path(index).read_text()
    run = json.loads((out / "run.json").read_text())
    assert "min_height: 700" in text and "samples_per_shard: 20" in text
    assert run["code_version"] in text and run["config_hash"] in text


def test_report_command_writes_opens_and_refuses_a_non_run(report_run, tmp_path):
    out = report_run[0]
    target = tmp_path / "rep"
    # --open goes through Python's webbrowser, which runs $BROWSER first: a script that notes the URL.
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(0o755)
    env = {**os.environ, "BROWSER": str(browser)}
    res = subprocess.run([sys.executable, "-m", "curation.cli", "report", str(out), "--out", str(target), "--open"],
                         capture_output=True, text=True, timeout=120, check=False, env=env)
    assert res.returncode == 0, res.stderr
    assert (target / "index.html").stat().st_size > 10_000 and str(target / "index.html") in res.stdout
    assert opened.read_text().strip() == (target / "index.html").resolve().as_uri()
    res = subprocess.run([sys.executable, "-m", "curation.cli", "report", str(tmp_path)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 2 and "not a run folder" in res.stderr and "Traceback" not in res.stderr


def test_report_of_an_unfinished_run_marks_what_is_missing(report_run):
    """Only ingest had run (a crash, or `--stage ingest`): the report still builds, says so, and
    shows no plot for columns no stage has written yet."""
    text = report_run[4]
    assert "run incomplete: some stages have shards left" in text
    assert "aesthetic score: not computed in this run" in text
    assert "cluster sizes: not computed in this run" in text
    assert "Kept <small>(24 of 97 kept images" in text  # everything ingest read is kept so far
    page = Page(text)
    assert len(page.tiles) == 24  # the one gallery there is: kept rows (broken files included, as text tiles)
    thumbs = [i for i in page.imgs if i["src"].startswith("data:image/jpeg")]
    assert len(thumbs) + text.count('<div class="noimg">') == 24 and len(thumbs) >= 18


def test_a_random_weights_run_says_so_above_everything_else(report_html):
    from curation.report.html import random_weights_banner

    _, index = report_html
    text = Path(index).read_text()
    banner = text.index('class="banner"')
    assert banner < text.index("<h1>")
    assert "Random weights:</strong> embed, quality ran" in text[banner:text.index("<h1>")]
    assert random_weights_banner([]) == ""  # a run with real weights shows none

"""The report's histograms of the model columns (largest person, text area, head yaw and pitch),
drawn from a run that has them. The shared report run (conftest.py) leaves these stages out, so
there they are only ever "not computed"; here a small run of real photos goes through detect
(random YOLO weights: no boxes, so headpose searches whole images), headpose (MTCNN, whose weights
ship with facenet-pytorch) and text (RapidOCR), with a text threshold that rejects some rows."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
from stages.media import jpeg, load_photos  # the real photos the model-stage tests use

from curation.runner.store import RunStore

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]  # ~40-60 s on 2 cores: three model start-ups

TEXT_MAX = 0.02
OVERRIDES = ["run.stages=[ingest,decode,detect,headpose,text]", "detect.weights=random", "detect.imgsz=320",
             "filters.min_person_short_side=null", f"filters.max_text_area={TEXT_MAX}", "ingest.shard_size=4"]
# (stage, column, the histogram's title on the page)
COLUMNS = [("detect", "max_person_short_side", "largest person, box short side (px)"),
           ("text", "text_area", "text area (fraction of the image)"),
           ("headpose", "head_yaw", "head yaw (degrees)"), ("headpose", "head_pitch", "head pitch (degrees)")]


class Figures(HTMLParser):
    """data-plot figure -> its data- attributes, plus `img` (the alt of a PNG inside, or None)."""

    def __init__(self, text: str):
        super().__init__()
        self.figures: dict[str, dict] = {}
        self.current: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "figure":
            self.current = a["data-plot"]
            self.figures[self.current] = {**a, "img": None}
        elif tag == "img" and self.current and a.get("src", "").startswith("data:image/png;base64,"):
            self.figures[self.current]["img"] = a["alt"]

    def handle_endtag(self, tag):
        if tag == "figure":
            self.current = None


@pytest.fixture(scope="module")
def model_run(ray_local, tmp_path_factory):
    from curation.report.build import build_report
    from curation.runner.pipeline import run_pipeline
    from curation.stages.dag import load_config

    photos = load_photos()
    root = tmp_path_factory.mktemp("model-report")
    crawl = root / "crawl"
    crawl.mkdir()
    for name in ("astronaut", "hopper", "bus", "zidane", "coffee_sale", "chelsea", "coffee"):
        (crawl / f"{name}.jpg").write_bytes(jpeg(photos[name]))
    (crawl / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")  # rejected before any model column
    out = root / "out"
    run_pipeline(load_config(None, OVERRIDES), str(crawl), str(out))
    return out, Path(build_report(str(out))).read_text()


def _rows(out: Path) -> dict[str, dict]:
    """id -> the row's final reject and its model columns, read from each stage's own parts (not
    through the report's loader, which is what is under test)."""
    store = RunStore(str(out))
    wanted = {"ingest": [], "decode": [], "detect": ["max_person_short_side"], "text": ["text_area"],
              "headpose": ["head_yaw", "head_pitch"]}
    rows: dict[str, dict] = {}
    for stage, columns in wanted.items():
        for rec in store.done_records(stage).values():
            if not rec["parts"]:
                continue
            for r in RunStore.read_parts(rec, ["id", "reject", *columns]).to_pylist():
                row = rows.setdefault(r["id"], {"reject": None})
                row["reject"] = row["reject"] or r["reject"]  # a row stops at its first reject
                row.update({c: r[c] for c in columns})
    return rows


def test_model_histograms_are_drawn_with_the_runs_counts(model_run):
    out, text = model_run
    rows = _rows(out)
    assert len(rows) == 8
    figures = Figures(text).figures
    for _, column, title in COLUMNS:
        fig = figures[title]
        assert fig["img"] == title, f"{title}: no plot drawn"
        assert f"{title}: not computed in this run" not in text
        values = [(r[column], r["reject"]) for r in rows.values() if r.get(column) is not None]
        kept = sum(1 for _, reject in values if reject is None)
        assert (int(fig["data-kept"]), int(fig["data-rejected"])) == (kept, len(values) - kept), title
        assert values, f"{title}: the run computed no {column}"


def test_the_text_threshold_splits_the_text_area_histogram(model_run):
    out, text = model_run
    rows = _rows(out)
    areas = [(r["text_area"], r["reject"]) for r in rows.values() if r.get("text_area") is not None]
    assert len(areas) == 7  # every decodable photo; the broken file never reached text
    over = [a for a, reject in areas if reject == "max_text_area"]
    assert over and all(a > TEXT_MAX for a in over)  # coffee_sale's burned-in caption at least
    assert all(a <= TEXT_MAX for a, reject in areas if reject is None)
    fig = Figures(text).figures["text area (fraction of the image)"]
    assert int(fig["data-rejected"]) == len(over)
    # headpose saw every decodable photo and found the faces in some: yaw/pitch only for those
    faces = [r for r in rows.values() if r.get("head_yaw") is not None]
    assert 0 < len(faces) < 7 and all(r.get("head_pitch") is not None for r in faces)

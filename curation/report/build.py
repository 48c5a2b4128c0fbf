"""`curate report OUT`: read the run, draw the figures, pick the galleries, write one HTML file.

The page is self-contained (images are data URIs), so OUT/report/index.html can be copied off a
cluster and opened anywhere without a network.
"""

from __future__ import annotations

import html
from collections import Counter
from pathlib import Path
from typing import Any

from curation import __version__
from curation.io import fs
from curation.progress.live import count
from curation.report import galleries as gal
from curation.report import html as page_html
from curation.report import plots
from curation.report.data import RunData, load_run
from curation.stages.filters import rule_target

# (column, title) in the order the page shows them.
HISTOGRAMS = (("max_person_short_side", "largest person, box short side (px)"),
              ("aesthetic", "aesthetic score"), ("realism", "realism score"),
              ("text_area", "text area (fraction of the image)"),
              ("head_yaw", "head yaw (degrees)"), ("head_pitch", "head pitch (degrees)"))


def thresholds(filters: dict[str, Any], column: str) -> dict[str, float]:
    out = {}
    for key, value in (filters or {}).items():
        kind, col = rule_target(key)
        if col == column and value is not None:
            out[kind] = float(value)
    return out


def histogram_section(run: RunData) -> str:
    figs = []
    for column, title in HISTOGRAMS:
        if not run.has(column):
            figs.append(page_html.figure(None, title, "not computed in this run"))
            continue
        kept, rejected = run.values(column, kept=True), run.values(column, kept=False)
        png = plots.histogram(title, kept, rejected, thresholds(run.config.get("filters"), column))
        figs.append(page_html.figure(png, title, "", {"kept": len(kept), "rejected": len(rejected)}))
    scope = (f"From {run.shards_read} of {run.shards_total} input shards. " if run.shards_read < run.shards_total
             else "")
    note = (f"<p>{scope}Each row is counted once, with the value its stage computed; orange rows were rejected "
            "(by this threshold or by a later stage). Dashed lines are the configured thresholds.</p>")
    return note + f'<div class="plots">{"".join(figs)}</div>'


def cluster_section(run: RunData) -> str:
    if not run.has("cluster_l1"):
        return page_html.figure(None, "cluster sizes", "not computed in this run")
    before: Counter = Counter(c for c in run.rows.column("cluster_l1").to_pylist() if c is not None)
    after: Counter = Counter()
    if run.has("selected"):
        for c, n in zip(run.rows.column("cluster_l1").to_pylist(), run.rows.column("selected").to_pylist()):
            if c is not None and n:
                after[c] += n
    note = (f"<p>{len(before)} level-1 clusters, {sum(before.values())} images before sampling, "
            f"{sum(after.values())} draws after" + ("" if run.has("selected") else " (sample not run)") + ".</p>")
    return note + page_html.figure(plots.cluster_sizes(before, after), "cluster sizes", "")


def overview_plots(run: RunData) -> str:
    ledger = run.ledger
    names = list(ledger["stages"])
    figs = [page_html.figure(plots.funnel(names, [ledger["stages"][n]["kept"] for n in names], ledger["inputs"]),
                             "funnel", "")]
    return f'<div class="plots">{"".join(figs)}</div>'


def rejects_section(run: RunData) -> str:
    fig = ""
    if run.ledger["rejects"]:
        fig = page_html.figure(plots.rejects(run.ledger["rejects"]), "rejects by reason", "")
    return page_html.rejects_table(run.ledger) + fig


def run_info(run: RunData) -> dict[str, str]:
    info = {"run folder": run.run_dir, "input": run.run_info.get("input", "-"),
            "upstream run": run.run_info.get("upstream") or "-",
            "code version (run)": run.run_info.get("code_version", "-"),
            "code version (report)": __version__, "config hash": run.run_info.get("config_hash", "-"),
            "stages": ", ".join(run.stages)}
    if run.manifest:
        tars, samples = len(run.manifest["shards"]), run.manifest["counts"]["samples"]
        info["shards"] = f"{count(tars, 'tar')}, {count(samples, 'sample')}"
    return info


def build_report(run_dir: str, out_dir: str | None = None, max_shards: int = 200) -> str:
    """Write the report and return the path of its index.html."""
    run = load_run(run_dir, max_shards=max_shards)
    chosen = gal.choose(run)
    dups = gal.duplicate_groups(run, "dup_of")
    semdups = gal.duplicate_groups(run, "semdup_of")
    gal.fill(run, chosen + dups + semdups)
    dup_html = (page_html.dup_section("perceptual hash (phash)", dups, "phash not run, or no duplicates found")
                + page_html.dup_section("semantic (semdedup)", semdups, "semdedup not run, or no duplicates found"))
    sections = [
        ("run", "Run", page_html.meta_table(run_info(run))),
        ("funnel", "Funnel", page_html.funnel_table(run.ledger) + overview_plots(run)),
        ("rejects", "Rejects by reason", rejects_section(run)),
        ("scores", "Score distributions", histogram_section(run)),
        ("clusters", "Clusters before and after balanced sampling", cluster_section(run)),
        ("duplicates", "Duplicate groups", dup_html),
        ("galleries", "Galleries", "".join(page_html.gallery(g) for g in chosen)),
        ("config", "Resolved config", f"<pre>{html.escape(run.config_text)}</pre>"),
    ]
    banner = page_html.random_weights_banner(run.run_info.get("random_weights", []))
    text = page_html.page(f"curation run report: {run_dir}", sections, banner)
    target = out_dir or fs.join(run_dir, "report")
    uri = fs.join(target, "index.html")
    fs.write_bytes(uri, text.encode())
    return uri


def local_file_uri(uri: str) -> str | None:
    """The file:// URI of a report written on this machine; None for a remote one (s3://), which a
    browser could not open anyway. pathlib percent-encodes it, so whatever characters the run
    folder's name holds, the launcher gets only [A-Za-z0-9%/._~-] after `file://`."""
    if fs.is_remote(uri):
        return None
    return Path(fs.resolve(uri)[1]).resolve().as_uri()  # fs.resolve: a plain path or file://


def open_in_browser(uri: str) -> bool:
    """False when there is nothing a local browser can open, or no browser."""
    target = local_file_uri(uri)
    if target is None:
        return False
    import webbrowser  # runs $BROWSER or xdg-open with the URI as one argv entry (no shell)

    return webbrowser.open(target)

"""The report page: plain string templates, every value through html.escape, images as data URIs.

Numbers a test (or a script) may want to read back carry data- attributes: the funnel cells are
`<td data-stage="decode" data-field="kept">`, the totals `data-total="inputs"` and so on.
"""

from __future__ import annotations

import base64
from html import escape
from typing import Any

from curation.report.galleries import Gallery

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { margin-bottom: .2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; } td, th { border: 1px solid #ddd; padding: 3px 8px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.banner { background: #fde8e8; border: 2px solid #c00; color: #600; padding: .7em 1em; margin-bottom: 1em; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; } .plots figure { margin: 0; }
.absent { width: 360px; height: 120px; border: 1px dashed #aaa; display: flex; align-items: center;
          justify-content: center; color: #777; text-align: center; padding: 0 1em; }
.gallery { display: flex; flex-wrap: wrap; gap: 8px; margin-bottom: 1em; }
.tile { width: 164px; font-size: 11px; word-break: break-all; }
.tile img { max-width: 160px; max-height: 160px; display: block; border: 1px solid #ccc; }
.noimg { width: 158px; height: 100px; border: 1px dashed #c66; color: #a33; display: flex;
         align-items: center; justify-content: center; text-align: center; }
.dupgroup { border-left: 3px solid #2b7bba; padding-left: 8px; margin-bottom: 1em; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 12px; }
.meta td:first-child { color: #666; }
"""


def png_img(png: bytes, alt: str) -> str:
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def funnel_table(ledger: dict[str, Any]) -> str:
    inputs = ledger["inputs"]
    head = ("<tr><th>stage</th><th>shards</th><th class=num>in</th><th class=num>kept</th>"
            "<th class=num>rejected</th><th class=num>kept, % of stage in</th>"
            "<th class=num>kept, % of inputs</th><th class=num>img/s</th></tr>")
    rows = []
    for name, s in ledger["stages"].items():
        rejected = sum(s["rejects"].values())
        rate = s.get("rows_per_s")
        cells = [f"<td>{escape(name)}</td>", f"<td>{s['shards_done']}/{s['shards_total']}</td>"]
        for field, value in (("in", s["in"]), ("kept", s["kept"]), ("rejected", rejected)):
            cells.append(f'<td class=num data-stage="{escape(name)}" data-field="{field}">{value}</td>')
        cells += [f"<td class=num>{pct(s['kept'], s['in'])}</td>",
                  f'<td class=num data-stage="{escape(name)}" data-field="kept_pct">{pct(s["kept"], inputs)}</td>',
                  f"<td class=num>{'-' if rate is None else f'{rate:.1f}'}</td>"]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    totals = (f'<p>Inputs <b data-total="inputs">{inputs}</b>, kept <b data-total="kept">{ledger["kept"]}</b> '
              f'({pct(ledger["kept"], inputs)}), rejected <b data-total="rejected">{ledger["rejected"]}</b>. '
              f'Accounting {"balances" if ledger["balanced"] else "<b>does not balance</b>"}'
              f'{"" if ledger["complete"] else " (run incomplete: some stages have shards left)"}.</p>')
    return totals + f"<table>{head}{''.join(rows)}</table>"


def rejects_table(ledger: dict[str, Any]) -> str:
    inputs = ledger["inputs"]
    rows = []
    for name, s in ledger["stages"].items():
        for reason, n in sorted(s["rejects"].items(), key=lambda kv: (-kv[1], kv[0])):
            rows.append(f'<tr><td>{escape(name)}</td><td>{escape(reason)}</td>'
                        f'<td class=num data-reason="{escape(reason)}">{n}</td>'
                        f'<td class=num>{pct(n, inputs)}</td></tr>')
    if not rows:
        return "<p>No image was rejected.</p>"
    return ("<table><tr><th>stage</th><th>reason</th><th class=num>images</th><th class=num>% of inputs</th></tr>"
            + "".join(rows) + "</table>")


def figure(png: bytes | None, title: str, absent: str, counts: dict[str, int] | None = None) -> str:
    """`counts`: the numbers drawn (e.g. kept/rejected rows of a histogram), as data- attributes."""
    data = "".join(f' data-{escape(k)}="{int(v)}"' for k, v in (counts or {}).items())
    if png is None:
        return (f'<figure data-plot="{escape(title)}"{data}><div class="absent">{escape(title)}: '
                f'{escape(absent)}</div></figure>')
    return f'<figure data-plot="{escape(title)}"{data}>{png_img(png, title)}</figure>'


def gallery(g: Gallery, heading: str = "h3") -> str:
    tiles = []
    for t in g.tiles:
        if t.uri:
            pic = f'<img loading="eager" alt="{escape(t.id)}" src="{t.uri}">'
        else:
            pic = f'<div class="noimg">{escape(t.problem)}</div>'
        tiles.append(f'<div class="tile" data-id="{escape(t.id)}">{pic}{escape(t.id)}<br>{escape(t.caption)}</div>')
    body = "".join(tiles) or "<p>none</p>"
    return f"<{heading}>{escape(g.title)} <small>({escape(g.note)})</small></{heading}><div class=gallery>{body}</div>"


def dup_section(title: str, groups: list[Gallery], absent: str) -> str:
    if not groups:
        return f"<h3>{escape(title)}</h3><p>{escape(absent)}</p>"
    return f"<h3>{escape(title)}</h3>" + "".join(f'<div class="dupgroup">{gallery(g, "h4")}</div>' for g in groups)


def meta_table(info: dict[str, str]) -> str:
    rows = "".join(f"<tr><td>{escape(k)}</td><td>{escape(str(v))}</td></tr>" for k, v in info.items())
    return f'<table class="meta">{rows}</table>'


def random_weights_banner(stages: list[str]) -> str:
    """The first thing a reader sees when a run's scores are meaningless."""
    if not stages:
        return ""
    return (f'<div class="banner" role="alert"><strong>Random weights:</strong> {escape(", ".join(stages))} '
            "ran with randomly initialised models (asked for by name in the config). Their detections, "
            "embeddings and scores, and every filter, duplicate and cluster decision that reads them, "
            "mean nothing; the pipeline and its accounting are real.</div>")


def page(title: str, sections: list[tuple[str, str, str]], banner: str = "") -> str:
    """`sections`: (anchor, heading, inner HTML already escaped); `banner`: HTML above everything."""
    toc = " · ".join(f'<a href="#{a}">{escape(h)}</a>' for a, h, _ in sections)
    body = "".join(f'<section id="{a}"><h2>{escape(h)}</h2>{inner}</section>' for a, h, inner in sections)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<link rel="icon" href="data:,">'
            f"<style>{CSS}</style></head><body>{banner}<h1>{escape(title)}</h1><nav>{toc}</nav>{body}</body></html>")

"""The report as a user sees it: opened from disk in headless Chromium, with the network closed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(420)

CHROMIUM = "/usr/bin/chromium"
# A closed network: nothing Chromium does in the background may reach out or stall the test.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def page(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium chromium-driver; .ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # A persistent context is how Playwright takes a user-data-dir: a fresh one per test.
        context = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                        headless=True, args=FLAGS)
        try:
            yield context.new_page()
        finally:
            context.close()


def test_report_renders_in_chromium_with_the_ledger_numbers(page, report_html, tmp_path):
    out, index = report_html
    # Copied away from the run folder: the page must need nothing beside itself.
    alone = tmp_path / "alone" / "index.html"
    alone.parent.mkdir()
    shutil.copy(index, alone)
    console_errors, page_errors, requests = [], [], []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(alone.as_uri(), wait_until="load")

    assert console_errors == [] and page_errors == []
    assert all(u.startswith(("file:", "data:")) for u in requests), requests  # self-contained

    images = page.eval_on_selector_all(
        "img", "els => els.map(e => ({alt: e.alt, complete: e.complete, w: e.naturalWidth, h: e.naturalHeight}))")
    assert len(images) > 10  # the plots and the galleries are there at all
    broken = [i for i in images if not (i["complete"] and i["w"] > 0 and i["h"] > 0)]
    assert broken == []

    ledger = json.loads((out / "ledger.json").read_text())
    total = {k: int(page.text_content(f'[data-total="{k}"]')) for k in ("inputs", "kept", "rejected")}
    assert total == {"inputs": ledger["inputs"], "kept": ledger["kept"], "rejected": ledger["rejected"]}
    cells = page.eval_on_selector_all(
        "td[data-stage][data-field]",
        "els => els.map(e => [e.dataset.stage, e.dataset.field, e.textContent.trim()])")
    on_page = {(s, f): v for s, f, v in cells}
    for name, s in ledger["stages"].items():
        assert on_page[(name, "in")] == str(s["in"]), name
        assert on_page[(name, "kept")] == str(s["kept"]), name
        assert on_page[(name, "rejected")] == str(sum(s["rejects"].values())), name
    assert {s for s, _ in on_page} == set(ledger["stages"])
    reasons = page.eval_on_selector_all("td[data-reason]", "els => els.map(e => [e.dataset.reason, e.textContent])")
    by_reason: dict[str, int] = {}
    for reason, n in reasons:  # one row per (stage, reason); the ledger sums reasons over stages
        by_reason[reason] = by_reason.get(reason, 0) + int(n)
    assert by_reason == ledger["rejects"] and ledger["rejected"] > 0

    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

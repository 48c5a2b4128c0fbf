"""Input strings are data, never code or paths: no shell anywhere in the package, hostile names
and URLs are read as strings, YAML never constructs objects, storage schemes are allow-listed,
size caps hold without a Content-Length, and tar links are never followed.

(Scheme allow-list of fetched URLs, redirect cap, Content-Length cap and unsafe member names are
covered in tests/test_ingest.py, s3:// URL rows in test_s3_urls.py.)"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from curation.io import fs
from curation.stages.dag import load_config
from curation.stages.ingest import IngestStage

pytestmark = pytest.mark.timeout(60)
PACKAGE = Path(__file__).resolve().parents[2] / "curation"
SHELL = re.compile(r"\b(subprocess|os\.system|os\.popen|os\.exec\w*|os\.spawn\w*|pty\.spawn|shell\s*=\s*True"
                   r"|commands\.getoutput|asyncio\.create_subprocess\w*)\b")
# webbrowser starts a process too ($BROWSER, xdg-open ...) with its argument: allowed at one site
# only, whose argument test_the_browser_is_given_only_an_encoded_local_file_uri checks.
LAUNCHER = re.compile(r"\bwebbrowser\.\w+\(|\bfrom\s+webbrowser\s+import\b")
LAUNCH_SITES = {"report/build.py": ["return webbrowser.open(target)"]}
HOSTILE = ["$(touch PWNED).jpg", "; touch PWNED #.jpg", "`touch PWNED`.jpg", "a'b\"c|&<>.jpg"]


def _lines(pattern: re.Pattern) -> dict[str, list[str]]:
    hits: dict[str, list[str]] = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        for line in p.read_text().splitlines():
            if pattern.search(line):
                hits.setdefault(p.relative_to(PACKAGE).as_posix(), []).append(line.strip())
    return hits


def test_the_package_never_starts_a_shell_or_a_process():
    assert _lines(SHELL) == {}
    # Exactly the known browser launch; a new one (or a moved one) must come with its own check.
    assert _lines(LAUNCHER) == LAUNCH_SITES


def test_the_browser_is_given_only_an_encoded_local_file_uri(tmp_path):
    """`curate report --open` hands the browser launcher one argument: the file:// URI of the local
    report, percent-encoded, whatever the run folder is called; a remote report is never handed over."""
    seen = tmp_path / "argv.txt"
    browser = tmp_path / "browser.sh"  # what webbrowser runs for $BROWSER: notes its arguments
    browser.write_text(f'#!/bin/sh\nprintf "%s\\n" "$#" "$@" > {seen}\n')
    browser.chmod(0o755)
    run_dir = tmp_path / HOSTILE[0].replace(".jpg", "") / HOSTILE[1].replace(".jpg", "") / "--new-window"
    (run_dir / "report").mkdir(parents=True)
    index = run_dir / "report" / "index.html"
    index.write_text("<html></html>")
    code = "import sys\nfrom curation.report.build import open_in_browser\nprint(open_in_browser(sys.argv[1]))"
    env = {"PATH": "/usr/bin:/bin", "BROWSER": str(browser), "PYTHONPATH": str(PACKAGE.parent),
           "HOME": str(tmp_path), "MPLCONFIGDIR": str(tmp_path / "mpl")}

    def open_(uri: str) -> tuple[str, list[str] | None]:
        """What `open_in_browser(uri)` returned and the arguments the browser got (None: not run)."""
        seen.unlink(missing_ok=True)
        r = subprocess.run([sys.executable, "-c", code, uri], env=env, cwd=tmp_path, capture_output=True,
                           text=True, timeout=60, check=False)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip(), (seen.read_text().splitlines() if seen.exists() else None)

    expected = "file://" + "/".join(quote(part, safe="") for part in str(index.resolve()).split("/"))
    assert open_(str(index)) == ("True", ["1", expected])
    assert re.fullmatch(r"file:///[A-Za-z0-9%/._~-]+", expected)  # nothing a launcher could read as syntax
    assert open_(os.path.relpath(index, tmp_path)) == ("True", ["1", expected])  # relative: made absolute
    assert open_(f"s3://out/{HOSTILE[0]}/report/index.html") == ("False", None)
    assert not list(tmp_path.rglob("PWNED*")) and not list(Path("/tmp").glob("PWNED*"))


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (96, 80), (200, 30, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def test_hostile_file_and_member_names_are_only_strings(tmp_path, jpeg, monkeypatch):
    monkeypatch.chdir(tmp_path)
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    for name in HOSTILE:
        (crawl / name).write_bytes(jpeg)
    with tarfile.open(crawl / "x.tar", "w") as tar:
        for name in HOSTILE:
            info = tarfile.TarInfo(name)
            info.size = len(jpeg)
            tar.addfile(info, io.BytesIO(jpeg))
    stage = IngestStage(load_config(None, []))
    files = stage.read_shard({"shard": "img-00000", "kind": "files",
                              "uris": sorted(str(p) for p in crawl.iterdir() if p.suffix == ".jpg")}).to_pylist()
    members = stage.read_shard({"shard": "tar-00000", "kind": "tar", "uri": str(crawl / "x.tar")}).to_pylist()
    assert [r["reject"] for r in files + members] == [None] * 8
    assert all(r["image"] == jpeg for r in files + members)
    assert not list(tmp_path.rglob("PWNED*")) and not list(Path("/tmp").glob("PWNED*"))


def test_tar_links_are_never_followed(tmp_path, jpeg):
    path = tmp_path / "links.tar"
    with tarfile.open(path, "w") as tar:
        for name, kind, target in [("a.jpg", tarfile.SYMTYPE, "/etc/passwd"), ("b.jpg", tarfile.LNKTYPE, "../x")]:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
        info = tarfile.TarInfo("c.jpg")
        info.size = len(jpeg)
        tar.addfile(info, io.BytesIO(jpeg))
    rows = IngestStage(load_config(None, [])).read_shard({"shard": "tar-00000", "kind": "tar", "uri": str(path)})
    # Links are rows of their own (never samples): nothing is read through them.
    assert rows.column("reject").to_pylist() == ["symlink", "hardlink", None]
    assert rows.column("image").to_pylist() == [None, None, jpeg]


@pytest.mark.parametrize("payload", ["!!python/object/apply:os.system ['touch PWNED']",
                                     "!!python/object/new:subprocess.Popen [['touch', 'PWNED']]"])
def test_yaml_never_constructs_objects(tmp_path, monkeypatch, payload):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(f"run:\n  seed: {payload}\n")
    with pytest.raises(yaml.YAMLError, match="python/object"):
        load_config(cfg, [])
    with pytest.raises(yaml.YAMLError, match="python/object"):
        load_config(None, [f"run.seed={payload}"])
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("uri", ["hdfs://nn/crawl", "gs://bucket/crawl", "http://127.0.0.1/crawl", "ftp://x/y"])
def test_storage_schemes_are_allow_listed(uri):
    with pytest.raises(ValueError, match="unsupported storage scheme"):
        fs.exists(uri)


def test_size_cap_holds_without_content_length(jpeg):
    """A server that streams an endless body with no Content-Length: the download stops at the cap."""

    class Endless(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # body ends when the connection closes: no length announced

        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            try:
                for _ in range(10_000):  # bounded: 640 MB at most, the client stops far earlier
                    self.wfile.write(b"\xff" * 65536)
            except OSError:
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/endless.jpg"
        from curation.io.address_policy import AddressPolicy
        from curation.io.http import FetchPolicy, fetch, new_session

        policy = FetchPolicy(max_bytes=1_000_000, retries=0, timeout_s=10, addresses=AddressPolicy(("127.0.0.0/8",)))
        data, reason = fetch(new_session(policy), url, policy)
    finally:
        server.shutdown()
        server.server_close()
    assert data is None and reason == "too_large"

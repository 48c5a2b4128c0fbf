"""Input strings are data, never code or paths: no shell anywhere in the package, hostile names
and URLs are read as strings, YAML never constructs objects, storage schemes are allow-listed,
size caps hold without a Content-Length, and tar links are never followed.

(Scheme allow-list of fetched URLs, redirect cap, Content-Length cap and unsafe member names are
covered in tests/test_ingest.py.)"""

from __future__ import annotations

import io
import re
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from curation.config import load_config
from curation.io import fs
from curation.stages.ingest import IngestStage

pytestmark = pytest.mark.timeout(60)
PACKAGE = Path(__file__).resolve().parents[2] / "curation"
SHELL = re.compile(r"\b(subprocess|os\.system|os\.popen|os\.exec\w*|os\.spawn\w*|pty\.spawn|shell\s*=\s*True"
                   r"|commands\.getoutput|asyncio\.create_subprocess\w*)\b")
HOSTILE = ["$(touch PWNED).jpg", "; touch PWNED #.jpg", "`touch PWNED`.jpg", "a'b\"c|&<>.jpg"]


def test_the_package_never_starts_a_shell_or_a_process():
    hits = [f"{p.relative_to(PACKAGE)}:{i}: {line.strip()}" for p in PACKAGE.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if SHELL.search(line)]
    assert hits == []


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
    assert rows.column("image").to_pylist() == [jpeg]  # links are not samples; nothing read through them


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
        import requests

        from curation.io.http import FetchPolicy, fetch

        data, reason = fetch(requests.Session(), url, FetchPolicy(max_bytes=1_000_000, retries=0, timeout_s=10))
    finally:
        server.shutdown()
        server.server_close()
    assert data is None and reason == "too_large"

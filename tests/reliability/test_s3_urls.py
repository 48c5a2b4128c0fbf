"""URL rows that name s3:// objects, fetched through pyarrow.fs from a real S3 server on loopback
(moto, the `s3` fixture of conftest.py): the same size cap, timeouts and one clear reason per
failure as http rows, and the allow-list still refuses every other scheme."""

from __future__ import annotations

import io
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from run_helpers import base_overrides

from curation.config import ConfigError
from curation.io.address_policy import AddressPolicy
from curation.io.http import FetchPolicy, fetch, new_session
from curation.stages.dag import load_config
from curation.stages.ingest import IngestStage

from .procs import curate, run_args
from .samples import read_samples

pytestmark = pytest.mark.timeout(180)

LIST = "s3://crawl/u/urls.jsonl"
URLS = ["s3://crawl/u/ok.jpg", "s3://crawl/u/missing.jpg", "s3://crawl/u/big.jpg", "s3://no-such-bucket/x.jpg",
        # a row may not carry filesystem options: they would let the input pick the endpoint
        "s3://crawl/u/ok.jpg?endpoint_override=127.0.0.1:9", "s3://crawl/u/", "file:///etc/passwd",
        "ftp://127.0.0.1/ok.jpg"]
REASONS = [None, "s3_not_found", "too_large", "s3_not_found", "invalid_url", "invalid_url", "scheme_not_allowed",
           "scheme_not_allowed"]


def _jpeg(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture(scope="module")
def objects(s3):
    """The bucket's objects and a cap between the small and the big one."""
    import skimage.data

    _, client = s3
    ok = _jpeg(skimage.data.astronaut())
    big = _jpeg(np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8))  # noise: ~1 MB
    assert len(big) > 4 * len(ok)
    client.put_object(Bucket="crawl", Key="u/ok.jpg", Body=ok)
    client.put_object(Bucket="crawl", Key="u/big.jpg", Body=big)
    client.put_object(Bucket="crawl", Key="u/urls.jsonl",
                      Body="\n".join(json.dumps({"url": u, "caption": f"c{i}"}) for i, u in enumerate(URLS)).encode())
    return ok, big, (len(ok) + len(big)) // 2


def test_s3_rows_are_read_with_the_cap_and_a_reason_for_each_failure(objects):
    ok, _, cap = objects
    stage = IngestStage(load_config(None, [f"ingest.max_bytes={cap}", "ingest.retries=0", "ingest.timeout_s=5"]))
    stage.check()  # s3 is in the default allow-list
    specs = stage.plan(LIST)
    assert [s["kind"] for s in specs] == ["urls"]
    rows = stage.read_shard(specs[0]).to_pylist()
    assert [r["reject"] for r in rows] == REASONS
    assert rows[0]["image"] == ok and rows[0]["bytes"] == len(ok) and rows[0]["caption"] == "c0"
    assert all(r["image"] is None for r in rows[1:])
    assert [r["reject_stage"] for r in rows] == [None] + ["ingest"] * (len(URLS) - 1)


def test_a_run_over_an_s3_url_list_accounts_for_every_row(s3, objects, tmp_path):
    """The whole non-model DAG in a `curate run` process that knows the endpoint only from AWS_*."""
    env, _ = s3
    ok, _, cap = objects
    out = tmp_path / "out"
    r = curate(*run_args(LIST, str(out), base_overrides(f"ingest.max_bytes={cap}", "ingest.retries=0",
                                                        "run.num_cpus=2")), env_extra=env, timeout=170)
    assert r.returncode == 0, r.stderr[-3000:]
    ledger = json.loads((out / "ledger.json").read_text())
    expected = {}
    for reason in REASONS[1:]:
        expected[reason] = expected.get(reason, 0) + 1
    assert ledger["balanced"] and ledger["inputs"] == len(URLS) and ledger["kept"] == 1
    assert ledger["rejects"] == expected
    samples = read_samples(str(out))
    assert [jpg for jpg, _ in samples.values()] == [ok]
    assert json.loads(next(iter(samples.values()))[1])["source"] == URLS[0]


def test_a_stalled_or_absent_endpoint_is_a_timeout_or_a_connection_error(monkeypatch):
    policy = FetchPolicy(timeout_s=1, retries=0)
    with socket.socket() as stalled:  # accepts connections (the backlog), never answers
        stalled.bind(("127.0.0.1", 0))
        stalled.listen(8)
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{stalled.getsockname()[1]}")
        assert fetch(None, "s3://crawl/u/ok.jpg", policy) == (None, "timeout")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    assert fetch(None, "s3://crawl/u/ok.jpg", policy) == (None, "connection_error")


def test_an_http_redirect_never_reaches_s3(objects):
    """s3 being allowed for rows must not let a web server send ingest into the user's buckets,
    with the user's credentials: a redirect to s3:// (an object that exists) is refused."""
    class Redirect(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", "s3://crawl/u/ok.jpg")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        policy = FetchPolicy(retries=0, addresses=AddressPolicy(("127.0.0.0/8",)))
        with new_session(policy) as session:
            got = fetch(session, f"http://127.0.0.1:{server.server_address[1]}/a.jpg", policy)
    finally:
        server.shutdown()
        server.server_close()
    assert got == (None, "scheme_not_allowed")


def test_a_scheme_the_fetcher_cannot_read_is_a_config_error():
    stage = IngestStage(load_config(None, ["ingest.allowed_schemes=[http,ftp]"]))
    with pytest.raises(ConfigError, match="cannot be fetched over ftp"):
        stage.check()

"""Ingest over real inputs: a loopback HTTP server, WebDataset tars, image folders."""

import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from loopback_http import LoopbackServer
from run_helpers import ALLOW_LOOPBACK, base_overrides

from curation.io.tars import unsafe_name
from curation.runner.pipeline import run_pipeline
from curation.stages.dag import load_config
from curation.stages.ingest import IngestStage

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def photo_bytes():
    import skimage.data
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(buf, format="JPEG")
    return buf.getvalue()


def _ingest(cfg_overrides, spec):
    stage = IngestStage(load_config(None, cfg_overrides))
    return stage.read_shard(spec).to_pylist()


def test_url_list_failures_become_rejects(tmp_path, photo_bytes):
    with LoopbackServer({"ok.jpg": photo_bytes}) as srv:
        urls = [f"{srv.url}/ok.jpg", f"{srv.url}/missing.jpg", f"{srv.url}/hang", "file:///etc/passwd",
                "ftp://example.com/a.jpg", f"{srv.url}/html", f"{srv.url}/huge", f"{srv.url}/redirect-loop",
                f"{srv.url}/redirect-file", f"{srv.url}/flaky", ""]
        lst = tmp_path / "urls.jsonl"
        lst.write_text("\n".join(json.dumps({"url": u, "caption": f"c{i}"}) for i, u in enumerate(urls)))
        rows = _ingest(["ingest.timeout_s=1", "ingest.retries=1", "ingest.max_bytes=1000000", ALLOW_LOOPBACK],
                       {"shard": "url-00000", "kind": "urls", "uri": str(lst), "start": 0, "stop": len(urls)})
    reasons = [r["reject"] for r in rows]
    assert reasons == [None, "http_404", "timeout", "scheme_not_allowed", "scheme_not_allowed", None,
                       "too_large", "too_many_redirects", "scheme_not_allowed", None, "missing_url"]
    assert rows[0]["image"] == photo_bytes and rows[0]["caption"] == "c0"
    assert rows[9]["image"] == photo_bytes  # 503 then 200: the retry recovered it
    assert [r["id"] for r in rows] == [f"url-00000-{i:06d}" for i in range(len(urls))]


def test_tar_members_are_never_trusted(tmp_path, photo_bytes):
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in [("good.jpg", photo_bytes), ("good.txt", b"a caption"), ("../../etc/evil.jpg", photo_bytes),
                           ("/abs/path.jpg", photo_bytes), ("nocaption.txt", b"text only")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    rows = _ingest([], {"shard": "tar-00000", "kind": "tar", "uri": str(path)})
    assert [r["reject"] for r in rows] == [None, "unsafe_member_name", "unsafe_member_name", "no_image_in_sample"]
    assert rows[0]["caption"] == "a caption" and rows[0]["image"] == photo_bytes
    assert not (tmp_path.parent / "etc").exists()


def test_truncated_tar_keeps_what_it_read_and_records_the_rest(tmp_path, photo_bytes):
    path = tmp_path / "cut.tar"
    with tarfile.open(path, "w") as tar:
        for i in range(3):
            info = tarfile.TarInfo(f"s{i}.jpg")
            info.size = len(photo_bytes)
            tar.addfile(info, io.BytesIO(photo_bytes))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - len(photo_bytes) // 2 - 2048])
    rows = _ingest([], {"shard": "tar-00000", "kind": "tar", "uri": str(path)})
    assert [r["reject"] for r in rows][:2] == [None, None]
    assert rows[-1]["reject"] == "corrupt_tar"


@pytest.mark.parametrize("name,unsafe", [("a/b.jpg", False), ("../x.jpg", True), ("/etc/passwd", True),
                                         ("a/../../x", True), ("C:/x.jpg", True), ("a\\..\\x", True),
                                         ("ok.jpg", False)])
def test_unsafe_names(name, unsafe):
    assert unsafe_name(name) is unsafe


def test_mixed_input_folder_every_item_accounted(ray_local, tmp_path, photo_bytes):
    """Image files, a URL list and a tar in one input folder, through ingest+decode+filter+shard."""
    from bad_inputs import bad_files

    crawl = tmp_path / "crawl"
    crawl.mkdir()
    cases = bad_files()
    for name, (data, _) in cases.items():
        (crawl / name).write_bytes(data)
    with tarfile.open(crawl / "part.tar", "w") as tar:
        for name, data in [("a.jpg", photo_bytes), ("../../escape.jpg", photo_bytes)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with LoopbackServer({"ok.jpg": photo_bytes}) as srv:
        pq.write_table(pa.table({"url": [f"{srv.url}/ok.jpg", f"{srv.url}/nope.jpg", f"{srv.url}/hang",
                                         "file:///etc/passwd", "ftp://x/y.jpg"]}), crawl / "urls.parquet")
        out = tmp_path / "out"
        cfg = load_config(None, base_overrides("ingest.timeout_s=1", "ingest.retries=0"))
        summary = run_pipeline(cfg, str(crawl), str(out))
    n_inputs = len(cases) + 2 + 5
    assert summary["inputs"] == n_inputs
    assert summary["balanced"] and summary["inputs"] == summary["kept"] + summary["rejected"]
    expected = {}
    for _, reason in cases.values():
        if reason:
            expected[reason] = expected.get(reason, 0) + 1
    expected.update({"unsafe_member_name": 1, "http_404": 1, "timeout": 1, "scheme_not_allowed": 2})
    assert summary["rejects"] == dict(sorted(expected.items()))
    kept = sum(1 for _, r in cases.values() if r is None) + 1 + 1
    assert summary["kept"] == kept

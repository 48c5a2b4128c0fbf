"""Ingest over a hostile crawl (tests/hostile_corpus.py): every item found gets exactly one row
with the reason it must have, nothing is read through a link or from outside the input, no
connection goes to a blocked address, no credential reaches an output, and memory stays bounded."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hostile_corpus import CREDENTIAL, SECRET, build_folder, build_tars, jpeg, url_rows, write_url_list
from loopback_http import LoopbackServer
from run_helpers import base_overrides

from curation.io import names
from curation.io.address_policy import AddressPolicy, BlockedAddress
from curation.runner.pipeline import run_pipeline
from curation.stages.dag import load_config
from curation.stages.ingest import IngestStage

pytestmark = pytest.mark.timeout(240)
ONLY_LOOPBACK_1 = "ingest.allow_networks=[127.0.0.1/32]"  # 127.0.0.2, ::1 ... stay blocked
CAPS = ["ingest.max_bytes=200000", "ingest.timeout_s=1", "ingest.request_budget_s=2", "ingest.retries=1"]


@pytest.fixture
def no_traffic_off_loopback(monkeypatch):
    """Every connect of this process, recorded; one to anything but 127.0.0.1 fails the test (and
    is never made), so a bug here cannot send a packet to a metadata or private address."""
    seen: list[tuple] = []
    real = socket.socket.connect

    def connect(self, address):
        seen.append(address)
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] != "127.0.0.1":
            raise AssertionError(f"connection attempted to {address}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return seen


def _rows(spec: dict, *sets: str) -> list[dict]:
    return IngestStage(load_config(None, [*CAPS, ONLY_LOOPBACK_1, *sets])).read_shard(spec).to_pylist()


def test_url_rows_hostile_servers_and_internal_addresses(tmp_path, no_traffic_off_loopback):
    with LoopbackServer({"ok.jpg": jpeg()}) as srv:
        srv.gzip_bomb()  # made before the clock of its URL starts
        rows_in = url_rows(srv.url, srv.httpd.server_address[1])
        write_url_list(tmp_path / "urls.jsonl", rows_in)
        rows = _rows({"shard": "url-00000", "kind": "urls", "uri": str(tmp_path / "urls.jsonl"),
                      "start": 0, "stop": len(rows_in)})
    assert [(u, r["reject"]) for (u, _), r in zip(rows_in, rows)] == rows_in
    assert all(addr[0] == "127.0.0.1" for addr in no_traffic_off_loopback if isinstance(addr, tuple))
    assert rows[1]["image"] == rows[0]["image"] and CREDENTIAL not in rows[1]["source"]
    assert rows[1]["source"].startswith("http://127.0.0.1:")
    assert rows[5]["image"][:2] == b"\x1f\x8b"  # the gzip body as sent, not 64 MiB of zeros


def test_one_resolution_per_connection_so_rebinding_cannot_slip_through(monkeypatch):
    """The address checked is the address connected: a resolver that answers 127.0.0.1 (allowed)
    first and 127.0.0.2 (blocked) afterwards is asked once, and the socket goes to 127.0.0.1."""
    answers = iter(["127.0.0.1", "127.0.0.2", "127.0.0.2", "127.0.0.2"])
    calls: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)
        calls.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with LoopbackServer({"ok.jpg": jpeg()}) as srv:
        port = srv.httpd.server_address[1]
        rows = _rows_for([f"http://rebind.test:{port}/ok.jpg", f"http://rebind.test:{port}/ok.jpg"])
    # One lookup per connection, and the second connection's own answer is checked: a fetcher
    # that checked one lookup and connected with another would have reached 127.0.0.2 first.
    assert [r["reject"] for r in rows] == [None, "blocked_address"]
    assert calls == ["rebind.test", "rebind.test"]
    with pytest.raises(BlockedAddress):
        AddressPolicy(("127.0.0.1/32",)).resolve("rebind.test", port)


def _rows_for(urls: list[str]) -> list[dict]:
    stage = IngestStage(load_config(None, [*CAPS, ONLY_LOOPBACK_1, "ingest.download_threads=1"]))
    from curation.io.http import fetch, new_session

    policy = stage.policy()
    with new_session(policy) as session:
        return [{"reject": fetch(session, u, policy)[1]} for u in urls]


@pytest.mark.parametrize("addr,allowed", [
    ("8.8.8.8", True), ("2606:4700::1111", True), ("127.0.0.1", False), ("10.1.2.3", False),
    ("172.16.0.1", False), ("192.168.1.1", False), ("169.254.169.254", False), ("100.100.100.200", False),
    ("100.64.0.1", False), ("0.0.0.0", False), ("::", False), ("::1", False), ("fe80::1", False),
    ("fd00:ec2::254", False), ("::ffff:10.0.0.1", False), ("224.0.0.1", False), ("192.0.2.7", False)])
def test_address_policy(addr, allowed):
    import ipaddress

    assert AddressPolicy().allowed(ipaddress.ip_address(addr)) is allowed


def test_allow_networks_names_a_mirror_but_never_metadata():
    import ipaddress

    policy = AddressPolicy(("10.0.0.0/8", "169.254.0.0/16"))
    assert policy.allowed(ipaddress.ip_address("10.9.8.7"))
    assert not policy.allowed(ipaddress.ip_address("169.254.169.254"))
    assert not policy.allowed(ipaddress.ip_address("192.168.0.1"))


def test_tar_members_each_get_one_row(tmp_path):
    expected = build_tars(tmp_path)
    for name, reasons in expected.items():
        rows = _rows({"shard": "tar-00000", "kind": "tar", "uri": str(tmp_path / name)})
        assert [r["reject"] for r in rows] == reasons, name
    broken = _rows({"shard": "tar-00000", "kind": "tar", "uri": str(tmp_path / "corrupt-header.tar")})[-1]
    assert "bytes not read" in broken["error"] and "at byte" in broken["error"]


def _independent_walk(root: Path) -> Counter:
    """What a run must hold a row for, found without the code under test: os.scandir on bytes
    without following links (hidden names and plain folders are not descended into / not items),
    tarfile's own reading of headers for the tars."""
    want: Counter = Counter()
    image_like = (b".jpg", b".jpeg", b".png", b".tar", b".tgz", b".gz", b".jsonl")
    stack = [os.fsencode(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False) and not e.name.startswith(b"."):
                    stack.append(e.path)
                    if not e.name.lower().endswith(image_like):
                        continue
                is_tar = e.name.endswith((b".tar", b".tar.gz", b".tgz")) and e.is_file(follow_symlinks=False)
                if is_tar and not e.name.startswith(b"."):
                    want.update(_tar_sources(e.path))
                elif not e.name.endswith(b".jsonl") or e.is_symlink():
                    want[names.escape(e.path)] += 1
    return want


def _tar_sources(path: bytes) -> Counter:
    src, got = names.escape(path), Counter()
    try:
        with tarfile.open(os.fsdecode(path), encoding="utf-8", errors="surrogateescape") as tar:
            keys = []
            for m in tar.getmembers():
                name = names.from_text(m.name)
                if m.isreg() and not name.startswith(("/", "..")) and m.size < (1 << 20):
                    key = name.split(".", 1)[0] if "/" not in name else name
                    if not keys or keys[-1] != key:
                        keys.append(key)
                        got[f"{src}#{key}"] += 1
                else:
                    got["<non-sample member>"] += 1
    except (tarfile.TarError, OSError, EOFError):
        pass
    return got


def test_a_run_over_the_hostile_folder_gives_every_item_one_row(ray_local, tmp_path):
    crawl, outside = tmp_path / "crawl", tmp_path / "outside"
    outside.mkdir()
    expect = build_folder(crawl, outside)
    build_tars(crawl)
    out = tmp_path / "out"
    summary = run_pipeline(load_config(None, base_overrides(*CAPS)), str(crawl), str(out))
    assert summary["balanced"] and summary["complete"]
    rows = pq.read_table(out / "ingest" / "parts").select(["source", "reject"]).to_pylist()
    by_source = {r["source"]: r["reject"] for r in rows}
    for raw, reason in expect.items():  # every folder entry's own reason
        assert by_source[names.escape(raw)] == reason, raw
    want = _independent_walk(crawl)
    non_sample = want.pop("<non-sample member>", 0)
    tar_rows = Counter(r["source"] for r in rows if ".tar" in r["source"] or ".tgz" in r["source"])
    file_rows = Counter(r["source"] for r in rows) - tar_rows
    assert file_rows == Counter({k: v for k, v in want.items() if "#" not in k})
    # Each sample and each non-sample member is one row; corrupt/bomb rows cover what tarfile
    # could not read at all (it stops silently where ingest writes one row).
    sample_want = Counter({k: v for k, v in want.items() if "#" in k})
    assert sample_want - tar_rows == Counter()
    assert summary["inputs"] == len(rows) == sum(file_rows.values()) + sum(tar_rows.values())
    assert non_sample > 0
    _assert_nothing_from_outside(out)


def _assert_nothing_from_outside(out: Path) -> None:
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_bytes(), path
    for part in (out / "ingest" / "parts").rglob("*.parquet"):
        for row in pq.read_table(part).to_pylist():
            assert not any(isinstance(v, bytes) and SECRET in v for v in row.values()), part


def test_following_links_stays_inside_the_input(tmp_path):
    crawl, outside = tmp_path / "crawl", tmp_path / "outside"
    outside.mkdir()
    build_folder(crawl, outside)
    stage = IngestStage(load_config(None, [*CAPS, "ingest.follow_symlinks=true"]))
    specs = stage.plan(str(crawl))
    items = [it for s in specs if s["kind"] == "files" for it in s["items"]]
    reasons = {os.path.basename(names.unescape(src)): rej for src, rej, _ in items}
    assert reasons[b"passwd.jpg"] == reasons[b"secret-link.jpg"] == reasons[b"zero-device.jpg"] == "outside_input"
    assert reasons[b"dangling.jpg"] == "dangling_symlink" and reasons[b"loop-a.jpg"] == "symlink_loop"
    assert reasons[b"parent-dir"] == "outside_input" and reasons[b"self-dir"] == "symlink_loop"
    assert reasons[b"inside-link.jpg"] is None  # read, from inside the root
    rows = [r for s in specs if s["kind"] == "files" for r in stage.read_shard(s).to_pylist()]
    assert not any(r["image"] and SECRET in r["image"] for r in rows)
    assert len(items) == len({src for src, _, _ in items}) < 60  # no 40-level descent, no repeats


def test_a_sparse_file_is_refused_without_reading_it(tmp_path):
    """A 2 GiB sparse file: refused from its size before a byte is read, in a process whose peak
    RSS stays under 300 MiB."""
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    with open(crawl / "sparse.jpg", "wb") as f:
        f.truncate(2 << 30)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork and exec,
    # so a child of a busy pytest process would report the parent's peak.
    code = (
        "import sys\n"
        "from curation.stages.dag import load_config\n"
        "from curation.stages.ingest import IngestStage\n"
        "stage = IngestStage(load_config(None, []))\n"
        "[spec] = stage.plan(sys.argv[1])\n"
        "rows = stage.read_shard(spec).to_pylist()\n"
        "hwm = [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')][0]\n"
        "print(rows[0]['reject'] or len(rows[0]['image']), hwm)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    r = subprocess.run([sys.executable, "-c", code, str(crawl)],
                       capture_output=True, text=True, timeout=120, env=env, check=False)
    assert r.returncode == 0, r.stderr
    reason, rss_kib = r.stdout.split()
    assert reason == "too_large"
    assert int(rss_kib) < 300 * 1024, f"peak RSS {int(rss_kib) // 1024} MiB"

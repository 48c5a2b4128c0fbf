"""A hostile crawl, built on disk: a folder, tars and a URL list holding what real crawls hold
(odd names, links out of the input, devices, bombs, liars, internal addresses), each with the
one row ingest must give it. Used by tests/reliability/test_hostile_ingest.py."""

from __future__ import annotations

import gzip
import io
import json
import os
import socket
import tarfile
from pathlib import Path

SECRET = b"TOP-SECRET-OUTSIDE-THE-INPUT-7f3a9"  # lives outside the input; no output may hold it
CREDENTIAL = "hunter2-credential-9c1e"


def jpeg(size=(320, 240), seed=0) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def _member(tar: tarfile.TarFile, name: str, data: bytes | None = None, kind: bytes = tarfile.REGTYPE,
            link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(data) if data is not None else 0
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def _tar_bytes(members: list[tuple], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape") as tar:
        for m in members:
            _member(tar, *m)
    return buf.getvalue()


def build_folder(root: Path, outside: Path) -> dict[bytes, str | None]:
    """Files, links and special entries; returns {escaped-able raw path: expected ingest reject}.
    Decode-level outcomes are not ingest's: a file ingest reads is None here."""
    secret = outside / "secret.jpg"
    secret.write_bytes(SECRET + jpeg())
    root.mkdir(parents=True)
    good = jpeg()
    expect: dict[bytes, str | None] = {}

    def put(name: bytes, data: bytes, reason: str | None = None) -> None:
        path = os.path.join(os.fsencode(root), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        expect[path] = reason

    def link(name: bytes, target: bytes | str, reason: str = "symlink") -> None:
        path = os.path.join(os.fsencode(root), name)
        os.symlink(target, path)
        expect[path] = reason

    put(b"good.jpg", good)
    put(b"\xff\xfe-latin1-\xe9.jpg", jpeg(seed=1))  # not UTF-8
    put(b"back\\slash\\x41.jpg", jpeg(seed=2))  # a name that looks escaped
    put(b"$(touch PWNED) ; rm -rf.jpg", jpeg(seed=3))
    put(b"nested/deeper/photo.jpg", jpeg(seed=4))
    put(b"zero.jpg", b"")
    put(b"text-posing.jpg", b"plain text, not an image\n" * 10)
    put(b"gzipped.jpg.gz", gzip.compress(good))  # never inflated by its name
    put(b".hidden.jpg", good, "hidden")
    put(b".git/objects/aa", good, None)
    del expect[os.path.join(os.fsencode(root), b".git/objects/aa")]
    expect[os.path.join(os.fsencode(root), b".git")] = "hidden"  # a hidden folder is one item
    put(b"folder.jpg/inside.jpg", jpeg(seed=5))
    expect[os.path.join(os.fsencode(root), b"folder.jpg")] = "is_a_directory"
    link(b"passwd.jpg", "/etc/passwd")
    link(b"secret-link.jpg", str(secret))
    link(b"dangling.jpg", str(root / "no-such-file.jpg"))
    link(b"loop-a.jpg", str(root / "loop-b.jpg"))
    link(b"loop-b.jpg", str(root / "loop-a.jpg"))
    link(b"zero-device.jpg", "/dev/zero")
    link(b"parent-dir", "..")
    link(b"self-dir", ".")
    link(b"inside-link.jpg", "good.jpg")
    fifo = os.path.join(os.fsencode(root), b"pipe.jpg")
    os.mkfifo(fifo)
    expect[fifo] = "fifo"
    sock_path = os.path.join(os.fsencode(root), b"sock.jpg")
    s = socket.socket(socket.AF_UNIX)
    s.bind(sock_path)
    s.close()
    expect[sock_path] = "socket"
    sparse = os.path.join(os.fsencode(root), b"sparse-3g.jpg")
    with open(sparse, "wb") as f:
        f.truncate(3 << 30)
    expect[sparse] = "too_large"
    return expect


def build_tars(root: Path) -> dict[str, list[str | None]]:
    """Tars in the input folder: file name -> ingest rejects of its rows, in member order."""
    good, other = jpeg(seed=6), jpeg(seed=7)
    tars: dict[str, tuple[bytes, list[str | None]]] = {}
    tars["members.tar"] = (_tar_bytes([
        ("a.jpg", good), ("a.txt", b"a caption"), ("b.jpg", other),
        ("link.jpg", None, tarfile.SYMTYPE, "/etc/passwd"), ("hard.jpg", None, tarfile.LNKTYPE, "a.jpg"),
        ("dev.jpg", None, tarfile.CHRTYPE), ("blk.jpg", None, tarfile.BLKTYPE), ("fifo.jpg", None, tarfile.FIFOTYPE),
        ("dir.jpg", None, tarfile.DIRTYPE), ("../escape.jpg", good), ("/abs.jpg", good),
        ("caf\udce9.jpg", good), ("only.txt", b"no image here"), ("big.jpg", b"\0" * 300_000),
    ]), [None, None, "symlink", "hardlink", "device", "device", "fifo", "is_a_directory",
         "unsafe_member_name", "unsafe_member_name", None, "no_image_in_sample", "too_large"])
    whole = _tar_bytes([(f"s{i}.jpg", jpeg(seed=10 + i)) for i in range(4)])
    # Garbage over the third member's header: the first two are kept, the break is one row.
    hdr = _tar_member_offsets(whole)[2]
    tars["corrupt-header.tar"] = (whole[:hdr] + b"\x5a" * 512 + whole[hdr + 512:], [None, None, "corrupt_tar"])
    tars["truncated.tar"] = (whole[: _tar_member_offsets(whole)[3] + 700], [None, None, None, "corrupt_tar"])
    tars["empty.tar"] = (b"", ["corrupt_tar"])
    tars["good.tar.gz"] = (gzip.compress(_tar_bytes([("g1.jpg", good), ("g2.jpg", other)])), [None, None])
    bomb = gzip.compress(_tar_bytes([("zeros.jpg", b"\0" * (96 << 20))]), compresslevel=9)
    tars["bomb.tar.gz"] = (bomb, ["too_large", "decompression_bomb"])  # its header, then the stop
    tars["not-gzip.tgz"] = (b"this is not gzip at all" * 40, ["corrupt_tar"])
    out = {}
    for name, (data, reasons) in tars.items():
        (root / name).write_bytes(data)
        out[name] = reasons
    return out


def _tar_member_offsets(data: bytes) -> list[int]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [m.offset for m in tar.getmembers()]


def url_rows(base: str, port: int) -> list[tuple[str, str | None]]:
    """(url, expected ingest reject) for a loopback server at `base` (127.0.0.1 allowed, no other)."""
    return [
        (f"{base}/ok.jpg", None),
        (f"http://user:{CREDENTIAL}@127.0.0.1:{port}/ok.jpg", None),  # used, never stored
        (f"{base}/jpeg-as-html", None),  # content decides
        (f"{base}/html-as-jpeg", None),  # fetched; decode says not_an_image
        (f"{base}/short-length", None),  # the body is cut at the announced length; decode decides
        (f"{base}/gzip-bomb", None),  # stored as sent (identity asked): never inflated
        (f"{base}/missing.jpg", "http_404"),
        (f"{base}/empty", "empty_file"),
        (f"{base}/drip", "timeout"),
        (f"{base}/hang", "timeout"),
        (f"{base}/huge", "too_large"),
        (f"{base}/redirect-loop", "too_many_redirects"),
        (f"{base}/redirect-file", "scheme_not_allowed"),
        (f"{base}/redirect-to/http__169.254.169.254/latest/meta-data/", "blocked_address"),
        (f"{base}/redirect-to/http__127.0.0.2:{port}/ok.jpg", "blocked_address"),
        ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "blocked_address"),
        ("http://metadata.google.internal/computeMetadata/v1/", "blocked_address"),
        (f"http://0.0.0.0:{port}/ok.jpg", "blocked_address"),
        (f"http://127.0.0.2:{port}/ok.jpg", "blocked_address"),
        (f"http://2130706434:{port}/ok.jpg", "blocked_address"),  # 127.0.0.2 as one decimal number
        (f"http://[::1]:{port}/ok.jpg", "blocked_address"),
        (f"http://[::ffff:127.0.0.2]:{port}/ok.jpg", "blocked_address"),
        ("file:///etc/passwd", "scheme_not_allowed"),
        ("ftp://127.0.0.1/ok.jpg", "scheme_not_allowed"),
        ("gopher://127.0.0.1:6379/_FLUSHALL", "scheme_not_allowed"),
        ("http://[::1", "invalid_url"),
        ("", "missing_url"),
    ]


def write_url_list(path: Path, rows: list[tuple[str, str | None]]) -> None:
    path.write_text("\n".join(json.dumps({"url": u, "caption": f"row {i}"}) for i, (u, _) in enumerate(rows)))

"""Read WebDataset tars (plain, or gzipped as a stream) as samples, member by member, trusting
no header.

We read with `tarfile` rather than `webdataset.WebDataset` because ingest must turn every member
problem into a recorded row; webdataset's readers either raise or skip through a handler. Each
member header ends in exactly one row: regular members are grouped into samples by key (one row
per sample), and every other member (link, device, FIFO, folder) is a row with that reason and
is never read. Names are only ever parsed as strings (nothing is extracted to the filesystem) and
are kept as bytes, escaped (`names`). Sizes are checked from the header before a member is read.

A header that does not parse ends the tar: tarfile would stop there silently, so the reader keeps
the last block it was given and tells a zero block (the archive's end) from garbage. The members
before the break are kept; one `corrupt_tar` row says where it broke and how much went unread.
A gzipped tar is inflated as a stream, never whole, and stops as `decompression_bomb` when it
inflates past `max_inflate_ratio` times the compressed bytes read so far.
"""

from __future__ import annotations

import gzip
import posixpath
import re
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from curation.io import fs, names

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
# webdataset's convention: key = path up to the first dot of the basename, ext = the rest.
_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
_BLOCK = 512
_MEMBER_REASONS = ((tarfile.TarInfo.issym, "symlink"), (tarfile.TarInfo.islnk, "hardlink"),
                   (tarfile.TarInfo.isdir, "is_a_directory"), (tarfile.TarInfo.isfifo, "fifo"),
                   (tarfile.TarInfo.ischr, "device"), (tarfile.TarInfo.isblk, "device"))


@dataclass
class TarSample:
    key: str
    members: dict[str, bytes] = field(default_factory=dict)
    reject: str | None = None
    error: str | None = None


def unsafe_name(name: str) -> bool:
    """Absolute paths, parent references, NULs or backslashes: a name that would escape a
    directory if anything ever used it as a path."""
    if not name or "\x00" in name or "\\" in name or name.startswith("/"):
        return True
    parts = posixpath.normpath(name).split("/")
    return ".." in name.split("/") or parts[0] == ".." or bool(re.match(r"^[A-Za-z]:", name))


class _ForwardReader:
    """A forward-only file over a stream, for tarfile's seekable mode: seeking ahead reads and
    drops (a skipped member costs no memory), and the last block read is kept so a header that
    tarfile rejected can be told from the archive's end."""

    def __init__(self, stream: Any, inflate: _InflateGuard | None = None):
        self.stream, self.inflate, self.pos, self.last = stream, inflate, 0, b""

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n if n is not None and n >= 0 else 1 << 20)
        self.pos += len(data)
        if n == _BLOCK:
            self.last = data
        if self.inflate is not None:
            self.inflate.check(self.pos)
        return data

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        target = pos if whence == 0 else self.pos + pos
        if target < self.pos:
            raise OSError(f"cannot seek back from {self.pos} to {target} in a streamed tar")
        while self.pos < target:
            if not self.read(min(1 << 20, target - self.pos)):
                break
        return self.pos


class _Counting:
    """Counts the compressed bytes gzip has pulled from the raw stream."""

    def __init__(self, raw: Any):
        self.raw, self.n = raw, 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.n += len(data)
        return data


class DecompressionBomb(tarfile.TarError):
    pass


@dataclass
class _InflateGuard:
    compressed: _Counting
    ratio: float
    slack: int = 16 << 20  # a small gzip of a few big images may well inflate 100x at first

    def check(self, inflated: int) -> None:
        if inflated > self.slack + self.ratio * self.compressed.n:
            raise DecompressionBomb(f"inflated {inflated} bytes from {self.compressed.n} compressed")


def iter_samples(uri: str, max_member_bytes: int, max_inflate_ratio: float = 200.0,
                 path: str | None = None) -> Iterator[TarSample]:
    """Samples in member order. `path` reads a local tar from another (escaped) path than its
    source, as a followed link does."""
    local = path or (None if fs.is_remote(uri) else uri)
    raw = _open_local(local) if local else fs.open_stream(uri)
    total = fs.file_size(uri) if not local else None
    try:
        yield from _samples(raw, uri, max_member_bytes, max_inflate_ratio, total)
    finally:
        raw.close()


def _open_local(path: str) -> Any:
    import os

    fd = os.open(names.unescape(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    return os.fdopen(fd, "rb")


def _samples(raw: Any, uri: str, max_member_bytes: int, ratio: float, total: int | None) -> Iterator[TarSample]:
    if total is None and hasattr(raw, "fileno"):
        import os

        total = os.fstat(raw.fileno()).st_size
    gz = uri.lower().endswith((".tar.gz", ".tgz"))
    counting = _Counting(raw)
    reader = _ForwardReader(gzip.GzipFile(fileobj=counting, mode="rb") if gz else counting,
                            _InflateGuard(counting, ratio) if gz else None)
    current: TarSample | None = None
    offset = 0
    try:
        tar = tarfile.open(fileobj=reader, mode="r:", encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
        while True:
            offset = tar.offset
            member = tar.next()
            tar.members.clear()  # tarfile keeps every header it has read: not for a 100k-member tar
            if member is None:
                if reader.last.strip(b"\0"):  # not the zero block that ends an archive
                    raise tarfile.HeaderError(f"unreadable header at byte {offset}")
                break
            name = names.from_text(member.name)
            reason = _member_reason(member, member.name)  # the raw name: a backslash of escaping is not one
            if reason is None:
                m = _KEY_EXT.match(name)
                key, ext = (m.group(1), m.group(2).lower()) if m else (name, "")
                if current is not None and key != current.key:
                    yield current
                    current = None
                current = current or TarSample(key=key)
                if member.size > max_member_bytes:  # from the header: the member is skipped, not read
                    current.reject = "too_large"
                    continue
                data = tar.extractfile(member)
                current.members[ext] = data.read() if data is not None else b""
                continue
            if current is not None:
                yield current
                current = None
            yield TarSample(key=name, reject=reason)
    except DecompressionBomb as exc:
        yield from _broken(current, uri, "decompression_bomb", f"{exc}; stopped at byte {offset}")
        return
    except (tarfile.TarError, OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        unread = "" if total is None else f"; {max(0, total - counting.n)} of {total} bytes not read"
        where = f"at byte {offset}" + (" of the inflated stream" if gz else "")
        yield from _broken(current, uri, "corrupt_tar", f"broke {where}: {str(exc)[:200]}{unread}")
        return
    if current is not None:
        yield current


def _member_reason(member: tarfile.TarInfo, name: str) -> str | None:
    if not member.isreg():
        return next((r for test, r in _MEMBER_REASONS if test(member)), "not_a_regular_file")
    return "unsafe_member_name" if unsafe_name(name) else None


def _broken(current: TarSample | None, uri: str, reason: str, error: str) -> Iterator[TarSample]:
    """The sample being read when the tar broke keeps the members read whole; the break is one row."""
    if current is not None and (current.members or current.reject):  # else its member is the break
        yield current
    yield TarSample(key=f"{posixpath.basename(uri)}#{reason}", reject=reason, error=error)


def image_member(sample: TarSample) -> bytes | None:
    for ext in IMAGE_EXTS:
        if ext in sample.members:
            return sample.members[ext]
    return None


def caption_member(sample: TarSample) -> str | None:
    for ext in ("txt", "caption", "text"):
        if ext in sample.members:
            return sample.members[ext].decode("utf-8", "replace")
    return None


"""List an input folder so that every entry found becomes exactly one item: read later, or
rejected now with a named reason and never opened.

The rules (the README repeats them):
- Names are bytes (`os.scandir` on bytes paths); they are stored escaped (`names.escape`).
- A name starting with '.' is hidden: one `hidden` item, never opened; a hidden folder is one
  item and is not listed.
- Symlinks are not followed by default: one `symlink` item each. With `follow_symlinks`, a link
  is read (or listed) only when its target lies inside the input root; otherwise the item is
  `outside_input`, `dangling_symlink`, `symlink_loop` (a folder that holds the link itself),
  or `already_listed` (a folder reached twice).
- FIFOs, sockets and devices are items with those reasons; a folder whose name looks like a
  file we read (`x.jpg/`, `y.tar/`) is an `is_a_directory` item, and its entries are listed too.
- An entry that cannot be stat'ed or a folder that cannot be listed is `unreadable`.
Plain folders are containers, not items. Object stores have no links or devices: every object
is an item, and a hidden prefix is one item, as a hidden folder is.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow.fs as pafs

from curation.io import fs, names

URL_LIST_EXTS = (".parquet", ".csv", ".jsonl", ".json", ".tsv")
TAR_EXTS = (".tar", ".tar.gz", ".tgz")
_TYPE_REASONS = ((stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "device"),
                 (stat.S_ISBLK, "device"), (stat.S_ISDIR, "is_a_directory"), (stat.S_ISLNK, "symlink"))


@dataclass(frozen=True)
class Item:
    source: str  # escaped local path, or URI
    kind: str  # how it is read: "image", "tar" or "urls"
    reject: str | None = None
    read_path: str | None = None  # escaped; only where it differs from source (a followed link)
    size: int = 0  # bytes, as listed (0 when unknown or rejected)


def kind_of(name: str) -> str:
    low = name.lower()
    if low.endswith(TAR_EXTS):
        return "tar"
    if low.endswith(URL_LIST_EXTS):
        return "urls"
    return "image"


def type_reason(mode: int) -> str | None:
    """The reject reason for anything that is not a regular file (None for a regular file)."""
    for test, reason in _TYPE_REASONS:
        if test(mode):
            return reason
    return None if stat.S_ISREG(mode) else "not_a_regular_file"


def list_input(uri: str, follow_symlinks: bool = False) -> list[Item]:
    if fs.is_remote(uri):
        return list(_list_remote(uri))
    root = os.fsencode(os.path.abspath(uri))
    walker = _LocalWalk(root, follow_symlinks)
    return list(walker.walk(root, frozenset([_dir_id(os.stat(root))])))


def _dir_id(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


class _LocalWalk:
    def __init__(self, root: bytes, follow: bool):
        self.root_real = os.path.realpath(root)
        self.follow = follow
        self.listed: set[tuple[int, int]] = set()

    def walk(self, folder: bytes, ancestors: frozenset) -> Iterator[Item]:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            yield Item(names.escape(folder), "image", "unreadable")
            return
        for entry in entries:
            yield from self._entry(entry.path, entry.name, ancestors)

    def _entry(self, path: bytes, name: bytes, ancestors: frozenset) -> Iterator[Item]:
        source = names.escape(path)
        kind = kind_of(names.escape(name))
        if name.startswith(b"."):
            yield Item(source, kind, "hidden")
            return
        try:
            st = os.lstat(path)
        except OSError:
            yield Item(source, kind, "unreadable")
            return
        if stat.S_ISLNK(st.st_mode):
            if not self.follow:
                yield Item(source, kind, "symlink")
                return
            yield from self._link(path, source, kind, ancestors)
            return
        if stat.S_ISDIR(st.st_mode):
            yield from self._folder(path, source, kind, st, ancestors)
            return
        reason = type_reason(st.st_mode)
        yield Item(source, kind, reason, None, 0 if reason else st.st_size)

    def _folder(self, path: bytes, source: str, kind: str, st: os.stat_result,
                ancestors: frozenset) -> Iterator[Item]:
        if kind != "image" or os.path.splitext(path)[1].lower() in _IMAGE_LIKE:
            yield Item(source, kind, "is_a_directory")
        self.listed.add(_dir_id(st))
        yield from self.walk(path, ancestors | {_dir_id(st)})

    def _link(self, path: bytes, source: str, kind: str, ancestors: frozenset) -> Iterator[Item]:
        target = os.path.realpath(path)
        if target != self.root_real and not target.startswith(self.root_real + b"/"):
            yield Item(source, kind, "outside_input")
            return
        try:
            st = os.stat(path)
        except OSError as exc:
            yield Item(source, kind, "symlink_loop" if exc.errno == errno.ELOOP else "dangling_symlink")
            return
        if stat.S_ISDIR(st.st_mode):
            if _dir_id(st) in ancestors:
                yield Item(source, kind, "symlink_loop")
            elif _dir_id(st) in self.listed:
                yield Item(source, kind, "already_listed")
            else:  # entries under a followed folder keep the link's path as their source
                yield from self._folder(path, source, kind, st, ancestors)
            return
        reason = type_reason(st.st_mode)
        yield Item(source, kind, reason, None if reason else names.escape(target), 0 if reason else st.st_size)


# Folder names that would otherwise pass for an image file: x.jpg/ is an item, photos/ is not.
_IMAGE_LIKE = {b".jpg", b".jpeg", b".png", b".webp", b".gif", b".bmp", b".tif", b".tiff", b".avif",
               b".heic", b".jxl"}


def _list_remote(uri: str) -> Iterator[Item]:
    filesystem, path = fs.resolve(uri)
    infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    prefix = uri.rstrip("/")
    hidden_prefixes: set[str] = set()
    for info in sorted(infos, key=lambda i: i.path):
        if info.type != pafs.FileType.File:
            continue  # an object store's "folders" are key prefixes, not objects
        rel = info.path[len(path):].lstrip("/")
        parts = rel.split("/")
        hidden = next((i for i, p in enumerate(parts) if p.startswith(".")), None)
        if hidden is not None and hidden < len(parts) - 1:
            folder = "/".join(parts[:hidden + 1])
            if folder not in hidden_prefixes:
                hidden_prefixes.add(folder)
                yield Item(f"{prefix}/{folder}", "image", "hidden")
            continue
        yield Item(f"{prefix}/{rel}", kind_of(rel), "hidden" if hidden is not None else None, None,
                   int(info.size or 0))


def read_local_capped(path: str, max_bytes: int) -> tuple[bytes | None, str | None]:
    """A listed regular file, read without following a link and without reading past the cap:
    (bytes, None) or (None, reason). The checks run on the open descriptor, so a file swapped
    for a link, a FIFO or a device after listing is refused, not read (and never blocks)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(names.unescape(path), flags)
    except OSError as exc:
        return None, {errno.ELOOP: "symlink", errno.ENOENT: "vanished", errno.ENXIO: "fifo"}.get(
            exc.errno, "unreadable")
    try:
        st = os.fstat(fd)
        reason = type_reason(st.st_mode)
        if reason:
            return None, reason
        if st.st_size > max_bytes:  # known before a byte is read: a 3 GiB sparse file costs nothing
            return None, "too_large"
        with os.fdopen(os.dup(fd), "rb", buffering=0) as f:
            return fs.read_stream_capped(f, max_bytes)
    except OSError:
        return None, "unreadable"
    finally:
        os.close(fd)

"""Read WebDataset tars as samples, member by member, without trusting member names.

We stream with `tarfile` rather than `webdataset.WebDataset` because ingest must turn every
member problem (unsafe name, sample without an image, a tar cut short) into a recorded reject
row; webdataset's readers either raise or skip through a handler. Member names are only ever
parsed as strings: nothing is extracted to the filesystem.
"""

from __future__ import annotations

import posixpath
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field

from curation.io import fs

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
# webdataset's convention: key = path up to the first dot of the basename, ext = the rest.
_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


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


def iter_samples(uri: str, max_member_bytes: int) -> Iterator[TarSample]:
    current: TarSample | None = None
    f, path = fs.resolve(uri)
    try:
        with f.open_input_stream(path) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = member.name
                if unsafe_name(name):
                    if current is not None:
                        yield current
                        current = None
                    yield TarSample(key=name, reject="unsafe_member_name")
                    continue
                m = _KEY_EXT.match(name)
                key, ext = (m.group(1), m.group(2).lower()) if m else (name, "")
                if current is not None and key != current.key:
                    yield current
                    current = None
                if current is None:
                    current = TarSample(key=key)
                if member.size > max_member_bytes:
                    current.reject = "too_large"
                    continue
                data = tar.extractfile(member)
                current.members[ext] = data.read() if data is not None else b""
    except (tarfile.TarError, OSError, EOFError) as exc:
        if current is not None:
            yield current
            current = None
        yield TarSample(key=f"{posixpath.basename(path)}#corrupt", reject="corrupt_tar", error=str(exc)[:300])
    if current is not None:
        yield current


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

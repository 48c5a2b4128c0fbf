"""File and tar-member names as bytes, written as text that maps back to exactly those bytes.

A crawl's names are bytes: a Linux file name or a tar member name need not be valid UTF-8, and
one such name must neither stop a run nor be stored in a form that two names could share.
A name that is valid UTF-8 and holds no backslash is written as it is (the common case stays
readable). Any other name is written with each backslash doubled and each byte that is not
part of valid UTF-8 as `\\xNN`, the way Python's `backslashreplace` writes it. A written name
holds a backslash exactly when it was escaped, so `unescape` never has to guess.
"""

from __future__ import annotations

import re

_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2})")


def escape(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
        if "\\" not in text:
            return text
    except UnicodeDecodeError:
        pass
    return raw.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def unescape(text: str) -> bytes:
    if "\\" not in text:
        return text.encode("utf-8")
    out, pos = bytearray(), 0
    for m in _ESCAPE.finditer(text):
        out += text[pos:m.start()].encode("utf-8")
        out += b"\\" if m.group(1) == "\\" else bytes([int(m.group(1)[1:], 16)])
        pos = m.end()
    out += text[pos:].encode("utf-8")
    return bytes(out)


def from_text(name: str) -> str:
    """A name that the stdlib decoded with `surrogateescape` (tarfile, os.fsdecode), escaped."""
    return escape(name.encode("utf-8", "surrogateescape"))

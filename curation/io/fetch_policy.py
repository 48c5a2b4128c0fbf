"""What a fetch of one URL may do: schemes, time, retries, bytes, redirects and addresses.

Its own module because both fetchers read it: http.py (HTTP and HTTPS) and s3fetch.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from curation.io.address_policy import AddressPolicy

# What fetch() can read at all; `allowed_schemes` picks among these (file://, ftp:// ... never).
SUPPORTED_SCHEMES = ("http", "https", "s3")


@dataclass(frozen=True)
class FetchPolicy:
    timeout_s: float = 10.0  # connect, and each read
    budget_s: float = 30.0  # the whole URL: every attempt, redirect and byte
    retries: int = 2
    backoff_s: float = 0.5
    max_bytes: int = 32 * 1024 * 1024
    max_redirects: int = 5
    allowed_schemes: tuple[str, ...] = SUPPORTED_SCHEMES
    addresses: AddressPolicy = field(default_factory=AddressPolicy)
    user_agent: str = "curation/0.1 (research dataset builder)"

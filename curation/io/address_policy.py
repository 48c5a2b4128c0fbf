"""Which network addresses a URL row may make us connect to, checked at connect time.

A crawl's URL list is data from strangers. On a cloud cluster a row naming 169.254.169.254, a
metadata hostname, loopback or a private range would hand the crawl our instance credentials or
our internal services (SSRF). So every connection made for a URL row resolves its host once,
checks every address that resolution returned, and connects only to those checked addresses:
a DNS answer that changes between a check and a later lookup (rebinding) never reaches a socket,
because there is no later lookup. Redirect hops connect through the same code.

Only globally routable addresses pass by default. `ingest.allow_networks` names the private
networks an internal mirror lives in (CIDRs); the cloud metadata addresses stay blocked even then.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from functools import lru_cache

# Metadata services: never a crawl target, whatever allow_networks says.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "192.0.0.192"))
METADATA_HOSTS = frozenset(("metadata", "metadata.google.internal", "metadata.goog", "instance-data",
                            "instance-data.ec2.internal", "metadata.azure.internal", "metadata.tencentyun.com"))

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedAddress(OSError):
    """A URL row's host is, or resolves to, an address the policy refuses."""


@dataclass(frozen=True)
class AddressPolicy:
    allow_networks: tuple[str, ...] = ()  # CIDRs of private networks a mirror may live in

    @property
    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return _parse_networks(self.allow_networks)

    def allowed(self, addr: IPAddress) -> bool:
        if addr in METADATA_ADDRESSES:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped  # ::ffff:127.0.0.1 is loopback, however it is written
        if addr in METADATA_ADDRESSES:
            return False
        if any(addr in net for net in self.networks):
            return True
        # is_global is False for loopback, private, link-local, unspecified, shared (100.64/10),
        # documentation, reserved and multicast ranges: none of them is a public image host.
        return addr.is_global and not addr.is_multicast

    def resolve(self, host: str, port: int) -> list[tuple[int, tuple]]:
        """(family, sockaddr) of every address `host` resolves to; raises BlockedAddress if any is
        refused (a name that mixes public and internal answers is not trusted for either)."""
        name = host.strip("[]").rstrip(".").lower()
        if name in METADATA_HOSTS:
            raise BlockedAddress(f"{host} is a metadata service name")
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        out = []
        for family, _, _, _, sockaddr in infos:
            addr = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
            if not self.allowed(addr):
                raise BlockedAddress(f"{host} resolves to {addr}, which is not a public address")
            out.append((family, sockaddr))
        return out


@lru_cache(maxsize=32)
def _parse_networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def check_networks(cidrs: list[str]) -> str | None:
    """The first entry that is not a CIDR, for a config check; None when all parse."""
    for c in cidrs:
        try:
            ipaddress.ip_network(str(c), strict=False)
        except ValueError:
            return str(c)
    return None


def connect(policy: AddressPolicy, host: str, port: int, timeout: float | None,
            source_address: tuple | None, socket_options: list | None) -> socket.socket:
    """A connected socket to one of `host`'s checked addresses (tried in resolver order)."""
    last: OSError | None = None
    for family, sockaddr in policy.resolve(host, port):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            for opt in socket_options or ():
                sock.setsockopt(*opt)
            if timeout is not None:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            last = exc
            sock.close()
    raise last or OSError(f"no address for {host}")

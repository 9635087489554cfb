"""Which stream URLs from the ITS API the producer may open.

The API's answers are not ours: a URL in them could point the producer at a local file, at the host itself or at
a cloud metadata service (169.254.169.254) and publish what it reads. So only rtsp, http and https URLs are taken,
and only when their host is not loopback, link-local, unspecified, multicast, reserved or a metadata service
(names are resolved), unless the host is listed in the producer's `its_allowed_local_hosts`.
"""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("fd00:ec2::254")})  # AWS's IPv6 metadata service (not link-local)
Resolve = Callable[[str], list[str]]


def resolve_host(host: str) -> list[str]:
    """The host's addresses; none when it does not resolve here (then nothing here can open it either)."""
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, None)})
    except (OSError, UnicodeError):
        return []


def local_address(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast or ip.is_reserved
            or ip in METADATA_ADDRESSES)


class CameraUrlPolicy:
    def __init__(self, allowed_local_hosts: Iterable[str] = (), resolve: Resolve = resolve_host):
        self.allowed = {host.lower() for host in allowed_local_hosts}
        self.resolve = resolve

    def refusal(self, url: str) -> str | None:
        """None when the URL may be opened, else why not."""
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
        except ValueError:
            return "not a valid URL"
        if parts.scheme.lower() not in STREAM_SCHEMES:
            return f"scheme {parts.scheme or '(none)'!r} is not one of {', '.join(STREAM_SCHEMES)}"
        if not host:
            return "no host"
        if host in self.allowed:
            return None
        addresses = [host] if _is_address(host) else self.resolve(host)
        local = [address for address in addresses if local_address(address)]
        if host == "localhost" or local:
            return f"host {host} is a local address ({', '.join(local) or 'localhost'})"
        return None


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True

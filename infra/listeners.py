"""Which addresses only this machine can reach: listeners bound to them may serve reads without a token."""
from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True for a loopback address or the name localhost (a host name, IPv6 without brackets)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def http_url(host: str, port: int, path: str = "/") -> str:
    """The URL of a listener, for people to open: an IPv6 address goes in brackets."""
    return f"http://[{host}]:{port}{path}" if ":" in host else f"http://{host}:{port}{path}"

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

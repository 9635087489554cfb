"""Which addresses only this machine can reach: listeners bound to them may serve reads without a token; beyond
them a token must be long enough not to be guessed."""
from __future__ import annotations

import ipaddress

from schemas.settings.base import ConfigError

# A listener reachable from the network is open to guessing: 16 characters of a random token (what `secrets`
# makes: 24 bytes give 32) are beyond it, a short word is not.
MIN_TOKEN_CHARS = 16


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


def verify_token_length(token: str, host: str, variable: str) -> None:
    """ConfigError, naming the variable (never the token), when a listener beyond loopback has a short token."""
    if not is_loopback(host) and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"{variable} is too short for a listener on {host}: give it {MIN_TOKEN_CHARS} characters or "
                          "more (python3 -c 'import secrets; print(secrets.token_urlsafe(24))')")

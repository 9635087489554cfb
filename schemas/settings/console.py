"""Operator console settings: where it listens, where its token comes from, how much it keeps in memory."""
from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator

from schemas.settings.base import DEFAULT_PORTS, EnvName, Frozen, ListenHost


class ConsoleConfig(Frozen):
    host: ListenHost = Field(default="127.0.0.1",
                             description="listen address; any other than loopback requires a token")
    port: int = Field(default=8090, ge=0, le=65535, description="HTTP port; 0 picks a free one")
    token_env: EnvName = Field(
        default="CITYGUARD_CONSOLE_TOKEN",
        description="environment variable holding the access token; unset on loopback: a random one per start")
    require_token_for_reads: bool = Field(
        default=False, description="what the pages show needs a session (or the token) on loopback too, the page "
        "itself then offering sign-in; set it behind a reverse proxy, whose requests all come from loopback")
    session_hours: float = Field(
        default=12.0, ge=0.25, le=720, description="how long the session cookie that opening the console URL with "
        "?token= sets is accepted; browsers send it to every port of the host, so this bounds how long another web "
        "server there could use it")
    public_origins: list[str] = Field(
        default_factory=list, description="origins the console is also reached at through a reverse proxy "
        "(https://console.city.example); changes sent from their pages are accepted, and an https one makes the "
        "session cookie Secure, so that signing in over plain http is refused except at loopback names and the "
        "http:// origins listed")
    request_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="longest wait for a request's line and headers, from the "
        "connection's start or its previous answer (then the connection is closed), for its body (then 408), and for "
        "the client to read its answer (then the connection is closed)")
    max_connections: int = Field(default=256, ge=1, le=10_000,
                                 description="connections held at once by all clients; more are answered 503 and "
                                 "closed")
    max_connections_per_client: int = Field(
        default=32, ge=1, le=10_000, description="connections held at once by one client address (an IPv6 client's "
        "/64; a browser opens up to 6; behind a reverse proxy every connection is the proxy's); more are answered 503 "
        "and closed")
    refresh_hz: float = Field(default=4.0, ge=2, le=30, description="how often the browser fetches the live view")
    frame_buffer: int = Field(default=60, ge=1, le=1000,
                              description="recent frames kept per camera, to find an incident's evidence frame")
    zone_history: int = Field(default=360, ge=10, le=10_000, description="zone windows kept per zone for the charts")
    recent_events: int = Field(default=200, ge=10, le=10_000, description="events (and evidence frames) kept")
    hard_negatives_dir: str = Field(
        default="../var/hard-negatives",
        description="false alarms' evidence frames are written here (<camera>/<event>.jpg + .json), relative to the "
        "configuration file, as hard negatives for retraining")

    @field_validator("public_origins")
    @classmethod
    def verify_origins(cls, origins: list[str]) -> list[str]:
        """As browsers send them in `Origin`: scheme://host[:port], lower case, nothing after."""
        normalised = []
        for origin in origins:
            parts = urlsplit(origin.strip().lower())
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/") \
                    or parts.query or parts.fragment:
                # Worded without a URL pattern: the error is printed redacted, every URL in it parsed.
                raise ValueError("an origin is a scheme, a host and an optional port with nothing after, such as "
                                 "https://console.city.example or http://10.0.0.5:8080")
            # Browsers leave the scheme's default port out: https://host:443 would match no page's changes.
            netloc = parts.netloc.removesuffix(f":{DEFAULT_PORTS[parts.scheme]}")
            normalised.append(f"{parts.scheme}://{netloc}")
        return normalised

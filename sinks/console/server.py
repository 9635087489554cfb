"""The console's web server (aiohttp): the page, the latest JPEG per camera, live overlays and charts as JSON,
incident reviews and the scene editor's save.

Access: a token, compared in constant time, from the `Authorization: Bearer` header or the X-Console-Token header,
or the session cookie that opening `/?token=...` sets, or that a page whose session ended gets by signing in with the
token (POST /api/session): signed with the token, never the token itself, accepted for `console.session_hours`, and
Secure once an https origin is listed in `console.public_origins` (a sign-in whose browser would drop it is refused,
saying why). Changing anything always needs it; on a non-loopback address, or with `console.require_token_for_reads`
(behind a reverse proxy), every request needs it but those for the page itself, which then offers sign-in. A client
that offers wrong tokens waits longer and longer before its next one is checked (wrong_tokens.py), once a request
however many it offers. No other site may frame the pages.
Slow and greedy clients are bounded by the listener (connections.py) and the deadline on a body.
The store is synchronous (SQLAlchemy), so its calls run in worker threads.
"""
from __future__ import annotations

import asyncio
import errno
import functools
import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from infra.files import replace_file
from infra.listeners import MIN_TOKEN_CHARS, is_loopback, verify_token_length
from schemas.event import SEVERITY_RANK
from schemas.settings.base import env_value
from schemas.settings.config import Config, ConfigError
from sinks.alerts.store import ACKNOWLEDGED, FALSE_ALARM, OPEN, IncidentRow, IncidentStore
from sinks.console.connections import ConnectionGuard, GuardedConnection, client_of
from sinks.console.scene_file import SceneConflict, SceneError, SceneFile, geometry_version
from sinks.console.state import ConsoleState, feed_health
from sinks.console.wrong_tokens import WrongTokens

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "cityguard_console"
# Whether the request gave the token or a valid session cookie: checked once, so that a wrong token counts once.
AUTHENTICATED = web.RequestKey("authenticated", bool)
SESSION_LABEL = b"cityguard-console-session"
# The most characters each may have (`by`: the store's column); request_id: the page's id of one verdict.
REVIEW_FIELDS = {"by": 100, "note": 2000, "request_id": 100}
ANSWERS_KEPT = 1000  # answers to recent verdicts kept for a request sent again
SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
FRAME_SEQ = re.compile(r"[0-9]{1,18}")
ISSUED_AT = re.compile(r"[0-9]{1,12}")  # a session cookie's issue time, whole seconds
CLOCK_SKEW_S = 60  # how far ahead of this console's clock another console's may be
# The page loads its scripts, styles and images from here only, and no other page may frame it (clickjacking).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
                               "object-src 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",  # a picture or JSON answer is never run as a script or a page
}
OPEN_LISTED = 100  # open incidents listed, the most urgent first; the summary counts them all
RECENT_LISTED = 50  # incidents listed beside the open ones, whatever their state
json_dumps = functools.partial(json.dumps, allow_nan=False)  # NaN is not JSON: the browser's parser would refuse it


@dataclass
class Site:
    """What the server knows about the site: geometry and thresholds from the configuration (replaced on save)."""

    config: Config
    scene_file: SceneFile
    hard_negatives: Path


def camera_geometry(camera) -> dict:
    scene = camera.scene.model_dump(mode="json", exclude={"thresholds", "vehicle_classes", "road_classes"}) \
        if camera.scene is not None else None
    return {
        "id": camera.id, "name": camera.name or camera.id,
        "zones": [{"id": zone.id, "polygon": zone.polygon, "area_m2": zone.area_m2,
                   "entrances": [line.model_dump(mode="json") for line in zone.entrances]} for zone in camera.zones],
        "scene": scene,
    }


def in_jpeg_pixels(box: list[float], frame) -> list[float]:
    """A box of the camera's own picture in the pixels of the kept JPEG, which capture may have scaled down: the
    training set labels the image file."""
    if frame.picture_size == frame.jpeg_size:
        return box
    scale_x, scale_y = frame.jpeg_size[0] / frame.picture_size[0], frame.jpeg_size[1] / frame.picture_size[1]
    return [round(value * scale, 1) for value, scale in zip(box, (scale_x, scale_y, scale_x, scale_y), strict=True)]


def false_alarm_record(camera_id: str, event_id: str, evidence, summary: dict | None, marked_at: float,
                       by: str) -> dict:
    """The sidecar `cityguard dataset build` reads: camera, time, and the wrong boxes, each with its class
    (`"wrong": [{"class": name, "xyxy": [x1, y1, x2, y2]}, ...]`, in the kept JPEG's pixels).

    The wrong boxes are the detections of the event's tracks; an event that names no tracks (a zone's density)
    blames every detection of the frame's most frequent class. The frame's other detections stay as they are."""
    detections = evidence.detections or {"boxes": [], "class_name": [], "track_id": None}
    blamed = set(summary["track_ids"]) if summary and summary["track_ids"] else set()
    tracks = detections["track_id"] or [-1] * len(detections["boxes"])
    if blamed:
        wrong = [index for index, track in enumerate(tracks) if track in blamed]
    else:
        names = detections["class_name"]
        dominant = max(set(names), key=names.count) if names else None
        wrong = [index for index, name in enumerate(names) if name == dominant]
    return {
        "camera": camera_id, "time": evidence.frame.captured_at, "event_id": event_id,
        "wrong": [{"class": detections["class_name"][index],
                   "xyxy": in_jpeg_pixels(detections["boxes"][index], evidence.frame)} for index in wrong],
        "seq": evidence.frame.seq, "marked_at": marked_at, "by": by,
        "event_type": summary["type"] if summary else None, "reason": summary["reason"] if summary else None,
        "detections": evidence.detections,
    }


def private_folder(folder: Path) -> None:
    """Makes the folder; readable by this user only where this user owns it (one an earlier console left readable to
    all), left as it is where another user owns it (an administrator's folder shared with the console's group, a
    volume's). A refused change (some network file systems) stops no write: the files are this user's only."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder.stat().st_uid != os.geteuid():
        return
    try:
        folder.chmod(0o700)
    except PermissionError:
        log.warning("cannot make %s readable by the console's user only", folder)


def write_hard_negative(folder: Path, camera_id: str, event_id: str, evidence, summary: dict | None,
                        marked_at: float, by: str) -> Path:
    """The evidence frame (<camera>/<event>.jpg) and its false-alarm record (.json beside it), each replaced whole
    and readable by this user only, as the frame store keeps camera pictures; `camera_id` is a configured camera's,
    which its pattern keeps a plain folder name (never `.` or `..`). A camera's folder that is a link is refused:
    whoever may write a shared hard-negatives folder could point it at any folder the console may write to."""
    target = folder / camera_id
    private_folder(folder)
    if target.is_symlink():
        raise OSError(errno.ELOOP, "the camera's folder is a link, which the console does not follow", str(target))
    private_folder(target)
    stem = hard_negative_stem(event_id)
    image = target / f"{stem}.jpg"
    replace_file(image, evidence.frame.jpeg, mode=0o600)
    record = false_alarm_record(camera_id, event_id, evidence, summary, marked_at, by)
    replace_file(target / f"{stem}.json", json.dumps(record, indent=2), mode=0o600)
    return image


def hard_negative_stem(event_id: str) -> str:
    """The file name of an incident's hard negative: the event id, with what a file name cannot hold replaced and
    then a digest of the id, so that two ids differing only there (a crowd zone's `cam:zone:...` and `cam_zone_...`)
    keep their own files."""
    stem = SAFE_NAME.sub("_", event_id)
    return stem if stem == event_id else f"{stem}-{hashlib.sha256(event_id.encode()).hexdigest()[:12]}"


def remove_hard_negative(image: Path) -> None:
    """Removes a hard negative's record, then its frame (`cityguard dataset build` reads the record)."""
    for path in (image.with_suffix(".json"), image):
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class OpenIncident:
    row: IncidentRow
    acknowledged: bool


def open_incidents(store: IncidentStore) -> list[OpenIncident]:
    """Every open incident (IncidentStore.open_incidents says when one is acknowledged), the most urgent first:
    unacknowledged, then critical before warning before info, then the most recently changed."""
    listed = [OpenIncident(row, acknowledged) for row, acknowledged in store.open_incidents()]
    return sorted(listed, key=lambda incident: (incident.acknowledged, -SEVERITY_RANK.get(incident.row.severity, -1),
                                                -incident.row.updated_at))


def incident_summary(incidents: list[OpenIncident]) -> dict:
    """How many incidents are open, and how many of them unacknowledged: in all and by severity; and which of them
    are critical and unacknowledged, whose alarm every page sounds until it is acknowledged or silenced by id."""
    summary: dict = {"open": {"total": 0}, "unacknowledged": {"total": 0}, "unacknowledged_critical_ids": []}
    for incident in incidents:
        for counted in ["open"] + ([] if incident.acknowledged else ["unacknowledged"]):
            counts = summary[counted]
            counts["total"] += 1
            counts[incident.row.severity] = counts.get(incident.row.severity, 0) + 1
        if not incident.acknowledged and incident.row.severity == "critical":
            summary["unacknowledged_critical_ids"].append(incident.row.id)
    return summary


def json_response(data, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=json_dumps)


def console_token(config: Config, host: str) -> tuple[str, bool]:
    """(token, generated): the configured token, refused when short where the network reaches it
    (verify_token_length), or a random one for this run on loopback; exits on any other address without one."""
    settings = config.console
    token = env_value(settings.token_env, "console.token_env")
    if token:
        # Published through a reverse proxy, a loopback console is reached from the network.
        published_by = next((name for name, value in (("console.public_origins", settings.public_origins),
                                                      ("console.require_token_for_reads",
                                                       settings.require_token_for_reads)) if value), None)
        verify_token_length(token, host, settings.token_env, published_by)
        return token, False
    if not is_loopback(host):
        raise ConfigError(f"console.host {host} is not a loopback address: set {config.console.token_env} "
                          "(the console needs a token there)")
    return secrets.token_urlsafe(24), True


def token_matches(offered: str, token: str) -> bool:
    # Header values arrive with undecodable bytes as lone surrogates, which plain encode() refuses.
    return hmac.compare_digest(offered.encode("utf-8", "surrogatepass"), token.encode())


def session_cookie(token: str, issued_at: int) -> str:
    """The session cookie's value: the time it was issued and an HMAC of that time keyed by the token. The cookie,
    which browsers also send to the other ports of the host, never carries the token itself; the time lets the
    server end the session however long a browser keeps it; it stays valid across console restarts, and a new token
    ends every session."""
    signature = hmac.new(token.encode(), SESSION_LABEL + str(issued_at).encode(), hashlib.sha256).hexdigest()
    return f"{issued_at}.{signature}"


def session_valid(cookie: str, token: str, lifetime_s: float, now: float) -> bool:
    """Whether the cookie is one `session_cookie` made with this token, issued at most `lifetime_s` ago (or a moment
    ahead of this clock: by another console of the same token, behind the same address)."""
    issued, _, _ = cookie.partition(".")
    if not ISSUED_AT.fullmatch(issued) or not -CLOCK_SKEW_S <= now - int(issued) <= lifetime_s:
        return False
    return token_matches(cookie, session_cookie(token, int(issued)))


def header_tokens(request: web.Request) -> list[str]:
    """The tokens the request offers in its headers: `Authorization: Bearer` and X-Console-Token."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return [value for value in (credentials.strip() if scheme.lower() == "bearer" else "",
                                request.headers.get("X-Console-Token", "")) if value]


def forwarded_from_https(request: web.Request) -> bool:
    """Whether a reverse proxy says the browser's request came over https (X-Forwarded-Proto, Forwarded): its browser
    keeps the Secure cookie whatever Host the proxy sends. Trusted only to decide that, after the token was checked."""
    if request.headers.get("X-Forwarded-Proto", "").strip().lower() == "https":
        return True
    return any(part.strip().lower() == "proto=https"
               for element in request.headers.get("Forwarded", "").split(",") for part in element.split(";"))


def request_host_name(authority: str) -> str | None:
    """The host name of a `Host` header or an origin's host[:port]; None when it is not one (a port that is no
    number or out of range, an unclosed IPv6 bracket)."""
    try:
        parts = urlsplit(f"//{authority}")
        parts.port  # noqa: B018 - parsed only to refuse a bad one
        return parts.hostname or ""
    except ValueError:
        return None


async def json_object(request: web.Request, timeout_s: float) -> dict:
    """The request's body, a JSON object, which must arrive whole within `timeout_s`: the head's deadline ends once
    the head is in, and a body sent a byte at a time would hold the connection."""
    try:
        async with asyncio.timeout(timeout_s):
            body = await request.json()
    except TimeoutError:
        log.warning("request body from %s did not arrive within %g s (console.request_timeout_s): answered 408",
                    request.remote, timeout_s)
        raise web.HTTPRequestTimeout(text=f"the request body did not arrive within {timeout_s:g} s\n",
                                     headers={"Connection": "close"}) from None
    except (ValueError, UnicodeDecodeError, LookupError):  # LookupError: a charset Python does not know
        raise web.HTTPBadRequest(text="expected a JSON body\n") from None
    except RecursionError:
        raise web.HTTPBadRequest(text="the JSON body is nested too deeply\n") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="expected a JSON object\n")
    return body


def review_summary(review) -> dict:
    return {"at": review.at, "verdict": review.verdict, "by": review.by, "note": review.note,
            "evidence_path": review.evidence_path}


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


class ConsoleServer:
    def __init__(self, site: Site, state: ConsoleState, store: IncidentStore, token: str, host: str,
                 refresh_hz: float, status_silence_s: float, clock: Callable[[], float] = time.monotonic):
        self.site = site
        self.state = state
        self.store = store
        self.token = token
        self.wrong_tokens = WrongTokens(clock)
        self.reviewing = asyncio.Lock()
        self.answered: OrderedDict[tuple[str, str], dict] = OrderedDict()  # (request id, incident) -> answer
        settings = site.config.console
        # Read-only pages need no token on loopback, unless a reverse proxy makes every request come from there.
        self.open_reads = is_loopback(host) and not settings.require_token_for_reads
        self.public_origins = frozenset(settings.public_origins)
        # Published over https, the session cookie is Secure: a plain-http request to the public host (a link that
        # someone on the path makes the browser follow) would carry it in clear, to be replayed for its lifetime.
        # Host cannot tell which origin a request came through (a proxy may send the console's loopback address), and
        # browsers take a Secure cookie from http://localhost and loopback addresses too: only a host listed with
        # http:// gets it without.
        self.https_origins = sorted(origin for origin in self.public_origins if origin.startswith("https://"))
        self.secure_sessions = bool(self.https_origins)
        self.plain_http_hosts = frozenset(urlsplit(origin).netloc for origin in self.public_origins
                                          if origin.startswith("http://"))
        # The Host a proxy passes on from an https origin: as the browser sent it, or without its port (nginx $host).
        self.https_hosts = frozenset(name for parts in map(urlsplit, self.https_origins)
                                     for name in (parts.netloc, parts.hostname))
        self.request_timeout_s = settings.request_timeout_s
        self.session_s = settings.session_hours * 3600
        self.refresh_hz = refresh_hz
        self.status_silence_s = status_silence_s  # no camera report for this long: the producer is gone
        self.started_at = time.time()
        state.follow_site(site.config)  # the topic reader starts first: other ids it kept meanwhile go

    # -- access ------------------------------------------------------------------------------------------------

    def authenticated(self, request: web.Request) -> bool:
        """Whether the request carries a valid session cookie, or the token in a header (token_checked)."""
        if self.in_session(request):
            return True
        offered = header_tokens(request)
        return bool(offered) and self.token_checked(request, *offered)

    def in_session(self, request: web.Request) -> bool:
        cookie = request.cookies.get(COOKIE, "")
        return bool(cookie) and session_valid(cookie, self.token, self.session_s, time.time())

    def token_checked(self, request: web.Request, *offered: str) -> bool:
        """Whether one of the tokens offered is the console's; if none is, that counts once against the client
        (WrongTokens), which is answered 429 while it waits. A long token is accepted even then (wrong_tokens.py says
        why); a short one is not checked until the wait is over, or the answer would tell a right guess from a wrong
        one."""
        client = client_of(request.remote)
        wait_s = math.ceil(self.wrong_tokens.wait_s(client))
        right = (not wait_s or len(self.token) >= MIN_TOKEN_CHARS) \
            and any(token_matches(value, self.token) for value in offered)
        if right:
            self.wrong_tokens.forget(client)
            return True
        if wait_s:
            raise web.HTTPTooManyRequests(text=f"too many wrong console tokens from your address: try again in "
                                               f"{wait_s} s\n", headers={"Retry-After": str(wait_s)})
        self.wrong_tokens.count(client)
        return False

    @web.middleware
    async def access(self, request: web.Request, handler):
        host = request_host_name(request.host)
        if host is None:
            raise web.HTTPBadRequest(text="the Host header is not a host name with an optional port\n")
        if self.open_reads and not is_loopback(host):
            # A loopback console answers only to loopback names: another name is a web page whose DNS now points
            # here (rebinding), trying to read what loopback serves without a token.
            raise web.HTTPForbidden(text="this console answers to localhost and loopback addresses only\n")
        reading = request.method in ("GET", "HEAD")
        if not reading and not self.same_origin(request):
            raise web.HTTPForbidden(text="changes are accepted from the console's own pages only\n")
        offered = request.query.get("token")
        if offered is not None:
            if not self.token_checked(request, offered):
                raise web.HTTPUnauthorized(text="wrong console token\n")
            # The token leaves the address bar at once (the browser keeps the #page part); the cookie carries it.
            response = web.HTTPFound("/")
            self.start_session(request, response)
            raise response
        # A page whose session ended signs in again with the token in the body, staying as it is: sign_in checks it
        # with the headers' tokens, so that a sign-in counts once however many wrong tokens it offers.
        signing_in = request.method == "POST" and request.path == "/api/session"
        # The page and its scripts hold nothing of the site: without a session they come up signed out and offer
        # sign-in, while everything they would show is refused. They need no token, so none in their headers is
        # checked: a reverse proxy forwarding its own Authorization header would spend a client's wrong tokens on them.
        route = request.match_info.route
        page = reading and (route.handler == self.index or isinstance(route.resource, web.StaticResource))
        request[AUTHENTICATED] = self.in_session(request) if signing_in or page else self.authenticated(request)
        if not request[AUTHENTICATED] and not (reading and self.open_reads) and not signing_in and not page:
            raise web.HTTPUnauthorized(text="console token required: open the console URL with ?token=<the token> "
                                            "(printed at start when none is configured)\n")
        return await handler(request)

    def start_session(self, request: web.Request, response: web.StreamResponse) -> None:
        """Sets the session cookie on the response to a request that gave the token; refuses (403) where the browser
        would drop it."""
        secure = self.secure_sessions and request.host.lower() not in self.plain_http_hosts
        if secure and not (is_loopback(request_host_name(request.host)) or request.host.lower() in self.https_hosts
                           or forwarded_from_https(request)):
            raise self.secure_cookie_dropped(request)
        response.set_cookie(COOKIE, session_cookie(self.token, int(time.time())), httponly=True, samesite="Strict",
                            max_age=int(self.session_s), secure=secure)

    def secure_cookie_dropped(self, request: web.Request) -> web.HTTPForbidden:
        """The answer to a sign-in whose Secure cookie the browser would drop: the console serves plain http, and a
        browser keeps a Secure cookie from plain http only at a loopback name. Host names neither loopback nor an
        https origin's host, so the browser opened this address itself (a proxy from an https origin would pass that
        host on). Signed in with a cookie it never kept, the operator would face a login prompt again and again."""
        https = ", ".join(self.https_origins)
        log.warning("sign-in at http://%s refused: the session cookie is Secure (console.public_origins lists %s) "
                    "and browsers drop it over plain http there", request.host, https)
        return web.HTTPForbidden(text=(
            f"cannot sign in at http://{request.host}: the session cookie is Secure, as console.public_origins lists "
            f"{https}, and browsers drop a Secure cookie sent over plain http. Open the console at {https}, or list "
            f"http://{request.host} in console.public_origins to sign in here over plain http. Behind a reverse "
            "proxy, have it pass the browser's Host on (nginx: proxy_set_header Host $host).\n"))

    def same_origin(self, request: web.Request) -> bool:
        """Not sent by another site's page: browsers name the sender (Sec-Fetch-Site, Origin) on every POST, and a
        SameSite cookie still rides along from other ports of this host or sibling hosts. Clients other than
        browsers send neither header and authenticate with the token. Behind a reverse proxy the page's origin is
        the public one, not the Host the proxy sends."""
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return False
        origin = request.headers.get("Origin")
        if origin is None or origin.lower() in self.public_origins:
            return True
        try:
            return urlsplit(origin).netloc.lower() == request.host.lower()
        except ValueError:  # not a URL (an unclosed IPv6 bracket): no page of this console sent it
            return False

    # -- application -------------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.access], client_max_size=1024 * 1024)
        app.on_response_prepare.append(add_security_headers)
        app.router.add_get("/", self.index)
        app.router.add_static("/static/", STATIC)
        app.router.add_get("/api/session", self.session)
        app.router.add_post("/api/session", self.sign_in)
        app.router.add_get("/api/health", self.health)
        app.router.add_get("/api/cameras", self.cameras)
        app.router.add_get("/api/live", self.live)
        app.router.add_get("/api/cameras/{camera}/frame.jpg", self.frame)
        app.router.add_get("/api/zones", self.zones)
        app.router.add_get("/api/incidents", self.incidents)
        app.router.add_get("/api/incident-summary", self.incident_summary)
        app.router.add_get("/api/incidents/{incident}", self.incident)
        app.router.add_get("/api/incidents/{incident}/evidence.jpg", self.evidence)
        app.router.add_post("/api/incidents/{incident}/ack", self.acknowledge)
        app.router.add_post("/api/incidents/{incident}/false-alarm", self.false_alarm)
        app.router.add_get("/api/scene/{camera}", self.scene)
        app.router.add_post("/api/scene/{camera}", self.save_scene)
        return app

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def session(self, request: web.Request) -> web.Response:
        # The site's time zone (the alert routes' hours are in it), so every operator reads the same times; None:
        # the server's local time, which the browser cannot know, so the page uses its own.
        return json_response({"site": self.site.config.site, "authenticated": request[AUTHENTICATED],
                              "refresh_hz": self.refresh_hz, "server_time": time.time(),
                              "timezone": self.site.config.alerting.timezone})

    async def sign_in(self, request: web.Request) -> web.Response:
        """A session for a page that was signed out (its session ended) from the token in the body, checked with any
        in the headers as one guess: unlike opening `/?token=...`, the page is not reloaded, and keeps what the operator
        was doing."""
        in_body = (await json_object(request, self.request_timeout_s)).get("token")
        offered = header_tokens(request) + ([in_body] if isinstance(in_body, str) else [])
        if not offered or not self.token_checked(request, *offered):
            raise web.HTTPUnauthorized(text="wrong console token\n")
        response = json_response({"authenticated": True})
        self.start_session(request, response)
        return response

    async def health(self, request: web.Request) -> web.Response:
        """Polled by every page: whether the topics are read, whether the page may still act (a session ends after
        console.session_hours, or when the token changes) and the version of the camera list (a console restarted
        with cameras added or removed, or a scene saved, has another)."""
        now = time.time()
        return json_response({"now": now, "feed": feed_health(self.state.feed_report(), now),
                              "authenticated": request[AUTHENTICATED],
                              "cameras_version": self._camera_list()["version"]})

    def _camera(self, camera_id: str):
        try:
            return self.site.config.camera(camera_id)
        except KeyError:
            raise web.HTTPNotFound(text=f"camera {camera_id!r} is not configured\n") from None

    def _camera_list(self) -> dict:
        """The cameras' geometry and the thresholds, with a version: a digest of them, which the page compares."""
        thresholds = self.site.config.analytics.thresholds
        listed = {
            "cameras": [camera_geometry(camera) for camera in self.site.config.cameras],
            "thresholds": {level: getattr(thresholds, level) for level in ("caution", "warning", "danger", "critical")},
        }
        return {**listed, "version": hashlib.sha256(json_dumps(listed, sort_keys=True).encode()).hexdigest()[:16]}

    async def cameras(self, request: web.Request) -> web.Response:
        return json_response(self._camera_list())

    def _camera_live(self, camera, now: float) -> dict:
        live = self.state.camera_live(camera.id, now)
        live["zones"] = {zone.id: self.state.zone_now(camera.id, zone.id, now) for zone in camera.zones}
        live["health"] = self._health(camera, live, now)
        return live

    def _health(self, camera, live: dict, now: float) -> dict:
        """The camera's state (up, degraded, reconnecting, stalled, down) with a reason: the producer's report, unless
        the frames say otherwise. A producer that hangs or dies may leave "up" as its last report for minutes, while
        its frames stop."""
        status, frame = live["status"], live["frame"]
        if status is not None and now - status["at"] > self.status_silence_s:
            return {"state": "down", "reason": f"no report from the producer for {now - status['at']:.0f} s",
                    "fps": None}
        if frame is None and status is None:
            return {"state": "unknown", "reason": "no frame received yet", "fps": None}
        # Without a report, frames that arrive are all there is to go by.
        reported = {"state": "up", "reason": "", "fps": None} if status is None else \
            {"state": status["state"], "reason": status["reason"], "fps": status["fps"]}
        if frame is not None:
            silent_s = frame["age_s"] - frame["behind_s"]  # the frame shown is older while the detector lags
            silence = f"no frame for {silent_s:.0f} s"
        else:
            silent_s = now - self.started_at
            silence = f"no frame since the console started {silent_s:.0f} s ago"
        if silent_s <= self.site.config.producer.stall_after_s(camera.fps):
            return reported
        if reported["state"] == "up":
            return {"state": "stalled", "reason": silence, "fps": None}
        return {**reported, "reason": "; ".join(filter(None, [reported["reason"], silence]))}

    async def live(self, request: web.Request) -> web.Response:
        now = time.time()
        wanted = request.query.get("camera")
        cameras = [self._camera(wanted)] if wanted else self.site.config.cameras
        return json_response({"now": now, "cameras": {camera.id: self._camera_live(camera, now)
                                                      for camera in cameras}})

    async def frame(self, request: web.Request) -> web.Response:
        camera = self._camera(request.match_info["camera"])
        wanted = request.query.get("seq", "")
        frame = self.state.frame(camera.id, int(wanted) if FRAME_SEQ.fullmatch(wanted) else None)
        if frame is None:
            raise web.HTTPNotFound(text="no frame yet\n")
        return web.Response(body=frame.jpeg, content_type="image/jpeg", headers={
            "Cache-Control": "no-store", "X-Frame-Seq": str(frame.seq), "X-Captured-At": f"{frame.captured_at:.3f}"})

    async def zones(self, request: web.Request) -> web.Response:
        now = time.time()
        zones = []
        for camera in self.site.config.cameras:
            for zone in camera.zones:
                zones.append({"camera_id": camera.id, "camera_name": camera.name or camera.id, "zone_id": zone.id,
                              "now": self.state.zone_now(camera.id, zone.id, now),
                              "history": self.state.zone_history_of(camera.id, zone.id)})
        return json_response({"now": now, "zones": zones})

    # -- incidents ---------------------------------------------------------------------------------------------

    def _incident_list(self) -> dict:
        """The open incidents, the most urgent first (at most OPEN_LISTED), then other recent ones, newest first,
        with the summary of every open incident."""
        opened = open_incidents(self.store)
        # id -> (row, acknowledged); None for one no longer open, which waits for nobody
        listed: dict[str, tuple[IncidentRow, bool | None]] = {
            incident.row.id: (incident.row, incident.acknowledged) for incident in opened[:OPEN_LISTED]}
        for row in self.store.list_incidents(limit=RECENT_LISTED):
            if row.state != OPEN:
                listed.setdefault(row.id, (row, None))
        reviews = self.store.reviews(list(listed))
        rows = []
        for row, acknowledged in listed.values():
            verdicts = reviews.get(row.id, [])
            event = self.state.event(row.id)
            rows.append({
                "id": row.id, "type": row.type, "camera_id": row.camera_id, "zone_id": row.zone_id,
                "severity": row.severity, "state": row.state, "title": row.title, "opened_at": row.opened_at,
                "updated_at": row.updated_at, "resolved_at": row.resolved_at, "acknowledged": acknowledged,
                "reason": event["reason"] if event else None,
                "review": verdicts[-1].verdict if verdicts else None,
                "has_evidence": self.state.evidence_of(row.id) is not None,
            })
        return {"incidents": rows, "summary": incident_summary(opened)}

    async def incidents(self, request: web.Request) -> web.Response:
        return json_response(await asyncio.to_thread(self._incident_list))

    async def incident_summary(self, request: web.Request) -> web.Response:
        opened = await asyncio.to_thread(open_incidents, self.store)
        return json_response(incident_summary(opened))

    async def incident(self, request: web.Request) -> web.Response:
        incident_id = request.match_info["incident"]
        detail = await asyncio.to_thread(self.store.incident_detail, incident_id)
        if detail is None:
            raise web.HTTPNotFound(text=f"no incident {incident_id!r}\n")
        row, evidence = detail.incident, self.state.evidence_of(incident_id)
        return json_response({
            "id": row.id, "type": row.type, "camera_id": row.camera_id, "zone_id": row.zone_id,
            "severity": row.severity, "state": row.state, "title": row.title, "opened_at": row.opened_at,
            "resolved_at": row.resolved_at, "event": self.state.event(incident_id),
            "timeline": [{"at": event.at, "state": event.state, "severity": event.severity, "message": event.message}
                         for event in detail.events],
            "acknowledgements": [{"at": ack.at, "by": ack.by, "note": ack.note} for ack in detail.acknowledgements],
            "reviews": [review_summary(review) for review in detail.reviews],
            "evidence": None if evidence is None else {
                "seq": evidence.frame.seq, "captured_at": evidence.frame.captured_at,
                "detections": evidence.detections},
        })

    async def evidence(self, request: web.Request) -> web.Response:
        evidence = self.state.evidence_of(request.match_info["incident"])
        if evidence is None:
            raise web.HTTPNotFound(text="no evidence frame kept for this incident\n")
        return web.Response(body=evidence.frame.jpeg, content_type="image/jpeg")

    async def _review_input(self, request: web.Request) -> tuple[str, str, str]:
        """`by` (who acts; "console" when not given), `note` and `request_id` (empty when not given), each text within
        its REVIEW_FIELDS length that UTF-8 can encode."""
        body = await json_object(request, self.request_timeout_s)
        values = {}
        for name, limit in REVIEW_FIELDS.items():
            value = "" if body.get(name) is None else body[name]
            if not isinstance(value, str) or len(value) > limit:
                raise web.HTTPUnprocessableEntity(text=f"{name} must be text of at most {limit} characters\n")
            try:
                value.encode("utf-8")  # JSON may carry half of a surrogate pair (\ud800), which the store cannot hold
            except UnicodeEncodeError:
                raise web.HTTPUnprocessableEntity(
                    text=f"{name} must be text that UTF-8 can encode (no lone surrogates)\n") from None
            values[name] = value
        return values["by"] or "console", values["note"], values["request_id"]

    def _keep_hard_negative(self, incident_id: str, marked_at: float, by: str) -> tuple[str | None, str | None]:
        """(path, None) once the evidence frame is kept, else (None, why not): the console holds no evidence frame
        for the incident, or it could not be written."""
        evidence = self.state.evidence_of(incident_id)
        if evidence is None:
            return None, "the console holds no evidence frame of this incident: no hard negative was kept"
        try:
            camera = self.site.config.camera(evidence.camera_id)
        except KeyError:
            return None, f"camera {evidence.camera_id!r} of the evidence frame is not configured"
        try:
            path = write_hard_negative(self.site.hard_negatives, camera.id, incident_id, evidence,
                                       self.state.event(incident_id), marked_at, by)
        except OSError as exc:  # the training data lost until someone fixes the folder
            log.error("false alarm %s: evidence frame not kept: %s", incident_id, exc)
            return None, f"the evidence frame could not be kept as a hard negative ({exc.strerror})"
        return str(path), None

    async def _withdraw_hard_negative(self, kept: str | None, earlier_reviews) -> None:
        """Removes the hard negative kept for a verdict the store did not record, or `cityguard dataset build` would
        learn from a false alarm that nobody recorded; one that an earlier recorded false alarm names stays."""
        if kept is None or any(review.evidence_path == kept for review in earlier_reviews):
            return
        try:
            await asyncio.to_thread(remove_hard_negative, Path(kept))
        except OSError as exc:
            log.error("the false alarm was not recorded, yet its hard negative %s stays: %s", kept, exc)

    async def _withdraw_false_alarms(self, earlier_reviews) -> None:
        """Removes the hard negatives of the incident's earlier false-alarm verdicts once an operator acknowledges it
        after all: the incident was real, and `cityguard dataset build` would train the model not to see it."""
        folder = self.site.hard_negatives.resolve()
        for path in {review.evidence_path for review in earlier_reviews if review.evidence_path}:
            if not Path(path).resolve().is_relative_to(folder):  # written while another folder was configured
                continue
            try:
                await asyncio.to_thread(remove_hard_negative, Path(path))
            except OSError as exc:
                log.error("the incident was acknowledged as real, yet its hard negative %s stays: %s", path, exc)

    async def _review(self, request: web.Request, verdict: str) -> web.Response:
        incident_id = request.match_info["incident"]
        by, note, request_id = await self._review_input(request)
        # A repeat is a request sent again with the same request id (the page keeps one until a verdict is answered
        # as recorded): it gets the first answer and adds nothing, and one whose verdict, `by` or note changed since
        # is refused, as the same click would record a second verdict. Any other verdict is recorded, however like
        # the last one, and so is every request without an id: since the last one the incident may have a new alert
        # to acknowledge, or have opened again, which the store's records could tell only by comparing the clocks of
        # different machines.
        asked = (request_id, incident_id)
        # One review at a time, so that a request sent again finds the first one's answer.
        async with self.reviewing:
            if asked in self.answered:
                first = self.answered[asked]
                if itemgetter("verdict", "by", "note")(first["review"]) != (verdict, by, note):
                    raise web.HTTPConflict(text="this request id was recorded before with another verdict, by or "
                                                "note; this one is not: send it with a new request id to record "
                                                "it\n")
                return json_response({**first, "repeated": True})
            detail = await asyncio.to_thread(self.store.incident_detail, incident_id)
            if detail is None:
                raise web.HTTPNotFound(text=f"no incident {incident_id!r} in the incident store\n")
            now = time.time()
            # The verdict is what matters: keeping the frame is best effort, and its failure is reported, not raised.
            kept, not_kept = (await asyncio.to_thread(self._keep_hard_negative, incident_id, now, by)
                              if verdict == FALSE_ALARM else (None, None))
            try:
                recorded = await asyncio.to_thread(self.store.review_incident, incident_id, verdict, by, note, now,
                                                   kept)
            except Exception:
                await self._withdraw_hard_negative(kept, detail.reviews)
                raise
            if not recorded:
                await self._withdraw_hard_negative(kept, detail.reviews)
                raise web.HTTPNotFound(text=f"no incident {incident_id!r} in the incident store\n")
            if verdict == ACKNOWLEDGED:
                await self._withdraw_false_alarms(detail.reviews)
            answer = {"incident": incident_id, "verdict": verdict, "repeated": False, "hard_negative": kept,
                      "hard_negative_error": not_kept,
                      "review": {"at": now, "verdict": verdict, "by": by, "note": note, "evidence_path": kept}}
            if request_id:
                self.answered[asked] = answer
                while len(self.answered) > ANSWERS_KEPT:
                    self.answered.popitem(last=False)
        log.info("incident %s marked %s by %s", incident_id, verdict, by)
        return json_response(answer)

    async def acknowledge(self, request: web.Request) -> web.Response:
        return await self._review(request, ACKNOWLEDGED)

    async def false_alarm(self, request: web.Request) -> web.Response:
        return await self._review(request, FALSE_ALARM)

    # -- scene editor ------------------------------------------------------------------------------------------

    async def scene(self, request: web.Request) -> web.Response:
        camera = self._camera(request.match_info["camera"])
        try:
            geometry = await asyncio.to_thread(self.site.scene_file.read, camera.id)
        except SceneError as exc:
            raise web.HTTPConflict(text=f"{self._scene_error(exc)}\n") from None
        return json_response({"camera_id": camera.id, "geometry": geometry, "version": geometry_version(geometry)})

    async def save_scene(self, request: web.Request) -> web.Response:
        """The body is the edited geometry with the `version` it was edited from (as GET /api/scene/<camera> gave)."""
        camera = self._camera(request.match_info["camera"])
        geometry = await json_object(request, self.request_timeout_s)
        version = geometry.pop("version", None)
        if not isinstance(version, str):
            raise web.HTTPBadRequest(text="expected the version of the scene being edited, as the scene's GET gave "
                                          "it\n")
        scene_file = self.site.scene_file
        try:
            saved = await asyncio.to_thread(scene_file.write, camera.id, geometry, version)
        except SceneConflict as exc:
            return json_response({"saved": False, "error": str(exc)}, status=409)
        except (SceneError, ValueError) as exc:
            log.warning("scene of camera %s not saved: %s", camera.id, exc)
            return json_response({"saved": False, "error": self._scene_error(exc)}, status=422)
        except RecursionError:
            return json_response({"saved": False, "error": "the geometry is nested too deeply"}, status=422)
        if saved.config is not None:
            self.site.config = saved.config  # the console draws the new geometry at once
            self.state.follow_site(saved.config)
        message = ("saved; restart " + ", ".join(saved.restart) + " to apply it") if saved.restart else "no change"
        if saved.written_out:
            message += (f"; {', '.join(saved.written_out)} no longer shared with other entries through a YAML anchor "
                        "or merge key: written out in full for this camera")
        log.info("scene of camera %s: %s", camera.id, message)
        return json_response({"saved": bool(saved.restart), "restart": saved.restart, "message": message})

    def _scene_error(self, exc: Exception) -> str:
        # The file's name says which file; where it lies on the server is no business of the page.
        path = self.site.scene_file.path
        return str(exc).replace(str(path), path.name)


async def serve(server: ConsoleServer, host: str, port: int, stop, on_listening) -> None:
    """Serves the console until `stop` (a threading.Event) is set, within the connection limits of its settings;
    `on_listening(port)` once the socket is bound."""
    guard = ConnectionGuard(server.site.config.console)
    app = server.app()
    app.middlewares.insert(0, guard.middleware)  # the outermost: a request's head is in once it runs
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    listener = None
    try:
        # aiohttp's low-level server (runner.server makes a request handler per connection) behind the guard.
        listener = await asyncio.get_running_loop().create_server(
            lambda: GuardedConnection(guard, runner.server()), host, port)
        on_listening(listener.sockets[0].getsockname()[1])
        while not stop.is_set():
            await asyncio.sleep(0.2)
    finally:
        if listener is not None:
            listener.close()
        await runner.cleanup()

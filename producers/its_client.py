"""Client of the Korean ITS national CCTV open API (`cctvInfo`).

The API has no stable camera id and its stream URLs are tokenised and expire, so a camera is identified by name and
coordinates (`stable_camera_id`, `ItsCameraRef`) and its URL is looked up again when a stream fails (`ItsResolver`).
Responses are parsed tolerantly: a single object instead of a list, empty or missing `data`, numbers as strings, XML.
The API key comes from the environment and never appears in a log line or an exception text (`ItsClient.mask`).
"""
from __future__ import annotations

import codecs
import hashlib
import json
import logging
import math
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Literal
from xml.etree import ElementTree

from producers.camera_urls import CameraUrlPolicy
from producers.http_fetch import FetchError, fetch
from schemas.settings.base import env_value
from schemas.settings.capture import ItsCameraRef, ProducerConfig

log = logging.getLogger(__name__)

RoadType = Literal["ex", "its", "all"]
GetType = Literal["json", "xml"]
ROAD_TYPES = ("ex", "its", "all")
CCTV_TYPES = (1, 2, 3, 4)
XML_DECLARED_ENCODING = re.compile(rb"""\s*<\?xml\s[^>]*?encoding\s*=\s*["']([A-Za-z][A-Za-z0-9._-]*)["']""")
# Two listings of the same camera can differ in the last printed digits; ~50 m still tells neighbours apart.
SAME_PLACE_DEGREES = 0.0005


class ItsApiError(RuntimeError):
    """The ITS API could not answer the request; the text says why and never contains the key."""


class ItsAuthError(ItsApiError):
    """The key is missing or was rejected."""


class ItsRequestError(ItsApiError):
    """The request parameters are invalid (checked before sending, or rejected by the API)."""


class ItsUnavailable(ItsApiError):
    """The API did not answer in time, answered with a server error, or answered something unreadable."""


class ItsCameraGone(ItsApiError):
    """The API no longer lists a configured camera at its name and place."""


class ItsUrlRefused(ItsApiError):
    """The API lists the camera with a URL the producer must not open (producers.camera_urls)."""


@dataclass(frozen=True)
class BoundingBox:
    """WGS84 rectangle: x is longitude, y is latitude."""

    min_x: float
    min_y: float
    max_x: float
    max_y: float

    def __post_init__(self) -> None:
        if not (-180 <= self.min_x < self.max_x <= 180 and -90 <= self.min_y < self.max_y <= 90):
            raise ItsRequestError(
                f"bounding box {self.min_x},{self.min_y},{self.max_x},{self.max_y} is not MINX,MINY,MAXX,MAXY "
                "with MINX < MAXX in -180..180 and MINY < MAXY in -90..90")

    @classmethod
    def parse(cls, text: str) -> BoundingBox:
        parts = text.split(",")
        try:
            values = [float(part) for part in parts]
        except ValueError:
            values = []
        if len(values) != 4:
            raise ItsRequestError(f"bounding box {text!r} must be four numbers MINX,MINY,MAXX,MAXY (lon,lat,lon,lat)")
        return cls(*values)

    @classmethod
    def around(cls, points: list[tuple[float, float]], margin: float) -> BoundingBox:
        """The smallest box holding every (lon, lat) point, widened by margin degrees on each side."""
        lons = [lon for lon, _ in points]
        lats = [lat for _, lat in points]
        return cls(max(-180.0, min(lons) - margin), max(-90.0, min(lats) - margin),
                   min(180.0, max(lons) + margin), min(90.0, max(lats) + margin))


@dataclass(frozen=True)
class ItsCamera:
    """One camera as the API lists it."""

    name: str
    lon: float
    lat: float
    url: str
    cctv_type: int | None
    url_refused: str | None = None  # why the URL must not be opened, if it must not
    # filecreatetime as the API gives it (a recorded clip's, cctvType 2); None where it gives none
    file_created: str | None = None

    def ref(self, road_type: RoadType, requested_cctv_type: int) -> ItsCameraRef:
        return ItsCameraRef(name=self.name, lon=self.lon, lat=self.lat, road_type=road_type,
                            cctv_type=self.cctv_type if self.cctv_type in CCTV_TYPES else requested_cctv_type)


def stable_camera_id(name: str, lon: float, lat: float) -> str:
    """Camera id that survives re-discovery: a digest of the name and the coordinates rounded to ~1 m."""
    digest = hashlib.sha1(f"{name.strip()}|{lon:.5f}|{lat:.5f}".encode()).hexdigest()
    return f"its-{digest[:12]}"


def _number(value) -> float | None:
    """Numbers arrive as numbers or as strings; empty strings and junk mean unknown."""
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _camera(fields: Mapping) -> ItsCamera | None:
    """The record's camera; None when it lacks what identifies (name, place) or reaches (URL) a camera."""
    name = str(fields.get("cctvname") or "").strip()
    lon, lat = _number(fields.get("coordx")), _number(fields.get("coordy"))
    url = str(fields.get("cctvurl") or "").strip()
    if not name or lon is None or lat is None or not url or not -180 <= lon <= 180 or not -90 <= lat <= 90:
        return None
    cctv_type = _number(fields.get("cctvtype"))
    return ItsCamera(name=name, lon=lon, lat=lat, url=url,
                     cctv_type=int(cctv_type) if cctv_type is not None else None,
                     file_created=str(fields.get("filecreatetime") or "").strip() or None)


def _cameras(records: list[Mapping]) -> list[ItsCamera]:
    cameras = [camera for camera in (_camera(record) for record in records) if camera is not None]
    if len(cameras) < len(records):
        log.warning("ITS API: skipped %d camera records without a name, coordinates or URL",
                    len(records) - len(cameras))
    return cameras


def parse_json(body: bytes) -> list[ItsCamera]:
    try:
        document = json.loads(body.decode("utf-8-sig"))
    except (ValueError, RecursionError) as exc:
        # Beside JSONDecodeError and UnicodeDecodeError (both ValueErrors), json raises a plain ValueError for a
        # number of over 4,300 digits and RecursionError for nesting too deep: an answer like any other unreadable one.
        raise ItsUnavailable(f"ITS API answer is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ItsUnavailable(f"ITS API answer is a JSON {type(document).__name__}, expected an object")
    response = document.get("response", document)
    if not isinstance(response, dict):
        raise ItsUnavailable("ITS API answer has no response object")
    data = response.get("data")
    if data is None or data == "":
        return []
    if isinstance(data, dict):  # one camera comes back as an object instead of a list
        data = [data]
    if not isinstance(data, list):
        raise ItsUnavailable(f"ITS API data is a {type(data).__name__}, expected a list of cameras")
    return _cameras([record for record in data if isinstance(record, dict)])


def parse_xml(body: bytes) -> list[ItsCamera]:
    try:
        root = ElementTree.fromstring(_declared_text(body))
    except ElementTree.ParseError as exc:
        raise ItsUnavailable(f"ITS API answer is not XML: {exc}") from None
    records = [{child.tag: (child.text or "") for child in element} for element in root.iter("data")]
    return _cameras([record for record in records if record])


def _declared_text(body: bytes) -> bytes | str:
    """The body as text when its XML declaration names an encoding (without one, as it is): the XML parser itself
    reads only UTF-8, UTF-16 and single-byte encodings, and a Korean server may answer in EUC-KR or CP949."""
    declared = XML_DECLARED_ENCODING.match(body)
    if declared is None:
        return body
    name = declared.group(1).decode("ascii")
    try:
        return body.decode(codecs.lookup(name).name)
    except LookupError:
        raise ItsUnavailable(f"ITS API answer declares an encoding unknown here: {name}") from None
    except UnicodeDecodeError as exc:
        raise ItsUnavailable(f"ITS API answer is not in the {name} it declares: {exc.reason} at byte "
                             f"{exc.start}") from None


class ItsClient:
    """Calls cctvInfo. Every message this class produces passes through `mask`."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float = 10.0,
                 url_policy: CameraUrlPolicy | None = None, max_response_bytes: int = 16 * 1024 * 1024):
        if not api_key:
            raise ItsAuthError("ITS API key is empty")
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.url_policy = url_policy or CameraUrlPolicy()
        self.max_response_bytes = max_response_bytes
        self._api_key = api_key

    @classmethod
    def from_config(cls, settings: ProducerConfig) -> ItsClient:
        key = env_value(settings.its_api_key_env, "producer.its_api_key_env")
        if not key:
            raise ItsAuthError(f"no ITS API key: set the environment variable {settings.its_api_key_env}")
        return cls(settings.its_api_url, key, settings.its_timeout_s,
                   CameraUrlPolicy(settings.its_allowed_local_hosts), settings.its_max_response_bytes)

    def mask(self, text: str) -> str:
        """The text with the key (also URL-encoded) replaced by ***."""
        for form in {self._api_key, urllib.parse.quote(self._api_key, safe=""), urllib.parse.quote_plus(self._api_key)}:
            text = text.replace(form, "***")
        return text

    def cctv_info(self, bbox: BoundingBox, road_type: RoadType = "all", cctv_type: int = 1,
                  get_type: GetType = "json") -> list[ItsCamera]:
        if road_type not in ROAD_TYPES:
            raise ItsRequestError(f"road type {road_type!r} is not one of {', '.join(ROAD_TYPES)}")
        if cctv_type not in CCTV_TYPES:
            raise ItsRequestError(f"cctv type {cctv_type!r} is not one of 1 (HLS), 2 (MP4), 3 (still image), "
                                  "4 (HLS https)")
        if get_type not in ("json", "xml"):
            raise ItsRequestError(f"getType {get_type!r} is not json or xml")
        query = urllib.parse.urlencode({
            "apiKey": self._api_key, "type": road_type, "cctvType": cctv_type,
            "minX": bbox.min_x, "maxX": bbox.max_x, "minY": bbox.min_y, "maxY": bbox.max_y, "getType": get_type,
        })
        body = self._get(f"{self.base_url}?{query}")
        cameras = [self.vetted(camera) for camera in (parse_json(body) if get_type == "json" else parse_xml(body))]
        log.debug("ITS API: %d cameras (type %s, cctvType %d)", len(cameras), road_type, cctv_type)
        return cameras

    def vetted(self, camera: ItsCamera) -> ItsCamera:
        refused = self.url_policy.refusal(camera.url)
        if refused is None:
            return camera
        log.warning("ITS API: camera %r has a URL the producer will not open: %s", camera.name, refused)
        return replace(camera, url_refused=refused)

    def _get(self, url: str) -> bytes:
        try:
            return fetch(url, self.max_response_bytes, self.timeout_s,
                         {"Accept": "application/json, application/xml"})
        except FetchError as exc:
            if exc.status is None:
                raise ItsUnavailable(self.mask(f"ITS API at {self.base_url}: {exc.reason}")) from None
            status, detail = exc.status, self.mask(exc.detail)
        suffix = f": {detail}" if detail else ""
        if status in (401, 403):
            raise ItsAuthError(f"ITS API rejected the key (HTTP {status}){suffix}") from None
        # A timeout or a rate limit says nothing of the request: asked again later, it is answered.
        if 400 <= status < 500 and status not in (408, 429):
            raise ItsRequestError(f"ITS API rejected the request parameters (HTTP {status}){suffix}") from None
        raise ItsUnavailable(f"ITS API failed (HTTP {status}){suffix}") from None


class ItsResolver:
    """Fresh stream URLs (and clips) for configured ITS cameras.

    One listing per (road type, cctv type) covers every configured camera of that kind, and is reused for
    `refresh_min_s`, so a hundred cameras failing together cost one API call, not a hundred. A failed call is
    remembered as long, and cameras that ask while a call is under way wait for it and take its answer: a hung or
    failing API holds each camera up for one call at most, not for one call per camera before it.
    """

    def __init__(self, client: ItsClient, refs: list[ItsCameraRef], refresh_min_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.refresh_min_s = refresh_min_s
        self.clock = clock
        self._boxes: dict[tuple[str, int], BoundingBox] = {}
        for kind in {(ref.road_type, ref.cctv_type) for ref in refs}:
            points = [(ref.lon, ref.lat) for ref in refs if (ref.road_type, ref.cctv_type) == kind]
            self._boxes[kind] = BoundingBox.around(points, margin=0.01)
        # One entry per kind (bounded): its last listing, its last failed call, whether a call is under way.
        self._listings: dict[tuple[str, int], tuple[float, list[ItsCamera]]] = {}
        self._failures: dict[tuple[str, int], tuple[float, ItsApiError]] = {}
        self._calling: set[tuple[str, int]] = set()
        self._handed_out: dict[ItsCameraRef, tuple[str, float]] = {}  # each camera's last URL and when: bounded
        self._changed = threading.Condition()

    def resolve(self, ref: ItsCameraRef, failed_url: str | None = None) -> ItsCamera:
        """The camera as the API lists it now (its current URL; a recorded clip's creation time); raises ItsApiError
        (ItsCameraGone if it is no longer listed).

        A listing is reused while it is recent, also for a camera it does not list. A failed URL that came from that
        listing (or an older one) is asked for anew; one the listing is newer than (the configured URL, or one handed
        out before the listing was fetched) is tried once more if the listing still names it, so cameras that fail
        together cost one call.
        """
        kind = (ref.road_type, ref.cctv_type)
        with self._changed:
            while True:
                failed_at, failure = self._failures.get(kind, (-math.inf, None))
                if failure is not None and self.clock() - failed_at < self.refresh_min_s:
                    # A copy: threads raising one exception object would each add to its one traceback.
                    raise type(failure)(*failure.args)
                if kind not in self._calling:
                    break
                self._changed.wait()  # for the call under way, whose listing or failure then serves this camera
            fetched_at, cameras = self._listings.get(kind, (-math.inf, []))
            cached = _find(cameras, ref)
            handed_url, handed_at = self._handed_out.get(ref, (None, -math.inf))
            handed_from_listing = (cached is not None and cached.url == failed_url == handed_url
                                   and fetched_at <= handed_at)
            call = self.clock() - fetched_at >= self.refresh_min_s or handed_from_listing
            if call:
                self._calling.add(kind)
        if call:
            cameras = self._listing(kind, self._boxes.get(kind) or BoundingBox.around([(ref.lon, ref.lat)], 0.01))
        match = _find(cameras, ref) if call else cached
        if match is None:
            raise ItsCameraGone(f"ITS API no longer lists {ref.name!r} at {ref.lon:.5f},{ref.lat:.5f}")
        if match.url_refused is not None:
            raise ItsUrlRefused(f"ITS API lists {ref.name!r} with a URL that is refused: {match.url_refused}")
        with self._changed:
            self._handed_out[ref] = (match.url, self.clock())
        return match

    def _listing(self, kind: tuple[str, int], box: BoundingBox) -> list[ItsCamera]:
        """Calls the API for the kind's cameras, outside the lock, and records the listing or the failure."""
        road_type, cctv_type = kind
        try:
            cameras = self.client.cctv_info(box, road_type, cctv_type)
        except ItsApiError as exc:
            with self._changed:
                self._failures[kind] = (self.clock(), exc)
            raise
        else:
            with self._changed:
                self._listings[kind] = (self.clock(), cameras)
                self._failures.pop(kind, None)
            return cameras
        finally:  # whatever happened, so that no camera waits for a call that will never report
            with self._changed:
                self._calling.discard(kind)
                self._changed.notify_all()


def _find(cameras: list[ItsCamera], ref: ItsCameraRef) -> ItsCamera | None:
    """The camera of that name nearest to the reference point, if it is at the same place."""
    near = [camera for camera in cameras if camera.name == ref.name
            and abs(camera.lon - ref.lon) <= SAME_PLACE_DEGREES and abs(camera.lat - ref.lat) <= SAME_PLACE_DEGREES]
    return min(near, key=lambda camera: (camera.lon - ref.lon) ** 2 + (camera.lat - ref.lat) ** 2, default=None)

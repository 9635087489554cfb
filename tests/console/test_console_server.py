"""The console's web server in-process (aiohttp's test server), without Kafka or a browser: access, answers to bad
input, false alarms, scene saves and feed health."""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError

from cityguard.commands_console import validator
from schemas import Event, EventState, FrameRef, Severity
from schemas.settings.config import load_config
from schemas.settings.console import ConsoleConfig
from sinks.alerts.notice import notice_from_event
from sinks.alerts.store import FALSE_ALARM, IncidentStore
from sinks.console.scene_file import SceneFile
from sinks.console.server import ConsoleServer, Site, json_response
from sinks.console.state import ConsoleState, FeedReport

TOKEN = "server-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SITE = """\
site: server-test
console:
  hard_negatives_dir: {hard_negatives}
{settings}
cameras:
  - id: cam
    source: clip.mp4
    zones:
      - id: z
        polygon: [[0, 0], [100, 0], [100, 100]]
        area_m2: 30
"""


@dataclass
class Console:
    server: ConsoleServer
    state: ConsoleState
    store: IncidentStore
    config_path: Path
    hard_negatives: Path


@pytest.fixture
def make_console(tmp_path):
    stores = []

    def make(settings: str = "", state: ConsoleState | None = None, hard_negatives: str = "hard-negatives"):
        config_path = tmp_path / "site.yaml"
        config_path.write_text(SITE.format(hard_negatives=hard_negatives, settings=settings))
        config = load_config(config_path)
        state = state or ConsoleState(frame_buffer=10, zone_history=10, recent_events=10, zone_stale_after_s=30)
        store = IncidentStore(f"sqlite:///{tmp_path}/incidents.sqlite")
        stores.append(store)
        site = Site(config, SceneFile(config_path, validator(config_path)), tmp_path / hard_negatives)
        server = ConsoleServer(site, state, store, TOKEN, "127.0.0.1", 4.0, 30.0, 60.0)
        return Console(server, state, store, config_path, tmp_path / hard_negatives)

    yield make
    for store in stores:
        store.close()


def call(console: Console, method: str, path: str, **kwargs) -> tuple[int, dict, bytes]:
    async def request():
        async with TestClient(TestServer(console.server.app())) as client:
            response = await client.request(method, path, **kwargs)
            return response.status, dict(response.headers), await response.read()

    return asyncio.run(request())


def raw_status(console: Console, request: bytes) -> int:
    """The status answered to a request sent byte for byte (headers a client library would refuse to encode)."""
    async def send():
        async with TestServer(console.server.app()) as server:
            reader, writer = await asyncio.open_connection(server.host, server.port)
            writer.write(request)
            await writer.drain()
            status_line = await reader.readline()
            writer.close()
            return int(status_line.split()[1])

    return asyncio.run(send())


def strict_json(body: bytes):
    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(body, parse_constant=refuse)


def risk_event(event_id: str, evidence_camera: str = "cam") -> Event:
    return Event(event_id=event_id, type="risk_level_changed", state=EventState.OPENED, severity=Severity.WARNING,
                 camera_id="cam", zone_id="z", started_at=1000.0, updated_at=1000.0, confidence=1.0,
                 evidence=FrameRef(camera_id=evidence_camera, seq=5), reason="dense")


def hold_evidence(state: ConsoleState, event: Event) -> None:
    """The event and its evidence frame as the topic reader hands them to the state."""
    state.on_frame(event.evidence.camera_id, event.evidence.seq, 1000.0, b"\xff\xd8jpeg", 1000.0, (640, 480),
                   (640, 480))
    state.on_event(event)


def record_incident(console: Console, event: Event) -> None:
    """As the alert dispatcher records it."""
    console.store.record_notice(notice_from_event(event), 1000.0)


def test_every_answer_forbids_other_pages_to_frame_the_console(make_console):
    console = make_console()
    for method, path in [("GET", "/"), ("GET", "/static/console.js"), ("GET", "/api/live"), ("GET", "/api/nope"),
                         ("POST", "/api/incidents/x/ack")]:
        status, headers, _ = call(console, method, path)
        assert headers["X-Frame-Options"] == "DENY", (method, path, status)
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], (method, path, status)


def test_the_console_never_answers_nan_which_browsers_cannot_parse():
    with pytest.raises(ValueError):
        json_response({"peak": float("nan")})


@pytest.mark.parametrize("method, path, body, answer", [
    ("POST", "/api/incidents/x/ack", b"[" * 100_000, 400),
    ("POST", "/api/scene/cam", b"[" * 100_000, 400),
    ("POST", "/api/scene/cam", b"{}", 400),  # no version
])
def test_unreadable_bodies_are_refused_with_a_reason(make_console, method, path, body, answer):
    status, _, text = call(make_console(), method, path, data=body, headers=AUTH)
    assert status == answer and text.strip()


def test_odd_input_is_answered_as_a_refusal_never_a_server_error(make_console):
    console = make_console()
    console.state.on_frame("cam", 7, 1000.0, b"\xff\xd8latest", 1000.0, (640, 480), (640, 480))
    status, _, body = call(console, "GET", "/api/cameras/cam/frame.jpg?seq=%C2%B2")  # '²' is a digit to isdigit()
    assert (status, body) == (200, b"\xff\xd8latest")
    assert raw_status(console, b"POST /api/incidents/x/ack HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                               b"X-Console-Token: \xe9\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}") == 401
    _, _, scene = call(console, "GET", "/api/scene/cam", headers=AUTH)
    version = strict_json(scene)["version"]
    status, _, body = call(console, "POST", "/api/scene/cam", headers=AUTH, json={
        "version": version, "zones": [{"id": [1], "polygon": [[0, 0], [10, 0], [10, 10]], "area_m2": 5}]})
    assert status == 422 and "cameras.0.zones.0.id" in strict_json(body)["error"]
    nested: list = []
    for _ in range(300):
        nested = [nested]
    status, _, body = call(console, "POST", "/api/scene/cam", headers=AUTH, json={
        "version": version, "zones": [{"id": "z", "polygon": nested, "area_m2": 5}]})
    assert status == 422 and strict_json(body)["error"] == "the geometry is nested too deeply"


def test_a_refused_scene_names_the_file_but_not_where_it_lies(make_console):
    console = make_console()
    _, _, scene = call(console, "GET", "/api/scene/cam", headers=AUTH)
    status, _, body = call(console, "POST", "/api/scene/cam", headers=AUTH, json={
        "version": strict_json(scene)["version"], "zones": [{"id": "z", "polygon": [[0, 0], [1, 1], [2, 2]]}]})
    error = strict_json(body)["error"]
    assert status == 422 and "site.yaml" in error and str(console.config_path.parent) not in error


def test_a_scene_saved_by_someone_else_meanwhile_is_not_overwritten(make_console):
    console = make_console()
    _, _, scene = call(console, "GET", "/api/scene/cam", headers=AUTH)
    loaded = strict_json(scene)
    for area, answer in [(31, 200), (45, 409)]:  # two editors opened on the same version
        edited = {**loaded["geometry"], "zones": [{**loaded["geometry"]["zones"][0], "area_m2": area}]}
        status, _, body = call(console, "POST", "/api/scene/cam", headers=AUTH,
                               json={"version": loaded["version"], **edited})
        assert status == answer, body
    assert "reload" in strict_json(body)["error"]
    assert load_config(console.config_path).camera("cam").zones[0].area_m2 == 31


def test_a_false_alarm_is_recorded_even_when_its_frame_cannot_be_kept(make_console, tmp_path):
    (tmp_path / "not-a-folder").write_text("a file where the hard negatives folder should be")
    console = make_console(hard_negatives="not-a-folder")
    event = risk_event("cam/z/risk")
    record_incident(console, event)
    hold_evidence(console.state, event)
    status, _, body = call(console, "POST", "/api/incidents/cam%2Fz%2Frisk/false-alarm", headers=AUTH,
                           json={"by": "ana"})
    answer = strict_json(body)
    assert status == 200 and answer["hard_negative"] is None and "could not be kept" in answer["hard_negative_error"]
    assert [review.verdict for review in console.store.reviews(["cam/z/risk"])["cam/z/risk"]] == [FALSE_ALARM]


def test_a_false_alarm_for_an_incident_the_store_does_not_know_keeps_no_frame(make_console):
    console = make_console()
    hold_evidence(console.state, risk_event("cam/z/unknown"))  # never recorded in the store
    status, _, _ = call(console, "POST", "/api/incidents/cam%2Fz%2Funknown/false-alarm", headers=AUTH, json={})
    assert status == 404 and not console.hard_negatives.exists()


def test_an_evidence_camera_id_from_the_topics_never_leaves_the_hard_negatives_folder(make_console, tmp_path):
    # The topic reader starts before the server, so the state can hold frames of any camera id for a moment.
    state = ConsoleState(frame_buffer=10, zone_history=10, recent_events=10, zone_stale_after_s=30)
    event = risk_event("escape", evidence_camera="..")
    hold_evidence(state, event)
    console = make_console(state=state)
    record_incident(console, event)
    status, _, body = call(console, "POST", "/api/incidents/escape/false-alarm", headers=AUTH, json={})
    assert status == 200 and "not configured" in strict_json(body)["hard_negative_error"]
    assert not (tmp_path / "escape.jpg").exists() and not console.hard_negatives.exists()


def test_behind_a_reverse_proxy_pages_need_the_token_and_its_public_origin_may_change(make_console):
    console = make_console(settings="  require_token_for_reads: true\n"
                                    "  public_origins: [https://Console.City.Example/]")
    proxied = {"Host": "console.city.example"}  # a proxy that passes the public name on
    assert call(console, "GET", "/api/live")[0] == 401
    assert call(console, "GET", "/api/live", headers={**AUTH, **proxied})[0] == 200
    browser = {**AUTH, "Sec-Fetch-Site": "same-origin", "Content-Type": "application/json"}
    assert call(console, "POST", "/api/incidents/x/ack", data=b"{}",
                headers={**browser, "Origin": "https://console.city.example"})[0] == 404  # past the access checks
    assert call(console, "POST", "/api/incidents/x/ack", data=b"{}",
                headers={**browser, "Origin": "https://other.example"})[0] == 403


def test_public_origins_are_origins_only():
    assert ConsoleConfig(public_origins=["HTTPS://Console.City.Example/"]).public_origins == [
        "https://console.city.example"]
    for wrong in ("console.city.example", "https://console.city.example/console", "ftp://console.city.example"):
        with pytest.raises(ValidationError, match="an origin is scheme://host"):
            ConsoleConfig(public_origins=[wrong])


def test_the_health_answer_says_when_the_topics_cannot_be_read(make_console):
    console = make_console()
    assert strict_json(call(console, "GET", "/api/health")[2])["feed"]["state"] == "starting"
    console.state.on_feed(FeedReport(time.time(), "KafkaConnectionError: broker gone", 3))
    feed = strict_json(call(console, "GET", "/api/health")[2])["feed"]
    assert feed == {"state": "down", "reason": "cannot read the topics: KafkaConnectionError: broker gone",
                    "unreadable": 3}
    console.state.on_feed(FeedReport(time.time() - 120, None, 3))  # the reader stopped reporting
    assert "last read 120 s ago" in strict_json(call(console, "GET", "/api/health")[2])["feed"]["reason"]

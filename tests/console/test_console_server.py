"""The console's web server in-process (aiohttp's test server, or its own listener where connections matter), without
Kafka or a browser: access, answers to bad input, slow and greedy clients, false alarms, scene saves and feed
health."""
from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import pwd
import queue
import socket
import stat
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from schemas import CameraState, CameraStatus, Detections, Event, EventState, FrameRef, Severity
from schemas.settings.config import load_config
from schemas.settings.console import ConsoleConfig
from sinks.alerts.notice import notice_from_event
from sinks.alerts.store import ACKNOWLEDGED, FALSE_ALARM, NOTIFYING, AlertRow, IncidentStore, subject_key
from sinks.console import wrong_tokens as wrong_tokens_module
from sinks.console.connections import ConnectionGuard, GuardedConnection, client_of
from sinks.console.scene_file import SceneFile
from sinks.console.server import (
    COOKIE,
    OPEN_LISTED,
    ConsoleServer,
    Site,
    hard_negative_stem,
    json_response,
    serve,
    session_cookie,
)
from sinks.console.state import ConsoleState, FeedReport
from sinks.console.wrong_tokens import WrongTokens

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

    def make(settings: str = "", state: ConsoleState | None = None, hard_negatives: str = "hard-negatives",
             clock=time.monotonic, token: str = TOKEN):
        config_path = tmp_path / "site.yaml"
        config_path.write_text(SITE.format(hard_negatives=hard_negatives, settings=settings))
        config = load_config(config_path)
        state = state or ConsoleState(frame_buffer=10, zone_history=10, recent_events=10, zone_stale_after_s=30)
        store = IncidentStore(f"sqlite:///{tmp_path}/incidents.sqlite")
        stores.append(store)
        site = Site(config, SceneFile(config_path), tmp_path / hard_negatives)
        server = ConsoleServer(site, state, store, token, "127.0.0.1", 4.0, 60.0, clock=clock)
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
    state.on_frame(event.evidence.camera_id, event.evidence.seq, 1000.0, b"\xff\xd8jpeg", (640, 480),
                   (640, 480))
    state.on_event(event)


def record_incident(console: Console, event: Event) -> None:
    """As the alert dispatcher records it."""
    console.store.record_notice(notice_from_event(event), 1000.0)


def raise_alert(console: Console, event: Event, created_at: float) -> None:
    """As the alert dispatcher raises one for the incident at its severity."""
    console.store.create_alert(AlertRow(
        alert_id=f"{event.event_id}/{event.severity.value}", incident_id=event.event_id,
        severity=event.severity.value, camera_id="cam", zone_id="z",
        subject=subject_key(notice_from_event(event).subject), routes=[], status=NOTIFYING, title="t", message="m",
        created_at=created_at, escalation_step=0, next_escalation_at=created_at + 300))


def test_every_answer_forbids_other_pages_to_frame_the_console_or_to_run_it_as_another_type(make_console):
    console = make_console()
    for method, path in [("GET", "/"), ("GET", "/static/console.js"), ("GET", "/api/live"), ("GET", "/api/nope"),
                         ("POST", "/api/incidents/x/ack")]:
        status, headers, _ = call(console, method, path)
        assert headers["X-Frame-Options"] == "DENY", (method, path, status)
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], (method, path, status)
        assert headers["X-Content-Type-Options"] == "nosniff", (method, path, status)


def test_the_bearer_scheme_is_read_in_any_case_and_an_unknown_charset_is_refused(make_console):
    console = make_console()
    for scheme in ("bearer", "BEARER"):
        assert call(console, "POST", "/api/incidents/x/ack", data=b"{}", headers={
            "Authorization": f"{scheme} {TOKEN}", "Content-Type": "application/json"})[0] == 404  # past the checks
    status, _, body = call(console, "POST", "/api/incidents/x/ack", data=b"{}",
                           headers={**AUTH, "Content-Type": "application/json; charset=bogus"})
    assert status == 400 and b"JSON" in body


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
    console.state.on_frame("cam", 7, 1000.0, b"\xff\xd8latest", (640, 480), (640, 480))
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


def test_a_camera_folder_replaced_by_a_link_is_not_followed_and_the_false_alarm_is_still_recorded(
        make_console, tmp_path, caplog):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    console = make_console()
    console.hard_negatives.mkdir()
    (console.hard_negatives / "cam").symlink_to(elsewhere)  # by whoever else may write a shared folder
    event = risk_event("cam/z/risk")
    record_incident(console, event)
    hold_evidence(console.state, event)
    status, _, body = call(console, "POST", "/api/incidents/cam%2Fz%2Frisk/false-alarm", headers=AUTH, json={})
    answer = strict_json(body)
    assert status == 200 and answer["hard_negative"] is None and "is a link" in answer["hard_negative_error"]
    assert list(elsewhere.iterdir()) == [] and stat.S_IMODE(elsewhere.stat().st_mode) == 0o755
    assert [record.levelname for record in caplog.records if "not kept" in record.getMessage()] == ["ERROR"]
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


def test_event_ids_that_differ_only_in_characters_a_file_name_cannot_hold_keep_their_own_hard_negatives(
        make_console):
    state = ConsoleState(frame_buffer=10, zone_history=10, recent_events=10, zone_stale_after_s=30)
    events = [risk_event("a/b"), risk_event("a:b")]  # both would be a_b
    for event in events:
        hold_evidence(state, event)
    console = make_console(state=state)
    kept = []
    for event in events:
        record_incident(console, event)
        status, _, body = call(console, "POST", f"/api/incidents/{event.event_id.replace('/', '%2F')}/false-alarm",
                               headers=AUTH, json={})
        assert status == 200, body
        kept.append(strict_json(body)["hard_negative"])
    assert len(set(kept)) == 2 and all(Path(path).exists() for path in kept)
    assert {json.loads(Path(path).with_suffix(".json").read_text())["event_id"] for path in kept} == {"a/b", "a:b"}


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


def test_where_reads_need_the_token_the_page_comes_up_without_it_and_nothing_it_would_show(make_console):
    """A page reloaded after its session ended comes up signed out and offers sign-in: the page and its scripts are
    served, every answer that holds the site's data is refused."""
    console = make_console(settings="  require_token_for_reads: true")
    ended = {"Cookie": f"{COOKIE}={session_cookie(TOKEN, int(time.time()) - 13 * 3600)}"}
    for method, path in [("GET", "/"), ("HEAD", "/"), ("GET", "/static/console.js"), ("GET", "/static/console.css")]:
        status, headers, _ = call(console, method, path, headers=ended)
        assert status == 200 and headers["X-Frame-Options"] == "DENY", path
    for path in ["/api/session", "/api/health", "/api/cameras", "/api/live", "/api/cameras/cam/frame.jpg",
                 "/api/zones", "/api/incidents", "/api/incident-summary", "/api/incidents/x",
                 "/api/incidents/x/evidence.jpg", "/api/scene/cam", "/static/%2e%2e/api/cameras", "/nowhere"]:
        assert call(console, "GET", path, headers=ended)[0] == 401, path
    assert call(console, "GET", "/static/..%2fserver.py", headers=ended)[0] == 404  # nothing outside the folder


def test_the_page_and_its_scripts_count_no_wrong_token_of_a_proxys_header(make_console):
    """Behind a reverse proxy that forwards its own Authorization header every request offers a wrong token: the page
    and its scripts, which need none, check none, so however often they are loaded the page comes up to offer
    sign-in; a request for what it would show counts the header's token."""
    console = make_console(settings="  require_token_for_reads: true")
    proxy = {"Authorization": "Bearer the-proxys-own"}
    for _ in range(8):
        for path in ("/", "/static/console.js", "/static/draw.js", "/static/editor.js", "/static/console.css"):
            assert call(console, "GET", path, headers=proxy)[0] == 200, path
    assert [call(console, "GET", "/api/session", headers=proxy)[0] for _ in range(6)] == [401] * 5 + [429]


def test_public_origins_are_origins_only():
    assert ConsoleConfig(public_origins=["HTTPS://Console.City.Example/"]).public_origins == [
        "https://console.city.example"]
    for wrong in ("console.city.example", "https://console.city.example/console", "ftp://console.city.example"):
        with pytest.raises(ValidationError, match="an origin is a scheme, a host and an optional port"):
            ConsoleConfig(public_origins=[wrong])



def test_a_public_origin_written_with_its_schemes_default_port_is_the_origin_browsers_send(make_console):
    console = make_console(settings="  require_token_for_reads: true\n"
                                    "  public_origins: ['https://console.city.example:443']")
    browser = {**AUTH, "Sec-Fetch-Site": "same-origin", "Content-Type": "application/json",
               "Origin": "https://console.city.example"}  # as browsers write it, without the default port
    assert call(console, "POST", "/api/incidents/x/ack", data=b"{}", headers=browser)[0] == 404  # past the checks
    assert ConsoleConfig(public_origins=["http://console.city.example:80/", "https://[::1]:443",
                                         "https://console.city.example:8443"]).public_origins == [
        "http://console.city.example", "https://[::1]", "https://console.city.example:8443"]

def test_the_health_answer_says_when_the_topics_cannot_be_read(make_console):
    console = make_console()
    assert strict_json(call(console, "GET", "/api/health")[2])["feed"]["state"] == "starting"
    console.state.on_feed(FeedReport(time.time(), "KafkaConnectionError: broker gone", 3))
    feed = strict_json(call(console, "GET", "/api/health")[2])["feed"]
    assert feed == {"state": "down", "reason": "cannot read the topics: KafkaConnectionError: broker gone",
                    "unreadable": 3}
    console.state.on_feed(FeedReport(time.time() - 120, None, 3))  # the reader stopped reporting
    assert "last read 120 s ago" in strict_json(call(console, "GET", "/api/health")[2])["feed"]["reason"]


def test_a_verdict_sent_again_with_its_request_id_records_nothing_more_and_gets_the_first_answer(make_console):
    console = make_console()
    event = risk_event("cam/z/risk")
    record_incident(console, event)
    hold_evidence(console.state, event)
    answers = [call(console, "POST", f"/api/incidents/cam%2Fz%2Frisk/{verdict}", headers=AUTH,
                    json={"by": "ana", "note": note, "request_id": request_id})
               for verdict, note, request_id in (
                   ("ack", "", "r1"), ("ack", "", "r1"), ("false-alarm", "", "r2"), ("false-alarm", "", "r2"),
                   # clicked again after no answer came, with another verdict or a note typed meanwhile
                   ("ack", "", "r2"), ("false-alarm", "crowd cleared", "r2"))]
    assert [status for status, _, _ in answers] == [200] * 4 + [409] * 2
    first_false_alarm, repeated = strict_json(answers[2][2]), strict_json(answers[3][2])
    assert repeated == {**first_false_alarm, "repeated": True} and repeated["hard_negative"] is not None
    assert "send it with a new request id" in answers[5][2].decode()
    assert [review.verdict for review in console.store.reviews(["cam/z/risk"])["cam/z/risk"]] == [
        ACKNOWLEDGED, FALSE_ALARM]


def test_an_incident_acknowledged_after_a_false_alarm_verdict_is_no_longer_a_hard_negative(make_console):
    console = make_console()
    event = risk_event("cam/z/risk")
    record_incident(console, event)
    hold_evidence(console.state, event)
    url = "/api/incidents/cam%2Fz%2Frisk"
    assert call(console, "POST", f"{url}/false-alarm", headers=AUTH, json={})[0] == 200
    assert len(list(console.hard_negatives.glob("cam/*"))) == 2
    # The operator looks again: it was real. Training on it would teach the model not to see it.
    assert call(console, "POST", f"{url}/ack", headers=AUTH, json={"note": "it was real after all"})[0] == 200
    assert not list(console.hard_negatives.glob("cam/*"))
    assert call(console, "POST", f"{url}/false-alarm", headers=AUTH, json={})[0] == 200  # and a false alarm again
    assert len(list(console.hard_negatives.glob("cam/*"))) == 2


@pytest.mark.parametrize("marked_before", [False, True])
def test_a_false_alarm_the_store_fails_to_record_leaves_no_new_hard_negative(make_console, monkeypatch,
                                                                             marked_before):
    console = make_console()
    event = risk_event("cam/z/risk")
    record_incident(console, event)
    hold_evidence(console.state, event)
    if marked_before:
        assert call(console, "POST", "/api/incidents/cam%2Fz%2Frisk/false-alarm", headers=AUTH, json={})[0] == 200

    def store_fails(*args, **kwargs):
        raise OperationalError("INSERT INTO reviews", {}, Exception("database is locked"))

    monkeypatch.setattr(console.store, "review_incident", store_fails)
    status, _, _ = call(console, "POST", "/api/incidents/cam%2Fz%2Frisk/false-alarm", headers=AUTH, json={})
    assert status == 500
    # `cityguard dataset build` reads what is there as false alarms: only the one recorded before may stay
    kept = sorted(path.name for path in console.hard_negatives.glob("*/*"))
    stem = hard_negative_stem("cam/z/risk")
    assert kept == ([f"{stem}.jpg", f"{stem}.json"] if marked_before else [])


def test_acknowledging_again_acknowledges_the_alert_the_incident_escalated_to_since(make_console):
    console = make_console()
    event = risk_event("cam/z/risk")
    record_incident(console, event)
    now = time.time()
    raise_alert(console, event, now)
    for request_id in ("r1", "r2", ""):  # two clicks on the page, then a client that sends no request id
        if request_id == "r2":
            raise_alert(console, event.model_copy(update={"severity": Severity.CRITICAL}), now + 60)
        status, _, body = call(console, "POST", "/api/incidents/cam%2Fz%2Frisk/ack", headers=AUTH,
                               json={"request_id": request_id})
        assert status == 200 and not strict_json(body)["repeated"]
    assert console.store.get_alert("cam/z/risk/critical").acked_at is not None
    assert console.store.due_escalations(now + 3600) == []
    assert [review.by for review in console.store.reviews(["cam/z/risk"])["cam/z/risk"]] == ["console"] * 3


def test_an_incident_whose_id_is_digits_alone_is_acknowledged_as_that_incident(make_console):
    """Traffic incident ids are 24 hex digits, decimal digits alone in about one in 79,000: the console's verdict is
    always on the incident, never on an alert those digits might number."""
    console = make_console()
    events = [risk_event(event_id) for event_id in ("cam/z/risk", "602127156173416216829113",
                                                     "000000000000000000000001")]  # to int(): too large, and 1
    for event in events:
        record_incident(console, event)
        raise_alert(console, event, time.time())
    for event in events[1:]:
        assert call(console, "POST", f"/api/incidents/{event.event_id}/ack", headers=AUTH, json={})[0] == 200
        assert console.store.get_alert(f"{event.event_id}/warning").acked_at is not None
    assert console.store.get_alert("cam/z/risk/warning").acked_at is None  # alert 1's incident
    assert console.store.reviews(["cam/z/risk"]) == {}


@pytest.mark.parametrize("body, field", [({"by": {"name": "ana"}}, "by"), ({"by": 0}, "by"), ({"by": "b" * 101}, "by"),
                                         ({"note": ["x"]}, "note"), ({"note": False}, "note"),
                                         ({"note": "n" * 2001}, "note")])
def test_a_review_whose_fields_are_not_short_text_is_refused_naming_the_field(make_console, body, field):
    console = make_console()
    record_incident(console, risk_event("cam/z/risk"))
    status, _, text = call(console, "POST", "/api/incidents/cam%2Fz%2Frisk/ack", headers=AUTH, json=body)
    assert status == 422 and text.decode().splitlines() == [f"{field} must be text of at most "
                                                            f"{100 if field == 'by' else 2000} characters"]
    assert console.store.reviews(["cam/z/risk"]) == {}


@pytest.mark.parametrize("verdict", ["ack", "false-alarm"])
@pytest.mark.parametrize("field", ["by", "note", "request_id"])
def test_a_review_field_holding_half_a_surrogate_pair_is_refused_naming_the_field(make_console, verdict, field):
    console = make_console()
    record_incident(console, risk_event("cam/z/risk"))
    body = f'{{"{field}": "ana \\ud800"}}'  # valid JSON, yet no UTF-8 text
    status, _, text = call(console, "POST", f"/api/incidents/cam%2Fz%2Frisk/{verdict}", data=body,
                           headers={**AUTH, "Content-Type": "application/json"})
    assert status == 422
    assert text.decode().splitlines() == [f"{field} must be text that UTF-8 can encode (no lone surrogates)"]
    assert console.store.reviews(["cam/z/risk"]) == {}


def test_a_false_alarm_without_an_evidence_frame_says_that_no_frame_was_kept(make_console):
    console = make_console()
    for seq in range(5000, 5010):  # long after the event's frame 5
        console.state.on_frame("cam", seq, 2000.0 + seq, b"\xff\xd8later", (640, 480), (640, 480))
    event = risk_event("cam/z/risk")
    record_incident(console, event)
    console.state.on_event(event)
    status, _, body = call(console, "POST", "/api/incidents/cam%2Fz%2Frisk/false-alarm", headers=AUTH, json={})
    answer = strict_json(body)
    assert status == 200 and answer["hard_negative"] is None and "no evidence frame" in answer["hard_negative_error"]
    assert not console.hard_negatives.exists()


@pytest.mark.parametrize("made_before", [False, True])  # folders an earlier console left readable to all
def test_a_hard_negative_is_readable_by_this_user_only_and_blames_each_box_with_its_class(make_console, made_before):
    console = make_console()
    for folder in (console.hard_negatives, console.hard_negatives / "cam") if made_before else ():
        folder.mkdir()
        folder.chmod(0o755)
    event = risk_event("cam/z/risk")
    record_incident(console, event)
    hold_evidence(console.state, event)
    console.state.on_detections(Detections(
        camera_id="cam", seq=5, captured_at=1000.0, image_width=640, image_height=480, model="m", inference_ms=1.0,
        xyxy=[(10.0, 10.0, 20.0, 40.0), (30.0, 10.0, 40.0, 40.0)], confidence=[0.9, 0.8], class_id=[0, 0],
        class_name=["person", "person"], track_id=[1, 2]))
    old_umask = os.umask(0o022)
    try:
        status, _, _ = call(console, "POST", "/api/incidents/cam%2Fz%2Frisk/false-alarm", headers=AUTH, json={})
    finally:
        os.umask(old_umask)
    folder = console.hard_negatives / "cam"
    stem = hard_negative_stem("cam/z/risk")
    assert status == 200 and sorted(entry.name for entry in folder.iterdir()) == [f"{stem}.jpg", f"{stem}.json"]
    for path in (console.hard_negatives, folder):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    record = json.loads((folder / f"{stem}.json").read_text())
    assert record["wrong"] == [{"class": "person", "xyxy": [10.0, 10.0, 20.0, 40.0]},
                               {"class": "person", "xyxy": [30.0, 10.0, 40.0, 40.0]}]


def mark_false_alarm(console: Console) -> dict:
    event = risk_event("cam/z/risk")
    record_incident(console, event)
    hold_evidence(console.state, event)
    status, _, body = call(console, "POST", "/api/incidents/cam%2Fz%2Frisk/false-alarm", headers=AUTH, json={})
    assert status == 200
    return strict_json(body)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_hard_negatives_folder_that_another_user_shares_with_the_console_keeps_its_mode(make_console):
    console = make_console()
    console.hard_negatives.mkdir()
    os.chown(console.hard_negatives, pwd.getpwnam("nobody").pw_uid, -1)
    console.hard_negatives.chmod(0o2770)  # an administrator's folder, shared with the console's group
    assert mark_false_alarm(console)["hard_negative"] is not None
    assert stat.S_IMODE(console.hard_negatives.stat().st_mode) == 0o2770
    assert stat.S_IMODE((console.hard_negatives / "cam").stat().st_mode) == 0o700


def test_a_hard_negative_is_kept_where_the_file_system_refuses_to_change_a_folders_mode(make_console, monkeypatch):
    real_chmod = os.chmod

    def refused_for_folders(path, mode, **kwargs):  # as some network file systems answer
        if Path(path).is_dir():
            raise PermissionError(errno.EPERM, "Operation not permitted", str(path))
        real_chmod(path, mode, **kwargs)

    console = make_console()
    monkeypatch.setattr(os, "chmod", refused_for_folders)
    answer = mark_false_alarm(console)
    assert answer["hard_negative"] is not None and answer["hard_negative_error"] is None


def test_the_session_cookie_is_signed_with_the_token_and_the_token_itself_is_no_cookie(make_console):
    console = make_console()
    before = int(time.time())
    status, headers, _ = call(console, "GET", f"/?token={TOKEN}", allow_redirects=False)
    cookie = SimpleCookie(headers["Set-Cookie"])[COOKIE]
    issued = int(cookie.value.partition(".")[0])
    assert status == 302 and before <= issued <= time.time() and TOKEN not in headers["Set-Cookie"]
    assert cookie.value == session_cookie(TOKEN, issued)
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["max-age"] == str(12 * 3600)
    change = {"path": "/api/incidents/x/ack", "json": {}}
    assert call(console, "POST", **change, headers={"Cookie": f"{COOKIE}={cookie.value}"})[0] == 404  # let in
    assert call(console, "POST", **change, headers={"Cookie": f"{COOKIE}={TOKEN}"})[0] == 401
    assert call(console, "POST", **change, headers={"X-Console-Token": cookie.value})[0] == 401
    forged = f"{issued + 3600}.{cookie.value.partition('.')[2]}"  # a later time under the first one's signature
    assert call(console, "POST", **change, headers={"Cookie": f"{COOKIE}={forged}"})[0] == 401


@pytest.mark.parametrize("origins, host, secure", [
    ("[]", "127.0.0.1:8090", False),  # read on this machine over plain http
    ("[https://console.city.example]", "127.0.0.1:8090", True),  # a proxy that sends the console's own address
    ("[https://console.city.example]", "console.city.example", True),  # a proxy that passes the public name on
    ("[https://console.city.example, 'http://console.lan:8090']", "console.lan:8090", False),  # listed as http
    ("['https://console.city.example:8443']", "console.city.example", True),  # a proxy passing nginx's $host on
    ("['https://console.city.example:8443']", "console.city.example:8443", True),  # or the Host the browser sent
])
def test_the_session_cookie_is_secure_once_the_console_is_published_over_https(make_console, origins, host, secure):
    console = make_console(f"  require_token_for_reads: true\n  public_origins: {origins}")
    status, headers, _ = call(console, "GET", f"/?token={TOKEN}", headers={"Host": host}, allow_redirects=False)
    assert status == 302 and bool(SimpleCookie(headers["Set-Cookie"])[COOKIE]["secure"]) is secure


@pytest.mark.parametrize("forwarded", [{"X-Forwarded-Proto": "https"}, {"Forwarded": "for=10.1.2.3;proto=https"}])
def test_a_sign_in_through_a_proxy_saying_it_came_over_https_gets_the_secure_cookie(make_console, forwarded):
    # A proxy that sends its upstream's name as Host (nginx's default $proxy_host), from an https origin.
    console = make_console("  require_token_for_reads: true\n  public_origins: [https://console.city.example]")
    status, headers, _ = call(console, "GET", f"/?token={TOKEN}", headers={"Host": "console:8090", **forwarded},
                              allow_redirects=False)
    assert status == 302 and SimpleCookie(headers["Set-Cookie"])[COOKIE]["secure"]


@pytest.mark.parametrize("host", ["10.0.0.5:8090", "console.city.example:8090", "console.lan:8091"])
def test_a_sign_in_whose_secure_cookie_the_browser_would_drop_is_refused_saying_why(make_console, host, caplog):
    """Over plain http, browsers keep a Secure cookie only from loopback names: a browser that opened the console at
    another address would be asked to sign in again and again, never saying why."""
    console = make_console("  require_token_for_reads: true\n"
                           "  public_origins: [https://console.city.example, 'http://console.lan:8090']")
    with caplog.at_level(logging.WARNING, logger="sinks.console.server"):
        status, headers, body = call(console, "GET", f"/?token={TOKEN}", headers={"Host": host},
                                     allow_redirects=False)
    assert status == 403 and "Set-Cookie" not in headers
    assert body.decode() == (
        f"cannot sign in at http://{host}: the session cookie is Secure, as console.public_origins lists "
        "https://console.city.example, and browsers drop a Secure cookie sent over plain http. Open the console at "
        f"https://console.city.example, or list http://{host} in console.public_origins to sign in here over plain "
        "http. Behind a reverse proxy, have it pass the browser's Host on (nginx: proxy_set_header Host $host).\n")
    assert TOKEN not in caplog.text and f"sign-in at http://{host} refused" in caplog.text
    assert call(console, "GET", "/?token=wrong", headers={"Host": host}, allow_redirects=False)[0] == 401


@pytest.mark.parametrize("settings, age_s, status", [("", 12 * 3600 - 60, 404), ("", 12 * 3600 + 60, 401),
                                                     ("  session_hours: 1", 3600 + 60, 401),
                                                     ("  session_hours: 48", 12 * 3600 + 60, 404)])
def test_a_session_cookie_is_refused_once_the_session_lifetime_has_passed(make_console, settings, age_s, status):
    console = make_console(settings)
    cookie = session_cookie(TOKEN, int(time.time() - age_s))  # as the console issued it that long ago
    assert call(console, "POST", "/api/incidents/x/ack", json={}, headers={"Cookie": f"{COOKIE}={cookie}"})[0] == status


def test_a_page_whose_session_ended_signs_in_again_with_the_token_in_its_body(make_console, caplog):
    # Behind a reverse proxy every request needs the token: signing in is the one change that needs none.
    console = make_console("  require_token_for_reads: true\n  public_origins: [https://console.city.example]")
    page = {"Origin": "https://console.city.example", "Sec-Fetch-Site": "same-origin"}
    with caplog.at_level(logging.WARNING):
        for offered in ("guess-5d1f", None, ["list"]):
            status, headers, _ = call(console, "POST", "/api/session", json={"token": offered}, headers=page)
            assert status == 401 and "Set-Cookie" not in headers
    assert "wrong console token from 127.0.0.1" in caplog.text and "guess-5d1f" not in caplog.text
    status, headers, body = call(console, "POST", "/api/session", json={"token": TOKEN}, headers=page)
    cookie = SimpleCookie(headers["Set-Cookie"])[COOKIE]
    assert status == 200 and strict_json(body) == {"authenticated": True} and TOKEN not in headers["Set-Cookie"]
    assert cookie.value == session_cookie(TOKEN, int(cookie.value.partition(".")[0])) and cookie["secure"]
    assert call(console, "POST", "/api/session", json={"token": TOKEN},
                headers={"Origin": "http://wiki.city.local"})[0] == 403  # another site's page
    assert call(console, "POST", "/api/session", json={"token": TOKEN},
                headers={**page, "Host": "10.0.0.5:8090"})[0] == 403  # a Secure cookie the browser would drop


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_client_offering_wrong_tokens_waits_longer_each_time_and_the_right_token_still_signs_in(make_console,
                                                                                                   caplog):
    """Signing in (POST /api/session, /?token=) and the token headers are one guessing oracle: a client that guessed
    wrong five times has its next tokens answered 429 until its wait ends, and 50 guesses log two lines. The right
    token of 16 characters or more signs in all the same: behind a reverse proxy every client is the proxy, and one
    guesser would otherwise lock every operator out; and it forgets the client's wrong ones."""
    clock = Clock()
    console = make_console("  require_token_for_reads: true", clock=clock)
    page = {"Sec-Fetch-Site": "same-origin"}

    def sign_in(token: str) -> tuple[int, dict]:
        status, headers, _ = call(console, "POST", "/api/session", json={"token": token}, headers=page)
        return status, headers

    with caplog.at_level(logging.WARNING):
        assert [sign_in(f"guess-{number}")[0] for number in range(5)] == [401] * 5  # typing mistakes: at once
        status, headers = sign_in("guess-5")
        assert (status, headers["Retry-After"]) == (429, "1") and "Set-Cookie" not in headers
        assert call(console, "GET", "/api/live", headers={"X-Console-Token": "guess-6"})[0] == 429
        clock.now += 1
        assert call(console, "GET", "/api/live", headers={"X-Console-Token": "guess-7"})[0] == 401  # checked again
        assert sign_in("guess-8")[1]["Retry-After"] == "2"  # each wrong one doubles the wait
        for number in range(9, 50):
            clock.now += 15 * 60  # the longest wait
            assert sign_in(f"guess-{number}")[0] == 401
        assert sign_in("guess-50")[1]["Retry-After"] == str(15 * 60)
        assert sign_in(TOKEN)[0] == 200
        assert call(console, "GET", f"/?token={TOKEN}", allow_redirects=False)[0] == 302
        assert call(console, "GET", "/api/live", headers=AUTH)[0] == 200
        assert [sign_in(f"typo-{number}")[0] for number in range(4)] == [401] * 4  # forgotten: at once again
    assert [record.getMessage() for record in caplog.records][:2] == [
        "wrong console token from 127.0.0.1 (refused; not logged again until it has offered none for 60 min)",
        "127.0.0.1 offered 5 wrong console tokens: it now waits before each next token is checked (answered 429 "
        "meanwhile), longer after each wrong one, up to 15 min"]
    assert len(caplog.records) == 3  # and the wrong ones after the right one, a flood of their own
    assert not any("guess-" in record.getMessage() or TOKEN in record.getMessage() for record in caplog.records)
    clock.now += 60 * 60 + 1  # an hour without a wrong token: forgotten, and a new flood is logged again
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert [sign_in(f"again-{number}")[0] for number in range(5)] == [401] * 5
        assert sign_in("again-5")[1]["Retry-After"] == "1"
    assert len(caplog.records) == 2


def test_a_sign_in_counts_once_however_many_wrong_tokens_it_offers(make_console):
    """A sign-in with wrong tokens in its headers and its body is one guess: five are still typing mistakes. And a
    reverse proxy that forwards its own Bearer header does not stop the right token in the body from signing in."""
    console = make_console("  require_token_for_reads: true")
    page = {"Sec-Fetch-Site": "same-origin"}

    def sign_in(token: str, **headers: str) -> int:
        return call(console, "POST", "/api/session", json={"token": token}, headers={**page, **headers})[0]

    assert [sign_in(f"guess-{number}", Authorization=f"Bearer guess-{number}-header",
                    **{"X-Console-Token": f"guess-{number}-other"}) for number in range(5)] == [401] * 5
    assert sign_in("guess-5") == 429
    assert sign_in(TOKEN, Authorization="Bearer the-proxys-own") == 200
    assert sign_in("typo", Authorization="Bearer the-proxys-own") == 401  # the right one forgot the client


def test_a_short_token_is_not_checked_while_its_client_waits(make_console):
    """A token under 16 characters (a loopback console only) could be guessed: while a guesser waits, even the right
    one is answered 429, or the answer would tell it from a wrong one."""
    clock = Clock()
    console = make_console(clock=clock, token="short-token")
    page = {"Sec-Fetch-Site": "same-origin"}
    for number in range(5):
        assert call(console, "POST", "/api/session", json={"token": f"guess-{number}"}, headers=page)[0] == 401
    assert call(console, "POST", "/api/session", json={"token": "short-token"}, headers=page)[0] == 429
    clock.now += 1
    assert call(console, "POST", "/api/session", json={"token": "short-token"}, headers=page)[0] == 200


def test_wrong_tokens_count_against_their_own_client_and_the_clients_that_offered_one_longest_ago_go_first(
        monkeypatch):
    clock = Clock()
    wrong_tokens = WrongTokens(clock)
    for _ in range(5):
        wrong_tokens.count("10.0.0.7")
    assert (wrong_tokens.wait_s("10.0.0.7"), wrong_tokens.wait_s("10.0.0.8")) == (1.0, 0.0)
    monkeypatch.setattr(wrong_tokens_module, "CLIENTS_KEPT", 3)
    for client in ("10.0.0.8", "10.0.0.9", "10.0.0.10"):
        clock.now += 1
        wrong_tokens.count(client)
    assert list(wrong_tokens.clients) == ["10.0.0.8", "10.0.0.9", "10.0.0.10"]  # the oldest went first
    assert wrong_tokens.floods.flooding == {(wrong_tokens_module.WRONG, client)
                                            for client in ("10.0.0.8", "10.0.0.9", "10.0.0.10")}


def test_the_health_answer_says_whether_the_page_may_still_act(make_console):
    console = make_console()
    ended = session_cookie(TOKEN, int(time.time()) - 13 * 3600)
    assert strict_json(call(console, "GET", "/api/health", headers=AUTH)[2])["authenticated"] is True
    assert strict_json(call(console, "GET", "/api/health", headers={"Cookie": f"{COOKIE}={ended}"})[2])[
        "authenticated"] is False


def test_the_health_answer_carries_the_version_of_the_camera_list_the_console_serves(make_console):
    console = make_console()
    health = strict_json(call(console, "GET", "/api/health")[2])
    assert health["cameras_version"] == strict_json(call(console, "GET", "/api/cameras")[2])["version"]
    console.config_path.write_text(console.config_path.read_text() + "  - id: cam2\n    source: clip2.mp4\n")
    console.server.site.config = load_config(console.config_path)  # as a restarted console reads it
    restarted = strict_json(call(console, "GET", "/api/health")[2])["cameras_version"]
    assert restarted != health["cameras_version"]
    assert restarted == strict_json(call(console, "GET", "/api/cameras")[2])["version"]


@pytest.mark.parametrize("host, status", [(b"[::1", 400), (b"127.0.0.1:99999", 400), (b"127.0.0.1:abc", 400),
                                          (b"[zz]:80", 400), (b"\xff", 403), (b"", 403)])
def test_an_odd_host_header_is_refused_never_a_server_error(make_console, host, status):
    assert raw_status(make_console(), b"GET /api/live HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n") \
        == status


@pytest.mark.parametrize("origin", [b"http://[::1", b"http://127.0.0.1:99999", b"\xff", b"null"])
def test_a_change_from_an_odd_origin_is_refused_never_a_server_error(make_console, origin):
    assert raw_status(make_console(), b"POST /api/incidents/x/ack HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: " + origin +
                      b"\r\nX-Console-Token: " + TOKEN.encode() + b"\r\nContent-Length: 2\r\nConnection: close"
                      b"\r\n\r\n{}") == 403


def test_a_site_file_that_cannot_be_read_is_answered_with_the_reason_not_where_it_lies(make_console):
    console = make_console()
    version = strict_json(call(console, "GET", "/api/scene/cam", headers=AUTH)[2])["version"]
    console.config_path.write_text(console.config_path.read_text() + "  - id: [unclosed\n")
    status, _, text = call(console, "GET", "/api/scene/cam", headers=AUTH)
    assert status == 409 and text.decode().startswith("configuration site.yaml is not valid YAML")
    console.config_path.unlink()
    status, _, body = call(console, "POST", "/api/scene/cam", headers=AUTH, json={"version": version, "zones": []})
    error = strict_json(body)["error"]
    assert status == 422 and error == "cannot read configuration site.yaml: No such file or directory"


def open_incident(console: Console, incident_id: str, severity: Severity, at: float) -> Event:
    event = risk_event(incident_id).model_copy(update={"severity": severity, "started_at": at, "updated_at": at})
    record_incident(console, event)
    return event


def test_open_incidents_are_counted_in_full_and_listed_the_most_urgent_first(make_console):
    console = make_console()
    for index in range(OPEN_LISTED + 31):  # more open incidents than are listed
        open_incident(console, f"cam/z/info-{index}", Severity.INFO, 1000.0 + index)
    open_incident(console, "cam/z/old-critical", Severity.CRITICAL, 900.0)
    open_incident(console, "cam/z/new-critical", Severity.CRITICAL, 2000.0)
    open_incident(console, "cam/z/warning", Severity.WARNING, 1500.0)
    open_incident(console, "cam/z/acknowledged-critical", Severity.CRITICAL, 2500.0)
    assert call(console, "POST", "/api/incidents/cam%2Fz%2Facknowledged-critical/ack", headers=AUTH, json={})[0] == 200
    ended = risk_event("cam/z/ended").model_copy(update={"state": EventState.RESOLVED, "ended_at": 3000.0})
    record_incident(console, ended)

    answer = strict_json(call(console, "GET", "/api/incidents")[2])
    listed = answer["incidents"]
    assert [incident["id"] for incident in listed[:4]] == ["cam/z/new-critical", "cam/z/old-critical", "cam/z/warning",
                                                          f"cam/z/info-{OPEN_LISTED + 30}"]
    assert [incident["acknowledged"] for incident in listed[:4]] == [False] * 4
    open_listed = [incident for incident in listed if incident["state"] == "open"]
    assert len(open_listed) == OPEN_LISTED and "cam/z/acknowledged-critical" not in {i["id"] for i in open_listed}
    assert listed[-1]["id"] == "cam/z/ended" and listed[-1]["acknowledged"] is None
    summary = {"open": {"total": OPEN_LISTED + 35, "info": OPEN_LISTED + 31, "critical": 3, "warning": 1},
               "unacknowledged": {"total": OPEN_LISTED + 34, "info": OPEN_LISTED + 31, "critical": 2, "warning": 1},
               "unacknowledged_critical_ids": ["cam/z/new-critical", "cam/z/old-critical"]}
    assert answer["summary"] == summary
    assert strict_json(call(console, "GET", "/api/incident-summary")[2]) == summary


def test_an_incident_is_unacknowledged_again_once_an_alert_is_raised_after_its_verdict(make_console):
    console = make_console()
    event = open_incident(console, "cam/z/risk", Severity.WARNING, 1000.0)
    raise_alert(console, event, 1000.0)

    def waiting() -> dict:
        return strict_json(call(console, "GET", "/api/incident-summary")[2])["unacknowledged"]

    assert waiting() == {"total": 1, "warning": 1}
    assert call(console, "POST", "/api/incidents/cam%2Fz%2Frisk/ack", headers=AUTH, json={})[0] == 200
    assert waiting() == {"total": 0}
    escalated = event.model_copy(update={"state": EventState.UPDATED, "severity": Severity.CRITICAL,
                                         "updated_at": 1060.0})
    record_incident(console, escalated)
    raise_alert(console, escalated, 1060.0)
    assert waiting() == {"total": 1, "critical": 1}
    console.store.acknowledge("cam/z/risk", "duty officer", "by SMS", 1070.0)  # acknowledged outside the console
    assert waiting() == {"total": 0}


def test_a_camera_whose_frames_stopped_is_stalled_whatever_its_producer_last_reported(make_console):
    console = make_console()
    now = time.time()

    def health() -> dict:
        return strict_json(call(console, "GET", "/api/live")[2])["cameras"]["cam"]["health"]

    def report(state: CameraState, reason: str = "") -> None:
        console.state.on_camera_status(CameraStatus(camera_id="cam", state=state, fps=5.0, reason=reason,
                                                    reconnects=0, dropped_frames=0, at=time.time()))

    report(CameraState.UP)
    console.state.on_frame("cam", 1, now - 25, b"\xff\xd8jpeg", (640, 480), (640, 480))  # none since
    assert health() == {"state": "stalled", "reason": "no frame for 25 s", "fps": None}
    report(CameraState.RECONNECTING, "rtsp: connection refused")
    assert health() == {"state": "reconnecting", "reason": "rtsp: connection refused; no frame for 25 s", "fps": 5.0}
    report(CameraState.UP)
    console.state.on_frame("cam", 2, time.time(), b"\xff\xd8jpeg", (640, 480), (640, 480))
    assert health() == {"state": "up", "reason": "", "fps": 5.0}


def test_the_session_names_the_sites_time_zone(make_console):
    assert strict_json(call(make_console(), "GET", "/api/session")[2])["timezone"] is None
    console = make_console("alerting:\n  timezone: Asia/Seoul")
    assert strict_json(call(console, "GET", "/api/session")[2])["timezone"] == "Asia/Seoul"


@contextmanager
def listening(console: Console):
    """The console served by its own listener (as `cityguard console` serves it) on 127.0.0.1; yields its port."""
    stop, ports = threading.Event(), queue.Queue()
    server = threading.Thread(target=asyncio.run, args=(serve(console.server, "127.0.0.1", 0, stop, ports.put),))
    server.start()
    try:
        yield ports.get(timeout=10)
    finally:
        stop.set()
        server.join(10)


def served(port: int, source: str = "127.0.0.1") -> int:
    """The status of a plain read, sent from `source` (any 127.x.y.z is this machine)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as connection:
        connection.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return int(connection.makefile("rb").readline().split()[1])


def dribble(connection: socket.socket, data: bytes, pause_s: float) -> threading.Thread:
    """Sends `data` a byte every `pause_s` from a thread, until it is all sent or the connection is cut off."""
    def send() -> None:
        try:
            for byte in data:
                connection.sendall(bytes([byte]))
                time.sleep(pause_s)
        except OSError:
            pass  # cut off

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    return sender


def answer_of(connection: socket.socket) -> bytes:
    """All the server sent before it closed the connection (a reset, as for a client cut off while it still
    sends, reads as the end)."""
    received = b""
    try:
        while chunk := connection.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def test_a_client_sending_its_request_head_a_byte_at_a_time_is_cut_off_while_others_are_served(make_console, caplog):
    console = make_console("  request_timeout_s: 0.5")
    # Headers that never end: at a byte every 0.05 s, 40 s of them, far past the deadline.
    head = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: 1\r\n" * 100
    with caplog.at_level(logging.WARNING), listening(console) as port, \
            socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
        sender = dribble(slow, head, 0.05)
        assert served(port) == 200
        assert answer_of(slow) == b""  # closed without an answer, long before the headers could end
        assert sender.is_alive(), "the head was sent whole"
        assert served(port) == 200
    assert "connection from 127.0.0.1 cut off: its request did not arrive whole within 0.5 s " \
           "(console.request_timeout_s)" in caplog.text


def test_a_client_sending_its_request_body_a_byte_at_a_time_is_answered_408(make_console, caplog):
    console = make_console("  request_timeout_s: 0.5")
    body = json.dumps({"note": "x" * 400}).encode()
    with caplog.at_level(logging.WARNING), listening(console) as port, \
            socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
        slow.sendall(b"POST /api/incidents/x/ack HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"X-Console-Token: " + TOKEN.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body))
        sender = dribble(slow, body, 0.05)
        assert served(port) == 200
        assert answer_of(slow).startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert sender.is_alive(), "the body was sent whole"
    assert "request body from 127.0.0.1 did not arrive within 0.5 s (console.request_timeout_s): answered 408" \
        in caplog.text


def test_an_ipv6_client_is_its_64_network_so_its_many_addresses_share_one_bound():
    guard = ConnectionGuard(ConsoleConfig(max_connections_per_client=2))
    assert [guard.admit(client_of(address)) is None
            for address in ("2001:db8:1:2::10", "2001:db8:1:2:aaaa::1", "2001:db8:1:2:ffff::2")] == [True, True, False]
    assert guard.admit(client_of("2001:db8:1:3::10")) is None  # another network
    assert [guard.admit(client_of(address)) is None
            for address in ("192.0.2.1", "192.0.2.2", "::ffff:192.0.2.3", "fe80::1%eth0")] == [True, True, True, True]
    assert client_of("2001:db8:1:2::10") == "2001:db8:1:2::/64" and client_of("192.0.2.1") == "192.0.2.1"


class PeerTransport(asyncio.Transport):
    """A client's end of a connection as the listener sees it: who it is, how much of its answer it has not read,
    and what became of it (open, refused with a 503, or closed to admit another client)."""

    def __init__(self, address: str, unread: int = 0, sock: socket.socket | None = None):
        super().__init__()
        self.address, self.unread, self.sock, self.fate = address, unread, sock, "open"

    def get_extra_info(self, name, default=None):
        return {"peername": (self.address, 40000), "socket": self.sock}.get(name, default)

    def get_write_buffer_size(self) -> int:
        return self.unread

    def write(self, data: bytes) -> None:
        if data.startswith(b"HTTP/1.1 503 "):
            self.fate = "refused"

    def close(self) -> None:
        pass

    def abort(self) -> None:
        self.fate = "closed for another"


def test_room_is_made_from_any_client_holding_two_more_that_has_an_idle_connection_not_only_the_greediest():
    """An attacker's biggest address holds only busy connections (a request being answered, an answer it does not
    read), as many as another client's idle ones: a newcomer is still admitted, by closing one of those."""
    async def fates() -> list[tuple[str, str]]:
        guard = ConnectionGuard(ConsoleConfig(max_connections=6))
        transports = []

        def connect(address: str, unread: int = 0) -> GuardedConnection:
            transports.append(PeerTransport(address, unread))
            connection = GuardedConnection(guard, asyncio.Protocol())
            connection.connection_made(transports[-1])
            return connection

        connect("10.0.0.1").request_arrived()  # its request is being answered
        connect("10.0.0.1", unread=65536)  # answered, the answer left unread
        for address in ("10.0.0.2", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"):
            connect(address)  # idle
        return [(transport.address, transport.fate) for transport in transports]

    assert asyncio.run(fates()) == [
        ("10.0.0.1", "open"), ("10.0.0.1", "open"), ("10.0.0.2", "closed for another"), ("10.0.0.2", "open"),
        ("10.0.0.3", "open"), ("10.0.0.4", "open"),
        ("10.0.0.5", "open"),  # admitted in the place of 10.0.0.2's idle connection
        ("10.0.0.6", "refused")]  # every client but the busy one holds one: nobody's share makes room


def test_a_client_cut_off_with_its_answer_unread_is_told_so_even_when_it_sent_more_meanwhile(caplog):
    async def cut_off(unread: int, sent: bytes) -> None:
        guard = ConnectionGuard(ConsoleConfig())
        connection = GuardedConnection(guard, asyncio.Protocol())
        connection.connection_made(PeerTransport("10.0.0.1", unread))  # awaiting its (next) request
        if sent:
            connection.data_received(sent)
        connection.cut_off()

    with caplog.at_level(logging.WARNING):
        asyncio.run(cut_off(unread=4_000_000, sent=b"GET /api/cam"))
        asyncio.run(cut_off(unread=0, sent=b"GET /api/cam"))
    assert [record.getMessage() for record in caplog.records] == [
        "connection from 10.0.0.1 cut off: it did not read its answer within 10 s (console.request_timeout_s)",
        "connection from 10.0.0.1 cut off: its request did not arrive whole within 10 s (console.request_timeout_s)"]


def test_an_answer_only_the_kernel_still_holds_counts_as_unread(caplog):
    """A file sent by sendfile leaves nothing in the transport: what the client has not taken lies in the kernel, and
    the connection is cut off as one that did not read its answer, not closed as an idle one."""
    async def cut_off(sock: socket.socket) -> int:
        connection = GuardedConnection(ConnectionGuard(ConsoleConfig()), asyncio.Protocol())
        connection.connection_made(PeerTransport("10.0.0.1", sock=sock))
        unread = connection.unread_bytes()
        connection.cut_off()
        return unread

    ours, theirs = socket.socketpair()
    with ours, theirs, caplog.at_level(logging.DEBUG, logger="sinks.console.connections"):
        ours.sendall(b"x" * 4096)
        assert asyncio.run(cut_off(ours)) >= 4096
        received = b""
        while len(received) < 4096:
            received += theirs.recv(65536)
        assert asyncio.run(cut_off(ours)) == 0
    assert [record.getMessage() for record in caplog.records] == [
        "connection from 10.0.0.1 cut off: it did not read its answer within 10 s (console.request_timeout_s)",
        "idle connection from 10.0.0.1 closed after 10 s"]


def test_connections_beyond_a_clients_bound_or_the_consoles_are_refused_and_other_clients_served(make_console,
                                                                                                  caplog):
    console = make_console("  max_connections_per_client: 2\n  max_connections: 4")

    def connect(source: str) -> socket.socket:
        return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))

    with caplog.at_level(logging.WARNING), listening(console) as port:
        held = [connect("127.0.0.1") for _ in range(2)]  # idle, sending nothing
        try:
            for _ in range(3):
                with connect("127.0.0.1") as refused:
                    answer = answer_of(refused)
                assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
                assert answer.endswith(b"\r\n\r\nyour address holds too many connections to the console; try again in "
                                       b"a few seconds\n")
            assert served(port, source="127.0.0.2") == 200  # another client
            held += [connect("127.0.0.2"), connect("127.0.0.3")]
            # The console's bound is full, and 127.0.0.1 holds two of it: its oldest idle connection makes room.
            held.append(connect("127.0.0.4"))
            held[-1].sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert held[-1].makefile("rb").readline().startswith(b"HTTP/1.1 200 ")
            assert answer_of(held.pop(0)) == b""
            # Every client now holds one: nobody's share can make room.
            with connect("127.0.0.5") as refused:
                assert b"the console holds too many connections" in answer_of(refused)
            held.pop(0).close()
            deadline = time.monotonic() + 10
            while (status := served(port, source="127.0.0.5")) == 503 and time.monotonic() < deadline:
                time.sleep(0.05)  # the close takes a moment
            assert status == 200
        finally:
            for connection in held:
                connection.close()
    refusals = [record.getMessage() for record in caplog.records if "connections" in record.getMessage()]
    assert refusals == [  # once a flood, not once a connection
        "refusing new connections: 127.0.0.1 holds 2 connections already (console.max_connections_per_client)",
        "the console holds 4 connections (console.max_connections): closing idle ones of the clients holding the "
        "most, 127.0.0.1 first with 2, to admit others",
        "refusing new connections: the console holds 4 connections already (console.max_connections)"]

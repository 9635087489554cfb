"""The dispatcher's HTTP port: Prometheus scrapes GET /metrics, Alertmanager posts to the webhook with a bearer token.

Hostile requests go over real sockets: forged (no or wrong token), wrong content type, oversized, lying or slow
bodies, malformed JSON, too many alerts, too many connections, an incident flooding its notices.
"""
from __future__ import annotations

import json
import queue
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY

from schemas.settings.alerting import ReceiverConfig
from schemas.settings.base import ConfigError
from sinks.alerts.dispatcher import ALERTS
from sinks.alerts.service import WEBHOOK_PATH, AlertmanagerReceiver, receiver_token

TOKEN = "webhook-token-for-tests"


def alert(fingerprint: str = "f1", name: str = "CityguardZoneDanger", severity: str = "critical") -> dict:
    return {"status": "firing", "fingerprint": fingerprint, "startsAt": "2026-01-01T00:00:00Z",
            "labels": {"alertname": name, "severity": severity}, "annotations": {"summary": "zone at danger"}}


def payload(*alerts: dict) -> bytes:
    return json.dumps({"version": "4", "status": "firing", "alerts": list(alerts) or [alert()]}).encode()


class Running:
    """A receiver on a free loopback port with a stand-in main loop that records what it is handed."""

    def __init__(self, token: str | None = TOKEN, handle_timeout_s: float = 60.0, failing: str | None = None,
                 busy: bool = False, **settings):
        self.receiver = AlertmanagerReceiver(ReceiverConfig(port=0, **settings), token,
                                             handle_timeout_s=handle_timeout_s).start()
        self.url = f"http://127.0.0.1:{self.receiver.port}"
        self.recorded: list = []
        self.failing = failing  # what the stand-in loop says went wrong recording each request
        self.busy = busy  # the stand-in loop takes nothing from the inbox
        self.running = True
        self.loop = threading.Thread(target=self.main_loop, daemon=True)
        self.loop.start()

    def main_loop(self) -> None:
        while self.running:
            try:
                pending = None if self.busy else self.receiver.inbox.get(timeout=0.05)
            except queue.Empty:
                continue
            if pending is None:
                time.sleep(0.05)
                continue
            if self.failing is None:
                self.recorded.extend(pending.notices)
            pending.error = self.failing
            pending.done.set()

    def post(self, body: bytes, token: str | None = TOKEN, content_type: str = "application/json",
             path: str = WEBHOOK_PATH) -> tuple[int, str, dict]:
        headers = {"Content-Type": content_type}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return status_of(urllib.request.Request(self.url + path, data=body, method="POST", headers=headers))

    def raw(self, head: bytes, body: bytes = b"", timeout_s: float = 5) -> bytes:
        """Sends bytes as they are (lying headers, partial bodies) and returns whatever comes back."""
        with socket.create_connection(("127.0.0.1", self.receiver.port), timeout=timeout_s) as connection:
            connection.sendall(head + body)
            return read_all(connection)

    def stop(self) -> None:
        self.running = False
        self.receiver.stop()


def read_all(connection: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = connection.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def status_of(request) -> tuple[int, str, dict]:
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), dict(error.headers)


def head(content_length: str, token: str = TOKEN) -> bytes:
    return (f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n").encode()


@pytest.fixture
def receiver():
    running = Running()
    yield running
    running.stop()


def test_metrics_are_served_in_the_prometheus_text_format_with_what_tells_the_process_across_restarts(receiver):
    ALERTS.labels(severity="danger", status="sent").inc()
    with urllib.request.urlopen(f"{receiver.url}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
        text = response.read().decode()
    assert 'cityguard_alerts_total{severity="danger",status="sent"}' in text
    identity = f'hostname="{socket.gethostname()}",metrics_port="{receiver.receiver.port}"'
    assert f"cityguard_process_info{{{identity}}} 1.0" in text.splitlines()


def test_unknown_paths_are_not_found(receiver):
    assert status_of(f"{receiver.url}/nothing")[0] == 404
    assert receiver.post(payload(), path="/nothing")[0] == 404


def test_an_authenticated_alertmanager_notification_is_recorded(receiver):
    status, body, _ = receiver.post(payload())
    assert (status, body) == (200, "1 alerts recorded")
    assert [notice.incident_id for notice in receiver.recorded] == ["am-f1"]


def test_alerts_not_recorded_are_answered_and_counted_as_refused():
    # Alertmanager sends them again, but while the dispatcher is too busy to record them (its incident store slow) or
    # fails to, they page nobody: CityguardAlertWebhookRefused must see it.
    def refused(code: str) -> float:
        return REGISTRY.get_sample_value("cityguard_alert_webhook_refused_total", {"code": code}) or 0

    before = refused("500"), refused("503")
    failing, busy = Running(failing="the incident store is read-only"), Running(handle_timeout_s=0.3, busy=True)
    try:
        assert failing.post(payload())[:2] == (500, "the incident store is read-only")
        assert busy.post(payload())[:2] == (503, "dispatcher busy, retry")
    finally:
        failing.stop()
        busy.stop()
    assert (refused("500"), refused("503")) == (before[0] + 1, before[1] + 1)


def test_a_relative_runbook_is_sent_as_a_link_under_the_configured_base():
    published = Running(runbook_base_url="https://git.example.org/cityguard/blob/main")
    try:
        relative, absolute, none = alert("f1"), alert("f2"), alert("f3")
        relative["annotations"]["runbook_url"] = "infra/prometheus/runbooks.md#zone-danger"
        absolute["annotations"]["runbook_url"] = "https://wiki.example.org/zone-danger"
        assert published.post(payload(relative, absolute, none))[0] == 200
        assert [notice.message.partition("Runbook: ")[2] for notice in published.recorded] == [
            "https://git.example.org/cityguard/blob/main/infra/prometheus/runbooks.md#zone-danger",
            "https://wiki.example.org/zone-danger", ""]
    finally:
        published.stop()


def test_without_a_runbook_base_the_runbook_path_is_sent_as_written(receiver):
    relative = alert()
    relative["annotations"]["runbook_url"] = "infra/prometheus/runbooks.md#zone-danger"
    assert receiver.post(payload(relative))[0] == 200
    assert receiver.recorded[0].message.endswith("Runbook: infra/prometheus/runbooks.md#zone-danger")


@pytest.mark.parametrize("token", [None, "wrong-token", ""])
def test_a_forged_alert_without_the_token_is_refused_and_never_reaches_the_dispatcher(receiver, token):
    status, body, _ = receiver.post(payload(), token=token)
    assert (status, body) == (401, "a valid bearer token is required")
    assert receiver.recorded == []


def test_without_a_configured_token_the_intake_is_closed():
    closed = Running(token=None)
    try:
        assert closed.post(payload(), token="anything")[0] == 401
        assert closed.post(payload(), token="None")[0] == 401
        assert closed.recorded == []
    finally:
        closed.stop()


def test_only_json_is_accepted(receiver):
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/jsonx"):
        assert receiver.post(payload(), content_type=content_type)[0] == 415
    assert receiver.post(payload(), content_type="application/json; charset=utf-8")[0] == 200


@pytest.mark.parametrize("body, reason", [
    (b"not json", "bad webhook payload"),
    (b"[1, 2, 3]", "not an Alertmanager webhook payload"),
    (b"[" * 100_000 + b"]" * 100_000, "bad webhook payload"),
    (json.dumps({"version": "4", "alerts": [[]]}).encode(), "alerts[0] is not an object"),
    (json.dumps({"version": "4", "alerts": [{**alert(), "labels": ["x"]}]}).encode(), "alerts[0].labels"),
    (json.dumps({"version": "4", "alerts": [{**alert(), "labels": {"a": {"b": 1}}}]}).encode(), "alerts[0].labels"),
    (json.dumps({"version": "4", "alerts": [{**alert(), "status": "exploded"}]}).encode(), "alerts[0].status"),
    (json.dumps({"version": "4", "alerts": [{**alert(), "startsAt": "yesterday"}]}).encode(), "alerts[0].startsAt"),
    (json.dumps({"version": "4", "alerts": [{**alert(), "startsAt": 5}]}).encode(), "alerts[0].startsAt"),
    (json.dumps({"version": "4", "alerts": [{**alert(), "fingerprint": 7}]}).encode(), "alerts[0].fingerprint"),
])
def test_every_malformed_payload_gets_400_with_the_reason(receiver, body, reason):
    status, text, _ = receiver.post(body)
    assert status == 400 and reason in text
    assert receiver.recorded == []


def test_a_huge_body_is_refused_with_413_before_it_is_read(receiver):
    started = time.monotonic()
    answer = receiver.raw(head(str(300 * 1024 * 1024)), b"x" * 1024)
    assert answer.startswith(b"HTTP/1.0 413") or answer.startswith(b"HTTP/1.1 413")
    assert time.monotonic() - started < 2  # answered at once, nothing waited for


def test_too_many_alerts_in_one_request_are_refused_with_413(receiver):
    status, text, _ = receiver.post(payload(*[alert(f"f{index}", f"Forged{index}") for index in range(200)]))
    assert status == 413 and "200 alerts exceed 100" in text
    assert receiver.recorded == []


@pytest.mark.parametrize("content_length", ["-1", "abc", "1e9"])
def test_a_lying_content_length_is_answered_at_once(receiver, content_length):
    started = time.monotonic()
    answer = receiver.raw(head(content_length), b"{}")
    assert b" 400 " in answer.split(b"\r\n")[0]
    assert time.monotonic() - started < 2


def test_a_body_without_content_length_is_refused_with_411(receiver):
    answer = receiver.raw(f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                          f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
                          .encode())
    assert b" 411 " in answer.split(b"\r\n")[0]


def test_a_slow_body_times_out_with_408():
    slow = Running(request_timeout_s=0.5)
    try:
        started = time.monotonic()
        answer = slow.raw(head("1000"), b'{"version": "4"')  # then nothing more
        assert b" 408 " in answer.split(b"\r\n")[0]
        assert time.monotonic() - started < 3
    finally:
        slow.stop()


def test_headers_sent_a_byte_at_a_time_cannot_hold_the_only_connection_slot():
    """Each byte comes well within the socket's timeout, so only a deadline on the headers in all lets go of it."""
    bounded = Running(max_connections=1, request_timeout_s=0.5)
    slow = socket.create_connection(("127.0.0.1", bounded.receiver.port), timeout=5)
    trickling = threading.Event()

    def trickle() -> None:
        try:
            for byte in head("10"):
                slow.sendall(bytes([byte]))
                trickling.set()
                time.sleep(0.1)
        except OSError:
            pass  # cut off

    sender = threading.Thread(target=trickle, daemon=True)
    try:
        sender.start()
        trickling.wait(5)
        time.sleep(1.0)  # past the deadline, though the client still sends
        assert bounded.post(payload())[0] == 200
        assert read_all(slow) == b""  # closed without an answer
    finally:
        slow.close()
        sender.join(5)
        bounded.stop()


def test_connections_beyond_the_bound_are_refused_and_threads_stay_bounded():
    bounded = Running(max_connections=4, request_timeout_s=5)
    held = []
    try:
        threads_before = threading.active_count()
        for _ in range(50):  # slowloris: headers promise a body that never comes
            connection = socket.create_connection(("127.0.0.1", bounded.receiver.port), timeout=5)
            connection.sendall(head("1000"))
            held.append(connection)
        time.sleep(0.3)
        assert threading.active_count() - threads_before <= 4
        started = time.monotonic()
        refused = [read_all(connection) for connection in held[4:]]
        assert time.monotonic() - started < 2  # closed by the receiver, not held until the client's timeout
        assert sum(answer.startswith(b"HTTP/1.1 503") for answer in refused) >= 40  # (a reset may beat the answer)
    finally:
        for connection in held:
            connection.close()
        bounded.stop()


def test_one_incident_flooding_its_notices_is_rate_limited(receiver):
    flooding = Running(incident_requests_per_minute=3)
    try:
        statuses = [flooding.post(payload(alert("same")))[0] for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        status, text, headers = flooding.post(payload(alert("same")))
        assert headers["Retry-After"] == "60" and "more than 3 notices a minute for am-same" in text
        assert flooding.post(payload(alert("other")))[0] == 200  # another incident is not held back
        assert len(flooding.recorded) == 4
    finally:
        flooding.stop()


def test_the_token_is_required_to_listen_beyond_loopback(monkeypatch):
    monkeypatch.delenv("CITYGUARD_ALERTMANAGER_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="CITYGUARD_ALERTMANAGER_TOKEN is not set"):
        receiver_token(ReceiverConfig(host="0.0.0.0"))
    assert receiver_token(ReceiverConfig(host="127.0.0.1")) is None
    monkeypatch.setenv("CITYGUARD_ALERTMANAGER_TOKEN", TOKEN)
    assert receiver_token(ReceiverConfig(host="0.0.0.0")) == TOKEN
    monkeypatch.setenv("CITYGUARD_ALERTMANAGER_TOKEN", "letmein")  # guessable from the network
    with pytest.raises(ConfigError, match="^CITYGUARD_ALERTMANAGER_TOKEN is too short for a listener on 0.0.0.0: "
                                         "give it 16 characters or more") as refused:
        receiver_token(ReceiverConfig(host="0.0.0.0"))
    assert "letmein" not in str(refused.value)
    assert receiver_token(ReceiverConfig(host="127.0.0.1")) == "letmein"  # only this machine can try it


def test_a_token_from_the_environment_loses_the_newline_around_it_and_holds_no_control_character(monkeypatch):
    monkeypatch.setenv("CITYGUARD_ALERTMANAGER_TOKEN", TOKEN + "\n")  # as `echo` writes it into a file
    running = Running(token=receiver_token(ReceiverConfig(host="0.0.0.0")))
    try:
        assert running.post(payload())[0] == 200
    finally:
        running.stop()
    monkeypatch.setenv("CITYGUARD_ALERTMANAGER_TOKEN", "webhook\x1btoken")
    with pytest.raises(ConfigError, match="^alerting.receiver: environment variable CITYGUARD_ALERTMANAGER_TOKEN "
                                         "holds a control character$"):
        receiver_token(ReceiverConfig(host="0.0.0.0"))

"""A channel's try ends at its retry.timeout_s however slowly the receiver answers, against a local server that takes
the request and then trickles its status line and headers a byte at a time, each byte well within a socket timeout;
and however long the receiver's host name takes to look up."""
from __future__ import annotations

import socket
import time

import pytest

from schemas import Alert, Severity
from schemas.settings.alerting import ContactConfig
from sinks.alerts.channels import Message, build_channels
from tests.conftest import HANGING_HOST
from tests.ops.helpers import DUTY_PHONE, TWILIO_ENV, alerting_section, make_config
from tests.trickling_server import TricklingServer

MESSAGE_JSON = b'{"sid": "SM' + b"0" * 32 + b'", "status": "queued"}'


def head(status_line: bytes) -> bytes:
    return (status_line + b"\r\nContent-Type: application/json\r\nX-Pad: " + b"a" * 100 + b"\r\nContent-Length: "
            + str(len(MESSAGE_JSON)).encode() + b"\r\nConnection: close\r\n\r\n")


def channel_against(server_url: str, channel_id: str, tmp_path, timeout_s: float):
    section = alerting_section(server_url, server_url + "/hook", f"sqlite:///{tmp_path}/incidents.db")
    for channel in section["channels"]:
        channel["retry"] = {"max_attempts": 3, "timeout_s": timeout_s}
    return build_channels(make_config(tmp_path, section).alerting.channels, str)[channel_id]


def message() -> Message:
    """An alert to the duty officer, whom both the webhook and the SMS channel can reach."""
    alert = Alert(alert_id="plaza/north/risk-1:critical", event_id="plaza/north/risk-1", severity=Severity.CRITICAL,
                  camera_id="plaza-cam-1", zone_id="north", title="Crowd risk", message="density 5.1/m²",
                  created_at=time.time())
    duty = ContactConfig(id="duty", name="Duty officer", phone=DUTY_PHONE)
    return Message(alert=alert, ref=1, site="test", contact=duty, key="plaza/north/risk-1:critical|ops|duty")


@pytest.fixture(autouse=True)
def twilio_env(monkeypatch):
    """The SMS channel's account, which building the channels asks for."""
    for name, value in TWILIO_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def trickling_head(request):
    """A receiver whose head would take about 30 s, a byte every 0.2 s; or, given a pause, one byte per pause."""
    status_line, pause_s = getattr(request, "param", (b"HTTP/1.1 200 OK", 0.2))
    server = TricklingServer(head(status_line), MESSAGE_JSON, pause_s)
    yield server
    server.close()


def test_a_webhook_answer_trickling_in_ends_the_try_at_its_timeout(trickling_head, tmp_path):
    attempt = channel_against(trickling_head.url, "ops", tmp_path, timeout_s=1).send(message(), "Crowd risk")
    assert trickling_head.received.is_set() and not trickling_head.head_sent.is_set()
    assert (attempt.delivered, attempt.retryable, attempt.status_code) == (False, True, None)
    assert attempt.error == "ReadTimeout: answer not complete by the deadline"


def test_an_sms_answer_trickling_in_ends_the_try_at_its_timeout_and_is_reconciled(trickling_head, tmp_path):
    attempt = channel_against(trickling_head.url, "sms", tmp_path, timeout_s=1).send(message(), "Crowd risk")
    assert trickling_head.received.is_set() and not trickling_head.head_sent.is_set()
    # The request reached Twilio, which may have created the message: the next try asks first.
    assert (attempt.delivered, attempt.retryable, attempt.ambiguous) == (False, True, True)
    assert attempt.error == "ReadTimeout: answer not complete by the deadline"


@pytest.mark.parametrize("trickling_head", [(b"HTTP/1.1 201 Created", 0.005)], indirect=True)
@pytest.mark.parametrize("channel_id", ["ops", "sms"])
def test_an_answer_trickling_in_within_the_timeout_is_read(trickling_head, tmp_path, channel_id):
    attempt = channel_against(trickling_head.url, channel_id, tmp_path, timeout_s=60).send(message(), "Crowd risk")
    assert attempt.delivered and attempt.status_code == 201


@pytest.mark.parametrize("channel_id", ["ops", "sms"])
def test_a_host_name_whose_lookup_hangs_ends_the_try_at_its_timeout_as_not_sent(hanging_resolver, tmp_path,
                                                                                 channel_id):
    attempt = channel_against(f"http://{HANGING_HOST}", channel_id, tmp_path, timeout_s=1).send(message(), "Crowd risk")
    assert hanging_resolver.is_set()
    # Nothing went out: an SMS is sent again without asking Twilio first.
    assert (attempt.delivered, attempt.retryable, attempt.ambiguous, attempt.status_code) == (False, True, False, None)
    assert attempt.error.startswith("ConnectTimeout: ")
    assert f"{HANGING_HOST} not looked up and connected to by the deadline" in attempt.error


def test_a_webhook_offering_http3_is_answered_over_tcp(https_webhook, tmp_path):
    """QUIC's waits outlast the try's deadline: a receiver whose answer offers HTTP/3 (Alt-Svc), here on a UDP port
    that takes packets and never answers, is sent the try's next request over TCP as the first."""
    quic = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    quic.bind(("127.0.0.1", 0))
    quic.settimeout(0)
    https_webhook.keep_alive = True  # HTTP/3 takes over a connection kept open, for its next request
    https_webhook.script = [(307, {"Location": https_webhook.url, "Alt-Svc": f'h3=":{quic.getsockname()[1]}"'})]
    attempt = channel_against(https_webhook.url.removesuffix("/hook"), "ops", tmp_path, timeout_s=5).send(
        message(), "Crowd risk")
    assert attempt.delivered and https_webhook.paths == ["/hook"]
    with pytest.raises(BlockingIOError):  # no QUIC packet came
        quic.recv(65_536)
    quic.close()

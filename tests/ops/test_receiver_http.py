"""The dispatcher's loopback HTTP port: Prometheus scrapes GET /metrics, Alertmanager posts to the webhook."""
from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from sinks.alerts.dispatcher import ALERTS
from sinks.alerts.service import WEBHOOK_PATH, AlertmanagerReceiver


@pytest.fixture
def receiver():
    receiver = AlertmanagerReceiver("127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{receiver.port}"
    receiver.stop()


def status_of(request) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def test_metrics_are_served_in_the_prometheus_text_format(receiver):
    ALERTS.labels(severity="danger", status="sent").inc()
    status, content_type, body = status_of(f"{receiver}/metrics")
    assert (status, content_type) == (200, CONTENT_TYPE_LATEST)
    assert 'cityguard_alerts_total{severity="danger",status="sent"}' in body


def test_unknown_paths_are_not_found(receiver):
    assert status_of(f"{receiver}/nothing")[0] == 404
    assert status_of(urllib.request.Request(f"{receiver}/nothing", data=b"{}", method="POST"))[0] == 404


def test_a_webhook_payload_that_is_not_alertmanager_json_is_refused_with_the_reason(receiver):
    status, content_type, body = status_of(urllib.request.Request(f"{receiver}{WEBHOOK_PATH}", data=b"not json",
                                                                  method="POST"))
    assert (status, content_type) == (400, "text/plain; charset=utf-8")
    assert body.startswith("bad webhook payload")

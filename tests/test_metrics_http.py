"""A stage's metrics listener: /metrics, with what tells its process across restarts, and /healthz for a liveness
probe that names a consume loop gone still."""
import socket
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import infra.kafka
import infra.metrics_http
from infra.kafka import loop_went_round
from infra.metrics_http import start_metrics_server


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_healthz_fails_once_a_loop_stops_going_round_and_metrics_are_served(monkeypatch):
    monkeypatch.setattr(infra.kafka, "_loop_times", {})  # this process's other tests ran loops too
    server = start_metrics_server("127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        assert get(base + "/healthz") == (200, "ok\n")  # no loop yet: a stage still loading its model is alive
        loop_went_round("inference")
        assert get(base + "/healthz") == (200, "ok\n")
        status, text = get(base + "/metrics")
        assert status == 200 and 'cityguard_stage_loop_timestamp_seconds{stage="inference"}' in text
        # what tells this process from others across its restarts, which may change the address it is scraped at
        identity = f'hostname="{socket.gethostname()}",metrics_port="{server.server_port}"'
        assert f"cityguard_process_info{{{identity}}} 1.0" in text.splitlines()
        monkeypatch.setattr(infra.metrics_http, "time", SimpleNamespace(time=lambda: time.time() + 400))
        assert get(base + "/healthz") == (503, "inference loop last went round 400 s ago\n")
    finally:
        server.shutdown()

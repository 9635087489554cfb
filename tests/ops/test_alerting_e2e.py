"""A danger-level zone and a lost event, end to end on real services. The zone: its analytics event pages once
through the dispatcher while its Prometheus rule fires for the dashboards only. The event the dispatcher
dead-lettered: broker -> metrics sink -> Prometheus rule -> Alertmanager -> dispatcher -> one SMS at the fake
Twilio. Then every Grafana panel query runs against that Prometheus.

The metrics sink is the real one (sinks.metrics_exporter.MetricsSink fed through the broker): every series it exports,
the zones' forecast and crossings included, comes from the messages fed to it. Only the metrics of stages not running
here (producer, inference, analytics) are served by a stand-in registry with their names, types and labels.
"""
from __future__ import annotations

import argparse
import json
import re
import threading
import time
import uuid

import pytest
import requests
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from cityguard.commands_alerts import acknowledge, show_incident
from infra.broker import free_port
from infra.kafka import create_topics, make_consumer, make_producer
from schemas import (
    DeadLetter,
    DensityForecast,
    Detections,
    Event,
    EventState,
    LineCounts,
    RiskLevel,
    Severity,
    ZoneMetrics,
    encode,
)
from schemas.camera_status import CameraState
from schemas.settings.config import TopicNames, parse_config
from sinks.alerts.store import SENT, IncidentStore
from tests.ops import stack
from tests.ops.fakes import FakeTwilio
from tests.ops.helpers import ACCOUNT_SID, AUTH_TOKEN, DUTY_PHONE, TWILIO_ENV

pytestmark = pytest.mark.broker
CAMERA, ZONE = "plaza", "walkway"


def site_config(tmp_path, twilio_url: str, suffix: str, receiver_port: int) -> dict:
    topics = {name: f"{default}.{suffix}" for name, default in TopicNames().model_dump().items()}
    return {
        "site": f"ops-{suffix}",
        "broker": {"partitions": 1, "topics": topics},
        "alerting": {
            "store_url": f"sqlite:///{tmp_path}/incidents.sqlite",
            "escalation_check_interval_s": 1,
            "receiver": {"host": "127.0.0.1", "port": receiver_port},
            "contacts": [{"id": "duty", "phone": DUTY_PHONE}],
            "channels": [{"kind": "sms", "id": "sms", "api_base_url": twilio_url, "messages_per_second": 50,
                          "template": "[{severity}] {title} — 확인: cityguard alerts ack {ref}",
                          "retry": {"max_attempts": 3, "backoff_initial_s": 0.1, "timeout_s": 5}}],
            "routes": [{"id": "safety-critical", "match": {"severities": ["critical"]},
                        "channels": ["sms"], "escalation": ["duty"]}],
        },
        "cameras": [{"id": CAMERA, "name": "Plaza", "source": "0", "lat": 37.5665, "lon": 126.978,
                     "zones": [{"id": ZONE, "polygon": [[0, 0], [10, 0], [10, 10]], "area_m2": 100}],
                     "scene": {"lanes": [{"id": "northbound-1", "polygon": [[0, 0], [10, 0], [10, 10]],
                                          "direction": [0, -1]}],
                               "counting_lines": [{"id": "stop-line-1", "start": [0, 5], "end": [10, 5],
                                                   "lane": "northbound-1"}]}}],
    }


class StandIns:
    """The agreed metrics of components not running in this test, kept moving so rates and quantiles have data."""

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        labels = ["camera"]
        self.produced = Counter("cityguard_frames_produced_total", "Frames produced", labels, registry=r)
        self.camera_up = Gauge("cityguard_camera_up", "Camera up", labels, registry=r)
        self.camera_state = Gauge("cityguard_camera_state", "Camera state", ["camera", "state"], registry=r)
        self.fps = Gauge("cityguard_camera_fps", "Camera fps", labels, registry=r)
        self.reconnects = Counter("cityguard_camera_reconnects_total", "Reconnects", labels, registry=r)
        self.dropped = Counter("cityguard_camera_dropped_frames_total", "Dropped", labels, registry=r)
        self.frame_age = Gauge("cityguard_camera_last_frame_age_seconds", "Frame age", labels, registry=r)
        self.consumed = Counter("cityguard_frames_consumed_total", "Frames consumed", labels, registry=r)
        self.inference = Histogram("cityguard_inference_seconds", "Model time", registry=r,
                                   buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0))
        self.batch = Histogram("cityguard_inference_batch_size", "Batch size", registry=r,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.lag = Gauge("cityguard_consumer_lag_messages", "Lag", ["group", "topic", "partition"], registry=r)
        self.shed = Counter("cityguard_frames_shed_total", "Shed", ["camera", "reason"], registry=r)
        self.inference_age = Gauge("cityguard_inference_frame_age_seconds", "Frame age at inference", labels,
                                   registry=r)
        self.analysed = Counter("cityguard_analytics_frames_total", "Frames analysed", labels, registry=r)
        self.analysis = Histogram("cityguard_analytics_seconds", "Analyzer time", registry=r,
                                  buckets=(0.001, 0.002, 0.005, 0.01, 0.02))
        self.gap_frames = Counter("cityguard_analytics_gap_frames_total", "Gap frames", registry=r)
        self.camera_up.labels(CAMERA).set(1)
        for state in CameraState:  # as the producer exports them: 1 for the current state, 0 for the others
            self.camera_state.labels(CAMERA, state.value).set(int(state is CameraState.UP))
        self.lag.labels("cityguard-inference", "cityguard.frames.v1", "0").set(3)

    def step(self, tick: int) -> None:
        self.produced.labels(CAMERA).inc(2)
        self.consumed.labels(CAMERA).inc(2)
        self.fps.labels(CAMERA).set(10)
        self.frame_age.labels(CAMERA).set(0.1)
        self.reconnects.labels(CAMERA).inc(tick % 2)
        self.dropped.labels(CAMERA).inc(tick % 3)
        self.inference.observe(0.02 + 0.01 * (tick % 5))
        self.batch.observe(1 + tick % 4)
        self.shed.labels(CAMERA, "stale").inc(tick % 2)
        self.inference_age.labels(CAMERA).set(0.3)
        self.analysed.labels(CAMERA).inc(2)
        self.analysis.observe(0.002 + 0.001 * (tick % 3))
        self.gap_frames.inc(tick % 2)


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap, tmp_path_factory):
    """Everything up and the danger scenario injected; yields what the tests inspect."""
    directory = tmp_path_factory.mktemp("ops-e2e")
    suffix = uuid.uuid4().hex[:8]
    processes, servers, stop = [], [], threading.Event()
    log = open(directory / "services.log", "ab")
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    twilio = fake.serve().__enter__()
    receiver_port = free_port()
    data = site_config(directory, twilio.url, suffix, receiver_port)
    config_path = directory / "site.yaml"
    config_path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    config = parse_config(data, directory)
    topics = config.broker.topics
    create_topics(kafka_bootstrap, topics.all(), 1)
    try:
        # The real metrics sink, reading the broker, on the default registry.
        from sinks.metrics_exporter import MetricsSink

        exporter_server, _ = start_http_server(0, addr="127.0.0.1")
        servers.append(exporter_server)
        sink_consumer = make_consumer(kafka_bootstrap, config.group_id("metrics-sink"), topics.detections,
                                      topics.zone_metrics, topics.events, topics.line_counts, topics.dead_letter,
                                      enable_auto_commit=True)
        reader = make_consumer(kafka_bootstrap, config.group_id("analytics"))
        sink = MetricsSink(config, sink_consumer, {config.group_id("analytics"): (topics.detections, reader)})
        threading.Thread(target=sink.run, args=(stop,), daemon=True).start()

        stand_ins = StandIns()
        stand_in_server, _ = start_http_server(0, addr="127.0.0.1", registry=stand_ins.registry)
        servers.append(stand_in_server)

        producer = make_producer(kafka_bootstrap)

        def feed() -> None:
            tick = 0
            while not stop.wait(0.25):
                stand_ins.step(tick)
                now = time.time()
                if tick % 4 == 0:  # a window a second, as analytics would: a zone without one turns unknown (-1)
                    producer.send(topics.zone_metrics, key=CAMERA.encode(), value=encode(ZoneMetrics(
                        camera_id=CAMERA, zone_id=ZONE, window_start=now - 10, window_end=now, frames=50,
                        area_m2=100, people_mean=560, people_max=600, density_mean_per_m2=5.6,
                        density_max_per_m2=6.0, risk_level=RiskLevel.DANGER, risk_reason="5.6 p/m² >= danger 5.0",
                        last_seq=50, inflow=12, outflow=4, seconds_to_threshold={"danger": 420},
                        forecast=[DensityForecast(horizon_s=horizon, density_per_m2=5.6 + 0.1 * horizon / 60,
                                                  lower_per_m2=5.0, upper_per_m2=6.0 + 0.1 * horizon / 60)
                                  for horizon in (300, 600, 900)])))
                producer.send(topics.detections, key=CAMERA.encode(), value=encode(Detections(
                    camera_id=CAMERA, seq=tick, captured_at=now - 0.2 - 0.01 * (tick % 7), image_width=640,
                    image_height=480, model="stand-in", inference_ms=20.0, xyxy=[(1, 1, 5, 9)], confidence=[0.9],
                    class_id=[0], class_name=["person"])))
                tick += 1

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        now = time.time()
        producer.send(topics.events, key=CAMERA.encode(), value=encode(Event(
            event_id=f"{CAMERA}/wrong-way/{suffix}", type="wrong_way", state=EventState.OPENED,
            severity=Severity.WARNING, camera_id=CAMERA, started_at=now, updated_at=now, confidence=0.8,
            reason="track moving against the lane direction")))
        producer.send(topics.line_counts, key=CAMERA.encode(), value=encode(LineCounts(
            camera_id=CAMERA, line_id="stop-line-1", lane_id="northbound-1", window_start=now - 10, window_end=now,
            class_name=["car", "bus"], direction=["in", "in"], count=[12, 1])))
        producer.send(topics.dead_letter, value=encode(DeadLetter(
            stage="inference", source_topic=topics.frames, partition=0, offset=7, key=None, reason="not msgpack",
            original=b"\x00", at=now)))
        producer.send(topics.events, key=CAMERA.encode(), value=encode(Event(  # as analytics sends a danger level
            event_id=f"{CAMERA}/{ZONE}/risk-{suffix}", type="risk_level_changed", state=EventState.OPENED,
            severity=Severity.CRITICAL, camera_id=CAMERA, zone_id=ZONE, started_at=now, updated_at=now,
            confidence=0.9, reason="5.6 p/m² >= danger 5.0")))
        producer.flush()

        dispatcher = stack.start_dispatcher(config_path, receiver_port,
                                            {**TWILIO_ENV, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                                             "CITYGUARD_ALERTMANAGER_TOKEN": stack.WEBHOOK_TOKEN}, log)
        processes.append(dispatcher)
        alertmanager, alertmanager_url = stack.start_alertmanager(
            directory, f"http://127.0.0.1:{receiver_port}/alertmanager", log)
        processes.append(alertmanager)
        stand_in = f"127.0.0.1:{stand_in_server.server_port}"
        prometheus, prometheus_url = stack.start_prometheus(directory, {
            "cityguard-exporter": [f"127.0.0.1:{exporter_server.server_port}"],
            "cityguard-producer": [stand_in],
            "cityguard-inference": [stand_in],
            "cityguard-analytics": [stand_in],
            "cityguard-alerts": [f"127.0.0.1:{receiver_port}"],
        }, alertmanager_url, log)
        processes.append(prometheus)
        # The dispatcher's dead letter once Prometheus holds its series at 0, as the sink exports it from its start.
        stack.wait_until(lambda: requests.get(prometheus_url + "/api/v1/query", timeout=5, params={
            "query": 'cityguard_dead_letters_total{stage="alerts"}'}).json()["data"]["result"], 30,
            "the dispatcher's dead-letter series at 0")
        producer.send(topics.dead_letter, key=CAMERA.encode(), value=encode(DeadLetter(
            stage="alerts", source_topic=topics.events, partition=0, offset=3, key=CAMERA.encode(),
            reason="not msgpack", original=b"\x00", at=time.time())))
        producer.flush()
        yield {"twilio": fake, "prometheus": prometheus_url, "config_path": config_path, "config": config,
               "directory": directory}
    finally:
        stop.set()
        for process in reversed(processes):
            stack.stop(process)
        for server in servers:
            server.shutdown()
        twilio.__exit__(None, None, None)
        log.close()


def test_a_danger_zone_pages_once_and_a_lost_event_pages_through_alertmanager(pipeline, capsys):
    fake, config = pipeline["twilio"], pipeline["config"]
    stack.wait_until(lambda: len(fake.messages) >= 2, 60, "two SMS at the fake Twilio")
    time.sleep(4)  # Alertmanager re-notifies the group every second meanwhile; the dispatcher must drop repeats
    sent = fake.sent_to(DUTY_PHONE)
    bodies = sorted(message["body"] for message in sent)
    assert len(sent) == 2, bodies
    assert all(message["from"] == TWILIO_ENV["TWILIO_FROM_NUMBER"] and "확인" in message["body"] for message in sent)
    # The zone's one page is its analytics event; CityguardZoneDanger fires (below) but pages no one.
    assert sum("risk level changed at plaza/walkway" in body for body in bodies) == 1, bodies
    assert not any("is at danger" in body for body in bodies), bodies
    [lost] = [message for message in sent if "dead-lettered events" in message["body"]]
    store = IncidentStore(config.alerting.store_url)
    try:
        incidents = [row for row in store.list_incidents() if row.type == "CityguardAlertEventsDeadLettered"]
        assert len(incidents) == 1
        detail = store.incident_detail(incidents[0].id)
        assert [(d.channel_id, d.status, d.provider_id) for d in detail.deliveries] == [("sms", SENT, lost["sid"])]
        assert not [row for row in store.list_incidents() if row.type == "CityguardZoneDanger"]
    finally:
        store.close()
    config_arg = argparse.Namespace(id=incidents[0].id, by="tester", note="")
    assert show_incident(config_arg, config) == 0
    shown = capsys.readouterr().out
    assert "CityguardAlertEventsDeadLettered" in shown and lost["sid"] in shown
    assert acknowledge(config_arg, config) == 0
    assert "acknowledged alert" in capsys.readouterr().out


def panel_queries() -> list[tuple[str, str, str]]:
    queries = []
    for path in sorted((stack.INFRA / "grafana" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                queries.append((path.stem, f"{panel['title']} [{target['refId']}]", target["expr"]))
    return queries


def test_every_grafana_panel_query_returns_data(pipeline):
    # After the SMS test (module order), so the dispatcher's delivery counters exist too.
    stack.wait_until(lambda: pipeline["twilio"].messages, 60, "the pipeline to have alerted")

    def run(expr: str) -> list:
        expr = expr.replace("$__rate_interval", "1m").replace("$camera", ".*")
        response = requests.get(pipeline["prometheus"] + "/api/v1/query", params={"query": expr}, timeout=5)
        body = response.json()
        assert body["status"] == "success", f"{expr}: {body.get('error')}"
        return [sample for sample in body["data"]["result"] if sample["value"][1] not in ("NaN", "+Inf", "-Inf")]

    empty = []
    for dashboard, panel, expr in panel_queries():
        try:
            stack.wait_until(lambda expr=expr: run(expr), 20, panel, interval_s=0.5)
        except AssertionError:
            empty.append(f"{dashboard}: {panel}: {expr}")
    assert not empty, "panels without data:\n" + "\n".join(empty)
    geomap = run(next(expr for _, panel, expr in panel_queries() if panel.startswith("Cameras by risk level")))
    assert [(s["metric"]["camera"], float(s["metric"]["lat"]), float(s["metric"]["lon"]), s["value"][1])
            for s in geomap] == [(CAMERA, 37.5665, 126.978, "3")]  # coloured by its zone's danger level


def test_the_zone_danger_alert_reached_alertmanager_with_its_labels(pipeline):
    response = requests.get(pipeline["prometheus"] + "/api/v1/alerts", timeout=5).json()
    firing = [alert for alert in response["data"]["alerts"] if alert["labels"]["alertname"] == "CityguardZoneDanger"]
    assert firing and firing[0]["state"] == "firing"
    assert firing[0]["labels"]["severity"] == "critical"
    assert re.search(r"#zone-danger$", firing[0]["annotations"]["runbook_url"])

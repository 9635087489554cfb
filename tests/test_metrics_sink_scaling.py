"""Two `cityguard export-metrics` of one consumer group share the partitions: each zone, camera and open incident is
exported by exactly one of them, never reported unknown by the one whose partitions do not hold it, and taken over
by the other when one stops."""
import re
import threading
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra.kafka import create_topics, key_partition, make_producer
from schemas import Event, EventState, RiskLevel, Severity, ZoneMetrics, encode
from tests.conftest import VTEST, pipeline_config
from tests.pipeline_helpers import StageProcess

pytestmark = pytest.mark.broker

PARTITIONS = 3
CAMERAS = [f"junction-{number}" for number in range(6)]


def window(camera: str, end: float) -> ZoneMetrics:
    return ZoneMetrics(camera_id=camera, zone_id="crossing", window_start=end - 1, window_end=end, frames=10,
                       area_m2=100, people_mean=5, people_max=6, density_mean_per_m2=0.05, density_max_per_m2=0.06,
                       risk_level=RiskLevel.NORMAL, risk_reason="calm", last_seq=1)


def incident(camera: str) -> Event:
    at = time.time()
    return Event(event_id=f"stopped-{camera}", type="stopped_vehicle", state=EventState.OPENED,
                 severity=Severity.WARNING, camera_id=camera, started_at=at, updated_at=at, confidence=0.9,
                 reason="stopped in lane")


def exported(url: str) -> dict[str, dict[str, float]]:
    """Per metric of interest, camera -> value, from one sink's /metrics."""
    names = ("cityguard_zone_risk_level", "cityguard_zone_window_end_timestamp_seconds", "cityguard_camera_info",
             "cityguard_events_open")
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    found: dict[str, dict[str, float]] = {name: {} for name in names}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in found:
                found[sample.name][sample.labels["camera"]] = sample.value
    return found


def metrics_url(sink: StageProcess) -> str | None:
    match = re.search(r"exporter metrics: (http://\S+)", sink.log())
    return match.group(1) if match else None


def wait_until(check, sinks: list[StageProcess], what: str, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while True:
        for sink in sinks:
            assert sink.alive(), f"the sink died:\n{sink.log_tail()}"
        urls = [metrics_url(sink) for sink in sinks]
        seen = [exported(url) for url in urls] if all(urls) else None
        if seen is not None and check(seen):
            return seen
        if time.monotonic() > deadline:
            logs = "\n".join(sink.log_tail() for sink in sinks)
            raise AssertionError(f"timed out waiting until {what}; exported {seen}\n{logs}")
        time.sleep(0.5)


def split_over(seen: list[dict[str, dict[str, float]]], cameras: list[str]) -> bool:
    """Every camera's zone level (the windows' own, never unknown), map position and open incident exported by
    exactly one sink; each sink exports some."""
    for name, value in (("cityguard_zone_risk_level", RiskLevel.NORMAL.rank), ("cityguard_camera_info", 1),
                        ("cityguard_events_open", 1)):
        for camera in cameras:
            if [one[name].get(camera) for one in seen if camera in one[name]] != [value]:
                return False
    for camera in cameras:  # nor the time of a window beside its owner's
        if sum(camera in one["cityguard_zone_window_end_timestamp_seconds"] for one in seen) != 1:
            return False
    return all(one["cityguard_zone_risk_level"] for one in seen)


def test_two_sinks_of_one_group_each_export_the_zones_of_their_partitions_and_take_over_from_one_that_stops(
        kafka_bootstrap, tmp_path):
    assert {key_partition(camera.encode(), PARTITIONS) for camera in CAMERAS} == set(range(PARTITIONS))
    cameras = [{"id": camera, "source": str(VTEST), "lat": 52.5, "lon": 13.0 + index / 100,
                "zones": [{"id": "crossing", "polygon": [[0, 0], [100, 0], [100, 100], [0, 100]], "area_m2": 100}]}
               for index, camera in enumerate(CAMERAS)]
    config, path = pipeline_config(tmp_path, "sinkscale", kafka_bootstrap, cameras=cameras)
    topics = config.broker.topics
    create_topics(kafka_bootstrap, topics.all(), PARTITIONS)
    producer = make_producer(kafka_bootstrap)
    for camera in CAMERAS:  # opened before either sink starts: read back by whichever takes its partition
        producer.send(topics.events, key=camera.encode(), value=encode(incident(camera)))
    producer.flush()
    stop = threading.Event()

    def windows() -> None:  # the analytics stage's, every half second for every zone
        while not stop.is_set():
            for camera in CAMERAS:
                producer.send(topics.zone_metrics, key=camera.encode(), value=encode(window(camera, time.time())))
            producer.flush()
            stop.wait(0.5)

    sending = threading.Thread(target=windows, daemon=True)
    sending.start()
    sinks = [StageProcess("export-metrics", path, kafka_bootstrap, tmp_path, "--metrics-port", "0")
             for _ in range(2)]
    try:
        wait_until(lambda seen: split_over(seen, CAMERAS), sinks, "the two sinks split the cameras")
        sinks[0].stop()
        wait_until(lambda seen: split_over(seen, CAMERAS), sinks[1:], "the other sink exports every camera")
    finally:
        stop.set()
        sending.join()
        producer.close()
        for sink in sinks:
            sink.stop()

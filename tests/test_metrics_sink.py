"""The metrics sink's handling of events and zone metrics, without Kafka (the e2e test covers the wiring)."""
import logging
import math
import threading
import time
from types import SimpleNamespace

import pytest
from kafka import TopicPartition
from prometheus_client import REGISTRY

from schemas import Event, EventState, RiskLevel, Severity, encode
from schemas.settings.config import Config
from sinks.metrics_exporter import MetricsSink, OpenEvents
from sinks.topic_reading import RecentKeys


def event(event_id: str, state: EventState, updated_at: float = 100.0) -> Event:
    return Event(event_id=event_id, type="stopped_vehicle", state=state, severity=Severity.WARNING,
                 camera_id="sink-test", started_at=90, updated_at=updated_at, confidence=0.9, reason="test")


def test_open_events_count_each_incident_once_and_expire():
    open_events = OpenEvents(max_open_seconds=60)
    for state in (EventState.OPENED, EventState.OPENED, EventState.UPDATED):  # a redelivered open, an update
        open_events.apply(event("a", state))
    open_events.apply(event("b", EventState.OPENED))
    assert open_events.counts(now=110) == {("sink-test", "stopped_vehicle", "warning"): 2}
    open_events.apply(event("a", EventState.RESOLVED))
    assert open_events.counts(now=110) == {("sink-test", "stopped_vehicle", "warning"): 1}
    assert open_events.counts(now=1000) == {}, "an incident never resolved expires"


def test_an_incident_raised_to_critical_is_counted_once_at_its_new_severity():
    open_events = OpenEvents(max_open_seconds=60)
    open_events.apply(event("a", EventState.OPENED))
    open_events.apply(event("a", EventState.UPDATED).model_copy(update={"severity": Severity.CRITICAL}))
    assert open_events.counts(now=110) == {("sink-test", "stopped_vehicle", "critical"): 1}


def test_a_copy_of_an_earlier_message_that_comes_after_the_resolve_does_not_open_the_incident_again():
    open_events = OpenEvents(max_open_seconds=60)
    open_events.apply(event("a", EventState.OPENED, updated_at=100))
    open_events.apply(event("a", EventState.RESOLVED, updated_at=105))
    open_events.apply(event("a", EventState.OPENED, updated_at=100))  # sent again, arriving late
    assert open_events.counts(now=110) == {}



def test_an_incident_stamped_ahead_of_the_clock_expires_when_its_resolve_is_lost():
    open_events = OpenEvents(max_open_seconds=60)
    open_events.apply(event("ahead", EventState.OPENED, updated_at=4_102_444_800.0))  # the year 2100: a clock far ahead
    assert open_events.counts(now=time.time()) == {("sink-test", "stopped_vehicle", "warning"): 1}
    assert open_events.counts(now=time.time() + 61) == {}, "a lost resolve must not pin the gauge"

SQUARE = [[0, 0], [100, 0], [100, 100], [0, 100]]
CONFIG = Config(cameras=[
    {"id": "sink-test", "source": "a.mp4", "zones": [{"id": "plaza", "polygon": SQUARE, "area_m2": 100}],
     "scene": {"lanes": [{"id": "lane1", "polygon": SQUARE, "direction": [0, 1]}],
               "counting_lines": [{"id": "north", "start": [0, 50], "end": [100, 50], "lane": "lane1"}]}},
    {"id": "cam", "source": "b.mp4", "name": "Main St", "lat": 52.5, "lon": 13.4},
])


def sink_of_every_camera() -> MetricsSink:
    """A sink given every camera's partitions (handlers only: no Kafka needed)."""
    sink = MetricsSink(CONFIG, consumer=None, group_readers={})
    sink.take_zones(sink.labels.zones, time.time())
    sink.take_cameras(sink.labels.cameras)
    sink.take_events(set(), sink.labels.cameras)
    return sink


@pytest.fixture
def sink() -> MetricsSink:
    return sink_of_every_camera()


def test_event_metrics_follow_incidents(sink):
    labels = {"camera": "sink-test", "type": "stopped_vehicle", "severity": "warning"}
    before = REGISTRY.get_sample_value("cityguard_events_total", labels) or 0
    for state in (EventState.OPENED, EventState.OPENED, EventState.UPDATED):
        sink.on_event(event("x", state, updated_at=10**10))
    assert REGISTRY.get_sample_value("cityguard_events_total", labels) == before + 1
    assert REGISTRY.get_sample_value("cityguard_events_open", labels) == 1
    sink.on_event(event("x", EventState.RESOLVED, updated_at=10**10))
    assert REGISTRY.get_sample_value("cityguard_events_open", labels) == 0


def test_an_incident_is_counted_once_by_its_opening_even_after_a_rewound_batch(sink):
    labels = {"camera": "sink-test", "type": "stopped_vehicle", "severity": "warning"}
    before = REGISTRY.get_sample_value("cityguard_events_total", labels) or 0
    for state in (EventState.OPENED, EventState.RESOLVED, EventState.OPENED, EventState.RESOLVED):  # rewound
        sink.on_event(event("rewound", state, updated_at=10**10))
    sink.on_event(event("seen-late", EventState.UPDATED, updated_at=10**10))  # its opening was before the sink
    assert REGISTRY.get_sample_value("cityguard_events_total", labels) == before + 1


def test_line_counts_add_up_once_per_window(sink):
    from schemas import LineCounts

    counts = LineCounts(camera_id="sink-test", line_id="north", lane_id="lane1", window_start=0, window_end=60,
                        class_name=["car", "truck"], direction=["in", "in"], count=[3, 1])
    labels = {"camera": "sink-test", "line": "north", "class_name": "car", "direction": "in"}
    before = REGISTRY.get_sample_value("cityguard_line_crossings_total", labels) or 0
    sink.on_line_counts(counts)
    sink.on_line_counts(counts)  # redelivered
    assert REGISTRY.get_sample_value("cityguard_line_crossings_total", labels) == before + 3
    lane = {"camera": "sink-test", "lane": "lane1", "class_name": "truck", "direction": "in"}
    assert REGISTRY.get_sample_value("cityguard_lane_crossings_total", lane) >= 1


def test_crossings_of_a_line_lane_or_direction_the_site_does_not_have_are_pooled(sink):
    """Each forged line, lane or direction would otherwise be a series of its own, and together their product."""
    from prometheus_client import generate_latest

    from schemas import LineCounts

    pooled = {"camera": "other", "line": "other", "class_name": "car", "direction": "other"}
    before = REGISTRY.get_sample_value("cityguard_line_crossings_total", pooled) or 0

    def series() -> int:
        lines = generate_latest(REGISTRY).splitlines()
        return sum(line.startswith(b"cityguard_line_crossings_total{") for line in lines)

    before_series = series()
    for index in range(16):
        forged = ((f"forged-{index}", "lane1", "in"), ("north", f"lane-{index}", "in"),
                  ("north", "lane1", f"to-{index}"), ("north", None, "in"))
        for window, (line_id, lane_id, direction) in enumerate(forged, start=4 * index):
            sink.on_line_counts(LineCounts(camera_id="sink-test", line_id=line_id, lane_id=lane_id, window_start=window,
                                           window_end=window + 1, class_name=["car"], direction=[direction],
                                           count=[1]))
    assert REGISTRY.get_sample_value("cityguard_line_crossings_total", pooled) == before + 64
    assert series() <= before_series + 1  # the pooled series


def test_recent_keys_are_bounded():
    keys = RecentKeys(capacity=2)
    assert keys.first_time((1,)) and keys.first_time((2,)) and not keys.first_time((1,))
    keys.first_time((3,))
    assert keys.first_time((1,)), "the oldest key was evicted"


def zone_window(window_end: float):
    from schemas import ZoneMetrics

    return ZoneMetrics(camera_id="sink-test", zone_id="plaza", window_start=window_end - 10, window_end=window_end,
                       frames=10, area_m2=100, people_mean=250, people_max=260, density_mean_per_m2=2.5,
                       density_max_per_m2=2.6, risk_level=RiskLevel.CAUTION, risk_reason="test", last_seq=1,
                       inflow=4, outflow=1)


def test_a_zone_whose_windows_stop_turns_unknown_and_loses_its_forecast(sink):
    from schemas import DensityForecast

    labels = {"camera": "sink-test", "zone": "plaza"}
    forecast = [DensityForecast(horizon_s=300, density_per_m2=4.0, lower_per_m2=3.0, upper_per_m2=5.0)]
    sink.on_zone_metrics(zone_window(1000.0).model_copy(update={"forecast": forecast, "rise_over_s": 300.0,
                                                                "seconds_to_threshold": {"danger": 420.0}}))
    assert REGISTRY.get_sample_value("cityguard_zone_risk_level", labels) == 1
    sink.mark_stale_zones(now=1000.0 + sink.stale_after_s / 2)
    assert REGISTRY.get_sample_value("cityguard_zone_risk_level", labels) == 1
    assert REGISTRY.get_sample_value("cityguard_zone_forecast_time_to_danger_seconds", labels) == 420.0
    assert REGISTRY.get_sample_value("cityguard_zone_forecast_rise_over_seconds", labels) == 300.0
    sink.mark_stale_zones(now=1000.0 + sink.stale_after_s + 1)
    assert REGISTRY.get_sample_value("cityguard_zone_risk_level", labels) == -1, "a silent zone is unknown, not calm"
    # Its forecast alert must not go on firing with a frozen time to danger.
    assert REGISTRY.get_sample_value("cityguard_zone_forecast_time_to_danger_seconds", labels) is None
    assert REGISTRY.get_sample_value("cityguard_zone_forecast_rise_over_seconds", labels) is None
    assert REGISTRY.get_sample_value("cityguard_zone_forecast_density_per_square_metre",
                                     {**labels, "horizon_seconds": "300"}) is None


def test_a_zone_whose_windows_never_come_after_a_restart_turns_unknown():
    before = time.time()
    sink = sink_of_every_camera()
    labels = {"camera": "sink-test", "zone": "plaza"}
    assert before <= REGISTRY.get_sample_value("cityguard_zone_window_end_timestamp_seconds", labels) <= time.time()
    sink.mark_stale_zones(now=time.time() + sink.stale_after_s + 1)
    assert REGISTRY.get_sample_value("cityguard_zone_risk_level", labels) == -1


def test_forecast_series_of_a_window_without_a_forecast_are_removed(sink):
    from schemas import DensityForecast

    labels = {"camera": "sink-test", "zone": "plaza", "horizon_seconds": "300"}
    forecast = [DensityForecast(horizon_s=300, density_per_m2=4.0, lower_per_m2=3.0, upper_per_m2=5.0)]
    sink.on_zone_metrics(zone_window(4000.0).model_copy(update={"forecast": forecast}))
    assert REGISTRY.get_sample_value("cityguard_zone_forecast_density_per_square_metre", labels) == 4.0
    sink.on_zone_metrics(zone_window(4010.0))  # the count is not reliable: no forecast
    assert REGISTRY.get_sample_value("cityguard_zone_forecast_density_per_square_metre", labels) is None
    assert REGISTRY.get_sample_value("cityguard_zone_forecast_upper_density_per_square_metre", labels) is None


def test_zone_crossings_count_once_per_window(sink):
    labels = {"camera": "sink-test", "zone": "plaza", "direction": "in"}
    before = REGISTRY.get_sample_value("cityguard_zone_crossings_total", labels) or 0
    sink.on_zone_metrics(zone_window(2000.0))
    sink.on_zone_metrics(zone_window(2000.0))  # redelivered
    assert REGISTRY.get_sample_value("cityguard_zone_crossings_total", labels) == before + 4


def test_redelivered_detections_count_once(sink):
    from tests.test_schemas import detections

    labels = {"camera": "cam"}
    before = REGISTRY.get_sample_value("cityguard_frames_detected_total", labels) or 0
    for _ in range(2):
        sink.on_detections(detections(seq=424242))
    assert REGISTRY.get_sample_value("cityguard_frames_detected_total", labels) == before + 1


def test_a_flood_of_forged_label_values_adds_no_series(sink):
    """20,000 forged camera ids (and zones, lines, classes, event types, stages) on every topic the sink reads."""
    from prometheus_client import generate_latest

    from schemas import DeadLetter, LineCounts
    from tests.test_schemas import detections

    def flood(first: int, count: int) -> None:
        for index in range(first, first + count):
            forged = f"forged-{index}"
            sink.on_detections(detections(camera_id=forged, seq=index, class_name=[forged, "car"]))
            sink.on_zone_metrics(zone_window(3000.0).model_copy(update={"camera_id": forged, "zone_id": forged}))
            sink.on_zone_metrics(zone_window(3000.0).model_copy(update={"zone_id": forged}))  # a known camera
            sink.on_event(event(forged, EventState.OPENED).model_copy(update={"camera_id": forged, "type": forged}))
            sink.on_line_counts(LineCounts(camera_id="cam", line_id=forged, window_start=0, window_end=1,
                                           class_name=[forged], direction=[forged], count=[1]))
            sink.handle(sink.topics.dead_letter, encode(DeadLetter(
                stage=forged, source_topic=forged, partition=0, offset=index, key=None, reason="x", original=None,
                at=1.0)))

    before = generate_latest(REGISTRY)
    flood(0, 20_000)
    after = generate_latest(REGISTRY)
    flood(20_000, 1_000)
    assert len(generate_latest(REGISTRY).splitlines()) == len(after.splitlines()), "series stopped growing"
    assert len(after) - len(before) < 200_000  # unbounded, 20,000 ids made /metrics 31.6 MB
    assert REGISTRY.get_sample_value("cityguard_frames_detected_total", {"camera": "other"}) >= 20_000
    assert REGISTRY.get_sample_value("cityguard_zone_crossings_total",
                                     {"camera": "other", "zone": "other", "direction": "in"}) >= 4 * 20_000
    assert REGISTRY.get_sample_value("cityguard_dead_letters_total", {"stage": "other", "topic": "other"}) >= 20_000
    counted = REGISTRY.get_sample_value("cityguard_dead_letters_total", {"stage": "other", "topic": "other"})
    flood(20_000, 1_000)  # the same records dead-lettered again (a rewound batch): not counted twice
    assert REGISTRY.get_sample_value("cityguard_dead_letters_total", {"stage": "other", "topic": "other"}) == counted


def test_each_watched_group_s_lag_is_on_the_topic_it_consumes():
    class Sink:
        def assignment(self):
            return {TopicPartition("detections-t", 0), TopicPartition("events-t", 0)}

        def highwater(self, partition):
            return {"detections-t": 100, "events-t": 40}[partition.topic]

    class Group:
        def committed(self, partition, timeout_ms=None):
            return 30

    sink = MetricsSink(CONFIG, consumer=Sink(), group_readers={})
    assert sink.group_lag("s-alerts", "events-t", Group()) == {("s-alerts", "events-t", "0"): 10}


def test_a_window_dated_ahead_of_the_clock_does_not_keep_its_zone_from_going_stale(sink):
    labels = {"camera": "sink-test", "zone": "plaza"}
    sink.on_zone_metrics(zone_window(4_102_444_800.0))  # the year 2100: a camera whose clock runs far ahead
    assert REGISTRY.get_sample_value("cityguard_zone_window_end_timestamp_seconds", labels) <= time.time()
    sink.mark_stale_zones(now=time.time() + sink.stale_after_s + 1)
    assert REGISTRY.get_sample_value("cityguard_zone_risk_level", labels) == -1


def test_an_unreliable_windows_people_and_density_are_not_known_rather_than_calm(sink):
    labels = {"camera": "sink-test", "zone": "plaza"}
    packed_but_unseen = zone_window(2000.0).model_copy(update={
        "people_mean": 6, "people_max": 7, "density_mean_per_m2": 0.06, "density_max_per_m2": 0.07,
        "detector_people_mean": 6.0, "count_reliable": False, "risk_level": RiskLevel.UNKNOWN})
    sink.on_zone_metrics(packed_but_unseen)
    for name in ("cityguard_zone_density_per_square_metre", "cityguard_zone_people"):
        assert math.isnan(REGISTRY.get_sample_value(name, labels)), name
    assert REGISTRY.get_sample_value("cityguard_zone_detector_people", labels) == 6.0
    sink.on_zone_metrics(zone_window(2010.0))
    assert REGISTRY.get_sample_value("cityguard_zone_density_per_square_metre", labels) == 2.5


def test_a_pass_failing_with_an_error_other_than_kafkas_is_retried_and_the_sink_goes_on(caplog):
    stop = threading.Event()
    labels = {"camera": "sink-test", "type": "stopped_vehicle", "severity": "warning"}
    before = REGISTRY.get_sample_value("cityguard_events_total", labels) or 0

    class Consumer:
        """Fails its first poll with an error of its own, not a KafkaError; the next one brings an incident."""

        polls = 0

        def poll(self, timeout_ms):
            self.polls += 1
            if self.polls == 1:
                raise RuntimeError("the client broke")
            stop.set()
            record = SimpleNamespace(topic=CONFIG.broker.topics.events, partition=0,
                                     value=encode(event("after-failure", EventState.OPENED, updated_at=10**10)))
            return {TopicPartition(CONFIG.broker.topics.events, 0): [record]}

        def assignment(self):
            return set()

        def bootstrap_connected(self):
            return True

    MetricsSink(CONFIG, consumer=Consumer(), group_readers={}).run(stop)
    assert REGISTRY.get_sample_value("cityguard_events_total", labels) == before + 1
    assert "RuntimeError: the client broke" in caplog.text


def test_the_sink_exports_its_own_lag_and_drops_a_partition_a_rebalance_took():
    # A sink behind serves old figures, and its zones go stale while their windows wait: CityguardConsumerLagGrowing
    # names it by its own group.
    detections = TopicPartition(CONFIG.broker.topics.detections, 0)
    events = TopicPartition(CONFIG.broker.topics.events, 1)

    class Consumer:
        def __init__(self, assigned):
            self.assigned = assigned

        def poll(self, timeout_ms):
            stop.set()
            return {}

        def assignment(self):
            return self.assigned

        def highwater(self, partition):
            return 100

        def position(self, partition, timeout_ms=None):
            return 70

        def partitions_for_topic(self, topic):
            return {0, 1}

        def bootstrap_connected(self):
            return True

    class Group:
        def committed(self, partition, timeout_ms=None):
            return 60

    def lag(partition: TopicPartition, group: str = CONFIG.group_id("metrics-sink")) -> float | None:
        return REGISTRY.get_sample_value("cityguard_consumer_lag_messages", {
            "group": group, "topic": partition.topic, "partition": str(partition.partition)})

    stop = threading.Event()
    alerts = CONFIG.group_id("alerts")
    sink = MetricsSink(CONFIG, consumer=Consumer({detections, events}), group_readers={alerts: (events.topic, Group())})
    sink.run(stop)
    assert (lag(detections), lag(events), lag(events, alerts)) == (30, 30, 40)
    stop.clear()
    sink.consumer = Consumer({detections})  # the other partition went to another sink: it reports it now
    sink.run(stop)
    assert (lag(detections), lag(events), lag(events, alerts)) == (30, None, None)


def test_the_partition_of_a_key_is_where_the_analytics_stage_s_producer_puts_it():
    from aiokafka.partitioner import DefaultPartitioner  # under faust, which sets no partitioner of its own

    from infra.kafka import key_partition

    for count in (1, 3, 8, 32):
        for key in (b"cam", b"sink-test", b"junction-042", b"x" * 37):
            assert key_partition(key, count) == DefaultPartitioner()(key, list(range(count)), []), (key, count)


def test_zones_and_cameras_another_sink_took_leave_this_sink_s_metrics():
    """Sinks of one group share the partitions: a zone moved to another sink is neither reported unknown here (its
    windows stop coming here) nor left frozen beside the figures its new owner exports; the same for a camera."""
    from schemas import DensityForecast
    from tests.test_schemas import detections

    sink = sink_of_every_camera()
    zone, camera = {"camera": "sink-test", "zone": "plaza"}, {"camera": "cam"}
    info = {"camera": "cam", "name": "Main St", "lat": "52.500000", "lon": "13.400000"}
    forecast = [DensityForecast(horizon_s=300, density_per_m2=4.0, lower_per_m2=3.0, upper_per_m2=5.0)]
    now = time.time()
    sink.on_zone_metrics(zone_window(now).model_copy(update={"forecast": forecast, "mean_speed_m_per_s": 1.2,
                                                             "seconds_to_threshold": {"danger": 420.0}}))
    sink.on_detections(detections(seq=515151, captured_at=now))
    zone_series = ["cityguard_zone_risk_level", "cityguard_zone_people", "cityguard_zone_density_per_square_metre",
                   "cityguard_zone_window_end_timestamp_seconds", "cityguard_zone_area_square_metres",
                   "cityguard_zone_count_reliable", "cityguard_zone_mean_speed_metres_per_second",
                   "cityguard_zone_forecast_time_to_danger_seconds"]
    assert all(REGISTRY.get_sample_value(name, zone) is not None for name in zone_series)
    assert REGISTRY.get_sample_value("cityguard_camera_people", camera) == 1
    assert REGISTRY.get_sample_value("cityguard_camera_info", info) == 1

    sink.take_zones(set(), now)  # a rebalance gave the camera's partitions to another sink
    sink.take_cameras(set())
    sink.mark_stale_zones(now + sink.stale_after_s + 1)
    assert {name: REGISTRY.get_sample_value(name, zone) for name in zone_series} == dict.fromkeys(zone_series)
    assert REGISTRY.get_sample_value("cityguard_zone_forecast_density_per_square_metre",
                                     {**zone, "horizon_seconds": "300"}) is None
    assert REGISTRY.get_sample_value("cityguard_camera_people", camera) is None
    assert REGISTRY.get_sample_value("cityguard_camera_info", info) is None
    sink.on_zone_metrics(zone_window(now + 10))  # one under another key than its camera's, on a partition read here
    sink.on_detections(detections(seq=515152, captured_at=now))
    assert REGISTRY.get_sample_value("cityguard_zone_risk_level", zone) is None
    assert REGISTRY.get_sample_value("cityguard_camera_people", camera) is None

    sink.take_zones(sink.labels.zones, now + 20)  # and back: it counts from then until its first window here
    sink.take_cameras(sink.labels.cameras)
    assert REGISTRY.get_sample_value("cityguard_zone_window_end_timestamp_seconds", zone) == now + 20
    assert REGISTRY.get_sample_value("cityguard_camera_info", info) == 1
    sink.mark_stale_zones(now + 20 + sink.stale_after_s + 1)
    assert REGISTRY.get_sample_value("cityguard_zone_risk_level", zone) == -1


def test_incidents_of_a_partition_another_sink_took_leave_this_sink_s_open_gauge():
    """Left open here, an incident whose resolve the other sink reads would keep its alert firing for a day."""
    sink = sink_of_every_camera()
    labels = {"camera": "sink-test", "type": "stopped_vehicle", "severity": "warning"}
    sink.take_events({0, 1}, sink.labels.cameras)
    sink.on_event(event("moves", EventState.OPENED, updated_at=10**10), partition=1)
    assert REGISTRY.get_sample_value("cityguard_events_open", labels) == 1
    sink.take_events({0}, set())  # the camera's incidents are on partition 1: another sink reads them now
    assert REGISTRY.get_sample_value("cityguard_events_open", labels) is None
    open_events = OpenEvents()
    open_events.apply(event("kept", EventState.OPENED, updated_at=10**10), partition=0)
    open_events.apply(event("gone", EventState.OPENED, updated_at=10**10), partition=1)
    open_events.keep_partitions({0})
    assert open_events.counts(time.time()) == {("sink-test", "stopped_vehicle", "warning"): 1}


class AssignedConsumer:
    """What follow_assignment reads of a consumer: its assignment and how many partitions each topic has."""

    def __init__(self, assigned: set[TopicPartition], partitions: int | None = 1):
        self.assigned, self.partitions = assigned, partitions

    def assignment(self):
        return self.assigned

    def partitions_for_topic(self, topic):
        return set(range(self.partitions)) if self.partitions else set()  # set(): the topic is not known yet


def every_partition(partitions: int = 1) -> set[TopicPartition]:
    topics = CONFIG.broker.topics
    return {TopicPartition(topic, number) for topic in (topics.zone_metrics, topics.detections, topics.events)
            for number in range(partitions)}


def test_a_sink_the_group_dropped_keeps_its_zones_while_it_joins_again_and_gives_them_up_after():
    # A broker outage longer than the session drops the sink from its group, which empties its assignment until it has
    # joined again: meanwhile a zone whose windows stopped must still go stale here, not vanish and start its clock.
    zone = {"camera": "sink-test", "zone": "plaza"}
    ticks = [0.0]  # the sink's monotonic clock
    sink = MetricsSink(CONFIG, consumer=AssignedConsumer(every_partition()), group_readers={},
                       clock=lambda: ticks[0])
    now = time.time()
    sink.follow_assignment(now)
    sink.on_zone_metrics(zone_window(now - 500))  # its last window
    sink.consumer.assigned = set()
    ticks[0] = 10.0
    sink.follow_assignment(now - 3600)  # the wall clock set back meanwhile: the grace is not measured by it
    sink.mark_stale_zones(now + 10)
    assert REGISTRY.get_sample_value("cityguard_zone_risk_level", zone) == -1
    assert REGISTRY.get_sample_value("cityguard_zone_window_end_timestamp_seconds", zone) == now - 500
    sink.consumer.assigned = every_partition()  # joined again with the same partitions: nothing to take
    ticks[0] = 20.0
    sink.follow_assignment(now + 20)
    assert REGISTRY.get_sample_value("cityguard_zone_window_end_timestamp_seconds", zone) == now - 500
    sink.consumer.assigned = set()  # left without partitions for longer: a sink of several, the rest took them
    ticks[0] = 30.0
    sink.follow_assignment(now - 3600)
    ticks[0] = 30.0 + sink.stale_after_s
    sink.follow_assignment(now - 3600)
    assert REGISTRY.get_sample_value("cityguard_zone_risk_level", zone) is None


def test_an_assignment_of_a_topic_whose_partitions_are_not_known_yet_is_taken_later_and_loses_no_record():
    zone = {"camera": "sink-test", "zone": "plaza"}
    labels = {"camera": "sink-test", "type": "stopped_vehicle", "severity": "warning"}
    before = REGISTRY.get_sample_value("cityguard_events_total", labels) or 0
    stop = threading.Event()

    class Consumer(AssignedConsumer):
        def poll(self, timeout_ms):
            stop.set()
            record = SimpleNamespace(topic=CONFIG.broker.topics.events, partition=0,
                                     value=encode(event("while-unknown", EventState.OPENED, updated_at=10**10)))
            return {TopicPartition(CONFIG.broker.topics.events, 0): [record]}

        def bootstrap_connected(self):
            return True

        def highwater(self, partition):
            return None

    sink = MetricsSink(CONFIG, consumer=Consumer(every_partition(), partitions=None), group_readers={})
    sink.run(stop)
    assert REGISTRY.get_sample_value("cityguard_events_total", labels) == before + 1  # handled all the same
    assert REGISTRY.get_sample_value("cityguard_zone_window_end_timestamp_seconds", zone) is None
    sink.consumer.partitions = 1
    sink.follow_assignment(time.time())
    assert REGISTRY.get_sample_value("cityguard_zone_window_end_timestamp_seconds", zone) is not None


def test_open_incidents_not_read_back_in_time_are_said_and_the_reader_lets_go_of_the_topic(caplog):
    taken = TopicPartition(CONFIG.broker.topics.events, 0)

    class Consumer(AssignedConsumer):
        def position(self, partition, timeout_ms=None):
            assert timeout_ms is not None and timeout_ms <= 30_000
            return None  # as kafka-python answers a position not known when the time is up

    class Reader:
        assigned: list | None = None

        def assign(self, partitions):
            self.assigned = list(partitions)

    reader = Reader()
    sink = MetricsSink(CONFIG, consumer=Consumer({taken}), group_readers={}, recovery=reader)
    with caplog.at_level(logging.WARNING, logger="sinks.metrics_exporter"):
        sink.follow_assignment(time.time())
    assert "open incidents recovered only in part (events partitions 0 not read back" in caplog.text
    assert reader.assigned == []


def test_objects_are_counted_per_camera_and_class_once_per_frame(sink):
    from tests.test_schemas import detections

    def counted(class_name: str) -> float:
        return REGISTRY.get_sample_value("cityguard_detected_objects_total",
                                         {"camera": "cam", "class_name": class_name}) or 0

    before = counted("person"), counted("car")
    frame = detections(seq=626262, xyxy=[(10, 20, 30, 60)] * 4, confidence=[0.9] * 4, class_id=[0, 0, 2, 0],
                       class_name=["person", "person", "car", "person"], track_id=[1, 2, 3, 4])
    sink.on_detections(frame)
    sink.on_detections(frame)  # detected twice after an inference redelivery: counted once
    assert (counted("person"), counted("car")) == (before[0] + 3, before[1] + 1)

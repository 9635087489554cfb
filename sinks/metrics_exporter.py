"""Metrics sink: detections, zone metrics, line counts, events and dead letters from their topics -> Prometheus gauges
and counters.

Labels never carry a track id, so series stay bounded as the system runs; and since label values come from message
content, only configured cameras and zones, known stages and topics, and the
first few values of every other label become series: the rest count under `other` (LabelBounds).
Each stage process also serves its own operational metrics (frames produced, inference latency, lag); this sink
serves what is derived from the data topics, plus the analytics and alerts groups' lag on the topics they consume.

Sinks of one consumer group share the partitions: each exports what it judges from a camera's absence (a stale zone,
the incidents open, the camera's position) only for the cameras whose partitions it reads, and drops their series when
a rebalance moves those partitions to another sink, which exports them from then on. Counters stay: their sum over the
sinks is the site's.
"""
from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from prometheus_client import Counter, Gauge, Histogram

from infra.broker import BrokerMemoryWatch
from infra.kafka import (
    BROKER_CONNECTED,
    export_lag,
    export_partition_lag,
    key_partition,
    loop_went_round,
    reset_positions_past_the_end,
)
from schemas import (
    PERSON_CLASS_ID,
    DeadLetter,
    Detections,
    Event,
    EventState,
    LineCounts,
    RiskLevel,
    SchemaError,
    ZoneMetrics,
    decode,
)
from schemas.settings.config import Config
from sinks.topic_reading import OTHER, LabelBounds, RecentKeys, retry_delay_s, zone_stale_after_s

log = logging.getLogger(__name__)

LAG_LOOKUP_MS = 2_000  # the longest wait for a group's committed offset (asked every 5 s for the lag gauge)

DETECTED_OBJECTS = Counter("cityguard_detected_objects_total", "Objects detected", ["camera", "class_name"])
FRAMES_DETECTED = Counter("cityguard_frames_detected_total", "Detections messages seen", ["camera"])
CAMERA_PEOPLE = Gauge("cityguard_camera_people", "People detected in the camera's latest frame", ["camera"])
DETECTION_LATENCY = Histogram(
    "cityguard_capture_to_detection_seconds", "Time from frame capture to its detections reaching the sink",
    ["camera"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
ZONE_PEOPLE = Gauge("cityguard_zone_people", "Mean people in the zone over the last window (NaN: count unreliable)",
                    ["camera", "zone"])
ZONE_PEOPLE_MAX = Gauge("cityguard_zone_people_max", "Most people in the zone in one frame of the last window (NaN: "
                        "count unreliable)",
                        ["camera", "zone"])
ZONE_DENSITY = Gauge("cityguard_zone_density_per_square_metre", "Mean people per m² over the last window (NaN: "
                     "count unreliable)",
                     ["camera", "zone"])
ZONE_DENSITY_MAX = Gauge("cityguard_zone_peak_density_per_square_metre", "Highest people per m² in the last window "
                         "(NaN: count unreliable)",
                         ["camera", "zone"])
ZONE_AREA = Gauge("cityguard_zone_area_square_metres", "Ground area of the zone", ["camera", "zone"])
ZONE_RISK = Gauge("cityguard_zone_risk_level",
                  "Risk level: -1 unknown, 0 normal, 1 caution, 2 warning, 3 danger, 4 critical", ["camera", "zone"])
ZONE_WINDOW_END = Gauge("cityguard_zone_window_end_timestamp_seconds", "End of the last window reported",
                        ["camera", "zone"])
ZONE_STALE_AFTER = Gauge("cityguard_zone_stale_after_seconds",
                         "A zone without a window for this long is reported unknown (risk level -1)")
ZONE_CONFIGURED = Gauge("cityguard_zone_configured", "1 for each crowd zone the site configures, from every metrics "
                        "sink: each zone's figures come from the one sink reading its camera's partition",
                        ["camera", "zone"])
EVENTS = Counter("cityguard_events_total", "Incidents opened", ["camera", "type", "severity"])
EVENTS_OPEN = Gauge("cityguard_events_open", "Incidents open now", ["camera", "type", "severity"])
LINE_CROSSINGS = Counter("cityguard_line_crossings_total", "Objects that crossed a counting line",
                         ["camera", "line", "class_name", "direction"])
LANE_CROSSINGS = Counter("cityguard_lane_crossings_total", "Counting-line crossings added up per lane",
                         ["camera", "lane", "class_name", "direction"])
CAMERA_INFO = Gauge("cityguard_camera_info", "Configured cameras with their map position (value always 1)",
                    ["camera", "name", "lat", "lon"])
ZONE_PEAK_LOCAL_DENSITY = Gauge("cityguard_zone_peak_local_density_per_square_metre",
                                "Highest Gaussian-weighted local density around any person (Helbing et al.)",
                                ["camera", "zone"])
ZONE_FORECAST = Gauge("cityguard_zone_forecast_density_per_square_metre",
                      "Forecast density, at the rise the last minutes bear out (at the least: flat, never "
                      "falling, for a zone emptying)", ["camera", "zone", "horizon_seconds"])
ZONE_FORECAST_UPPER = Gauge("cityguard_zone_forecast_upper_density_per_square_metre",
                            "Upper edge of the forecast's uncertainty band", ["camera", "zone", "horizon_seconds"])
ZONE_SECONDS_TO_DANGER = Gauge("cityguard_zone_forecast_time_to_danger_seconds",
                               "Seconds until the density reaches the danger threshold at the rise the last minutes "
                               "bear out (absent: not expected)",
                               ["camera", "zone"])
ZONE_RISE_OVER = Gauge("cityguard_zone_forecast_rise_over_seconds",
                       "How far back the windows reach that bear out the forecast's rise", ["camera", "zone"])
ZONE_CROSSINGS = Counter("cityguard_zone_crossings_total", "People crossing the zone's entrance lines",
                         ["camera", "zone", "direction"])
ZONE_SPEED = Gauge("cityguard_zone_mean_speed_metres_per_second", "Mean walking speed in the zone", ["camera", "zone"])
ZONE_PRESSURE = Gauge("cityguard_zone_crowd_pressure_per_square_second",
                      "Crowd pressure: local density x velocity variance", ["camera", "zone"])
ZONE_DETECTOR_PEOPLE = Gauge("cityguard_zone_detector_people", "People per frame counted by the box detector",
                             ["camera", "zone"])
ZONE_MODEL_PEOPLE = Gauge("cityguard_zone_density_model_people", "People per frame from the density-map model",
                          ["camera", "zone"])
ZONE_COUNT_RELIABLE = Gauge("cityguard_zone_count_reliable", "1 when the zone's count is trusted", ["camera", "zone"])
# A zone's gauges, removed together when another sink takes the zone (its forecasts, labelled by horizon too, apart).
ZONE_GAUGES = (ZONE_PEOPLE, ZONE_PEOPLE_MAX, ZONE_DENSITY, ZONE_DENSITY_MAX, ZONE_AREA, ZONE_RISK, ZONE_WINDOW_END,
               ZONE_PEAK_LOCAL_DENSITY, ZONE_SECONDS_TO_DANGER, ZONE_RISE_OVER, ZONE_SPEED, ZONE_PRESSURE,
               ZONE_DETECTOR_PEOPLE, ZONE_MODEL_PEOPLE, ZONE_COUNT_RELIABLE)
DEAD_LETTERS = Counter("cityguard_dead_letters_total", "Messages sent to the dead-letter topic", ["stage", "topic"])
UNREADABLE = Counter("cityguard_metrics_sink_unreadable_total", "Messages this sink could not parse", ["topic"])


EXPIRY_SWEEP_S = 1.0  # how often open incidents are checked for expiry (their limit is a day)


class OpenEvents:
    """Incidents opened and not yet resolved, by event id; stale ones expire so a lost resolve cannot pin a gauge.

    Counted as they come and go: the gauges are set after every event, and rebuilding the counts from every open
    incident each time made a flood of them (10,000 forged openings) cost seconds of work per thousand."""

    def __init__(self, max_open_seconds: float = 24 * 3600):
        self.max_open_seconds = max_open_seconds
        self._open: dict[str, tuple[tuple[str, str, str], float, int | None]] = {}  # labels, since, partition
        self._resolved: dict[str, float] = {}  # event id -> when it was resolved, for as long as one may stay open
        self._counts: dict[tuple[str, str, str], int] = {}
        self._next_expiry = -math.inf

    def apply(self, event: Event, partition: int | None = None) -> None:
        """An incident is open from any message about it until the one that resolves it; a copy of an earlier message
        that comes after that one (sent again) does not open it again. `partition`: the events topic's partition the
        message came from, for `keep_partitions`."""
        labels = (event.camera_id, event.type, event.severity.value)
        if event.state is EventState.RESOLVED:
            self._close(event.event_id)
            self._resolved[event.event_id] = event.updated_at
        elif event.updated_at > self._resolved.get(event.event_id, -math.inf):
            self._close(event.event_id)
            # One stamped ahead of this clock (a camera's clock, a forged message) expires counting from its arrival:
            # its own time would keep a lost resolve pinning the gauge for as long as that clock is ahead.
            self._open[event.event_id] = (labels, min(event.updated_at, time.time()), partition)
            self._counts[labels] = self._counts.get(labels, 0) + 1

    def counts(self, now: float) -> dict[tuple[str, str, str], int]:
        if now >= self._next_expiry:  # a sweep over every incident, at most once a second
            self._next_expiry = now + EXPIRY_SWEEP_S
            for event_id in [key for key, (_, at, _) in self._open.items() if now - at > self.max_open_seconds]:
                self._close(event_id)
            # Either way: a resolve stamped far ahead (a camera's clock, a forged message) must not be kept for ever.
            self._resolved = {key: at for key, at in self._resolved.items() if abs(now - at) <= self.max_open_seconds}
        return dict(self._counts)

    def keep_partitions(self, partitions: set[int]) -> None:
        """Forgets the incidents read from partitions other than these: another sink reads them now, and counts them."""
        for event_id in [key for key, (_, _, partition) in self._open.items()
                         if partition is not None and partition not in partitions]:
            self._close(event_id)

    def _close(self, event_id: str) -> None:
        opened = self._open.pop(event_id, None)
        if opened is not None:
            labels = opened[0]
            self._counts[labels] -= 1
            if not self._counts[labels]:
                del self._counts[labels]


def cameras_on(cameras: Iterable[str], partitions: int, assignment: set[TopicPartition], topic: str) -> set[str]:
    """The cameras whose messages on `topic` of `partitions` partitions (keyed by camera id) the assignment holds."""
    held = {tp.partition for tp in assignment if tp.topic == topic}
    return {camera for camera in cameras if held and key_partition(camera.encode(), partitions) in held}


class MetricsSink:
    def __init__(self, config: Config, consumer: KafkaConsumer,
                 group_readers: dict[str, tuple[str, KafkaConsumer]], recovery: KafkaConsumer | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.topics = config.broker.topics
        self.labels = LabelBounds(config)
        self.group = config.group_id("metrics-sink")
        self.broker_memory = BrokerMemoryWatch.from_env(config)  # only under `cityguard up` with the embedded broker
        self.consumer = consumer
        # Per watched group, the topic it consumes (one this sink reads too) and an idle consumer (never subscribed)
        # used only to read that group's committed offsets.
        self.group_readers = group_readers
        self.group_lag_labels: set[tuple[str, str, str]] = set()
        # A consumer of no group, to read back the incidents still open on an events partition this sink takes.
        self.recovery = recovery
        self.open_events = OpenEvents()
        self.counted_windows = RecentKeys()
        self.counted_frames = RecentKeys()
        self.counted_letters = RecentKeys()
        self.counted_openings = RecentKeys()
        self.forecast_horizons: dict[tuple[str, str], set[str]] = {}  # configured zones only
        self.stale_after_s = zone_stale_after_s(config.analytics.window_seconds)
        ZONE_STALE_AFTER.set(self.stale_after_s)  # the alert rules' measure of a late window
        for labels in self.labels.zones:  # against the zones exported: one that no sink takes is unwatched
            ZONE_CONFIGURED.labels(*labels).set(1)
        self.last_window_end: dict[tuple[str, str], float] = {}  # configured zones only
        # What the group gives this sink to read, and so the zones and cameras it exports (see follow_assignment).
        self.assignment: set[TopicPartition] = set()
        self.clock = clock  # not the wall clock, which may be set back: how long the sink has had no partitions
        self.unassigned_since: float | None = None  # when the group last left this sink without partitions
        self.zones_taken_at: dict[tuple[str, str], float] = {}
        self.cameras: set[str] = set()  # whose detections this sink reads
        self.event_cameras: set[str] = set()  # whose incidents this sink reads
        self.event_partitions: set[int] = set()
        # At 0 from the start, so the alert rule's increase() sees a stage's very first dead letter.
        for stage, topic in (("inference", self.topics.frames), ("analytics", self.topics.detections),
                             ("alerts", self.topics.events)):
            DEAD_LETTERS.labels(stage, topic)
        self._open_labels: set[tuple[str, str, str]] = set()
        self.lag_labels: set[tuple[str, str, str]] = set()  # this sink's own consumer lag series
        self.camera_info = {camera.id: (camera.id, camera.name or camera.id, f"{camera.lat:.6f}", f"{camera.lon:.6f}")
                            for camera in config.cameras if camera.lat is not None and camera.lon is not None}

    def follow_assignment(self, now: float) -> None:
        """Takes the zones, cameras and incidents of the partitions the group gives this sink now, and gives up the
        others': another sink of the group reads those, and exports them.

        A sink the group has dropped (a broker outage longer than its session) holds no partitions until it has joined
        again: for up to the zones' stale bound it keeps what it had, so a zone whose windows stopped meanwhile still
        goes stale here rather than vanishing and starting its clock again. Held longer, it is a sink left without
        partitions (more sinks than partitions), whose zones another sink exports."""
        assignment = set(self.consumer.assignment())
        if assignment == self.assignment:
            self.unassigned_since = None
            return
        if not assignment:
            if self.unassigned_since is None:
                self.unassigned_since = self.clock()
            if self.clock() - self.unassigned_since < self.stale_after_s:
                return
        # The partition counts of the topics assigned, known once their metadata is: a count of 0 is not yet.
        counts = {topic: len(self.consumer.partitions_for_topic(topic)) for topic in {tp.topic for tp in assignment}}
        if not all(counts.values()):
            return  # taken at a later pass

        def read(topic: str) -> set[str]:
            return cameras_on(self.labels.cameras, counts.get(topic, 0), assignment, topic)

        zoned = read(self.topics.zone_metrics)
        self.take_zones({labels for labels in self.labels.zones if labels[0] in zoned}, now)
        self.take_cameras(read(self.topics.detections))
        events = {tp.partition for tp in assignment if tp.topic == self.topics.events}
        self.take_events(events, read(self.topics.events))
        self.assignment, self.unassigned_since = assignment, None

    def take_zones(self, zones: set[tuple[str, str]], now: float) -> None:
        """Exports these zones from `now` and no others. Until its first window here, a zone counts from when this
        sink took it: one whose windows never come (analytics was down) still goes stale and unknown, and
        CityguardZoneStale fires for it."""
        for labels in set(self.zones_taken_at) - zones:
            del self.zones_taken_at[labels]
            self.last_window_end.pop(labels, None)
            self._remove_forecast(labels)
            for gauge in ZONE_GAUGES:
                gauge.remove(*labels)
        for labels in zones - set(self.zones_taken_at):
            self.zones_taken_at[labels] = now
            ZONE_WINDOW_END.labels(*labels).set(now)

    def take_cameras(self, cameras: set[str]) -> None:
        """Exports the people and map position of these cameras and no others."""
        for camera in self.cameras - cameras:
            CAMERA_PEOPLE.remove(camera)
            if camera in self.camera_info:
                CAMERA_INFO.remove(*self.camera_info[camera])
        for camera in cameras - self.cameras:
            if camera in self.camera_info:
                CAMERA_INFO.labels(*self.camera_info[camera]).set(1)
        self.cameras = cameras

    def take_events(self, partitions: set[int], cameras: set[str]) -> None:
        """Counts the incidents open on these partitions of the events topic (of these configured cameras) and no
        others; those open on a partition taken are read back from the topic, up to where this sink goes on."""
        taken = partitions - self.event_partitions
        self.open_events.keep_partitions(partitions)
        self.event_partitions, self.event_cameras = partitions, cameras
        if taken and self.recovery is not None:
            try:
                log.info("recovered %d events of incidents still open", self.recover_open_events(taken))
            except Exception as exc:  # the partitions are taken all the same: their new incidents count
                log.warning("open incidents not recovered (%s: %s): the gauges show those opened from now",
                            type(exc).__name__, exc)
        self.export_open_events()

    def handle(self, topic: str, value: bytes | None, partition: int | None = None) -> None:
        try:
            if topic == self.topics.detections:
                self.on_detections(decode(value, Detections))
            elif topic == self.topics.zone_metrics:
                self.on_zone_metrics(decode(value, ZoneMetrics))
            elif topic == self.topics.line_counts:
                self.on_line_counts(decode(value, LineCounts))
            elif topic == self.topics.events:
                self.on_event(decode(value, Event), partition)
            elif topic == self.topics.dead_letter:
                letter = decode(value, DeadLetter)
                # A rewound batch dead-letters the same record again: it counts once.
                if self.counted_letters.first_time((letter.stage, letter.source_topic, letter.partition,
                                                     letter.offset)):
                    DEAD_LETTERS.labels(self.labels.stage(letter.stage), self.labels.topic(letter.source_topic)).inc()
        except SchemaError as exc:
            # Counted, not dead-lettered: frames, detections and events are dead-lettered by the stage that reads
            # them as its input; zone metrics and line counts are read by no stage after this sink, so this count
            # (and CityguardUnreadableMessages) is where they show.
            UNREADABLE.labels(topic).inc()
            log.debug("unreadable message on %s: %s", topic, exc)
        except Exception as exc:  # one record that breaks a handler must not stop the sink for the others
            UNREADABLE.labels(topic).inc()
            log.warning("message on %s skipped: %s: %s", topic, type(exc).__name__, exc)

    def on_detections(self, detections: Detections) -> None:
        if not self.counted_frames.first_time((detections.camera_id, detections.seq)):
            return  # a frame detected twice after an inference redelivery counts once
        camera = self.labels.camera(detections.camera_id)
        FRAMES_DETECTED.labels(camera).inc()
        # Once per class, not per box: a frame of a hundred people is one increment, and the labels' lookups cost.
        for class_name, count in collections.Counter(detections.class_name).items():
            DETECTED_OBJECTS.labels(camera, self.labels.free("class_name", class_name)).inc(count)
        if camera in self.cameras:
            CAMERA_PEOPLE.labels(camera).set(int(detections.class_mask(PERSON_CLASS_ID).sum()))
        DETECTION_LATENCY.labels(camera).observe(max(0.0, time.time() - detections.captured_at))

    def on_zone_metrics(self, metrics: ZoneMetrics) -> None:
        labels = self.labels.zone(metrics.camera_id, metrics.zone_id)
        if self.counted_windows.first_time(("zone", metrics.camera_id, metrics.zone_id, metrics.window_start)):
            crossings = (OTHER, OTHER) if labels is None else labels
            ZONE_CROSSINGS.labels(*crossings, "in").inc(metrics.inflow)
            ZONE_CROSSINGS.labels(*crossings, "out").inc(metrics.outflow)
        if labels not in self.zones_taken_at:
            return  # not a configured zone, or one another sink exports (a message under another key than its camera)
        # An unreliable window's figures are the detector's, which misses most of a packed crowd: on a dashboard
        # they would read as calm, so they are not known (NaN, a gap on a graph); the detector's own count stays.
        known = 1.0 if metrics.count_reliable else math.nan
        ZONE_PEOPLE.labels(*labels).set(metrics.people_mean * known)
        ZONE_PEOPLE_MAX.labels(*labels).set(metrics.people_max * known)
        ZONE_DENSITY.labels(*labels).set(metrics.density_mean_per_m2 * known)
        ZONE_DENSITY_MAX.labels(*labels).set(metrics.density_max_per_m2 * known)
        ZONE_AREA.labels(*labels).set(metrics.area_m2)
        ZONE_RISK.labels(*labels).set(metrics.risk_level.rank)
        # A window dated ahead of this clock (a camera's clock running fast) counts as ending when it arrived: it
        # must not keep the zone from going stale once its windows stop.
        window_end = min(metrics.window_end, time.time())
        ZONE_WINDOW_END.labels(*labels).set(window_end)
        self.last_window_end[labels] = max(window_end, self.last_window_end.get(labels, 0.0))
        ZONE_COUNT_RELIABLE.labels(*labels).set(1 if metrics.count_reliable else 0)
        optional_gauges = ((ZONE_PEAK_LOCAL_DENSITY, metrics.peak_local_density_per_m2),
                           (ZONE_SPEED, metrics.mean_speed_m_per_s), (ZONE_PRESSURE, metrics.crowd_pressure_per_s2),
                           (ZONE_DETECTOR_PEOPLE, metrics.detector_people_mean),
                           (ZONE_MODEL_PEOPLE, metrics.density_model_people_mean),
                           (ZONE_SECONDS_TO_DANGER, metrics.seconds_to_threshold.get("danger")),
                           (ZONE_RISE_OVER, metrics.rise_over_s))
        for gauge, value in optional_gauges:
            if value is None:
                gauge.remove(*labels)  # not measured in this window: no stale value left behind
            else:
                gauge.labels(*labels).set(value)
        horizons = set()
        for point in metrics.forecast:
            horizon = self.labels.free("horizon_seconds", f"{point.horizon_s:g}")
            horizons.add(horizon)
            ZONE_FORECAST.labels(*labels, horizon).set(point.density_per_m2)
            ZONE_FORECAST_UPPER.labels(*labels, horizon).set(point.upper_per_m2)
        for horizon in self.forecast_horizons.get(labels, set()) - horizons:  # not forecast in this window
            ZONE_FORECAST.remove(*labels, horizon)
            ZONE_FORECAST_UPPER.remove(*labels, horizon)
        self.forecast_horizons[labels] = horizons

    def mark_stale_zones(self, now: float) -> None:
        for labels, taken_at in self.zones_taken_at.items():
            if now - self.last_window_end.get(labels, taken_at) > self.stale_after_s:
                ZONE_RISK.labels(*labels).set(RiskLevel.UNKNOWN.rank)
                # A stale zone's last forecast would keep its forecast alert firing with a frozen time to danger.
                ZONE_SECONDS_TO_DANGER.remove(*labels)
                ZONE_RISE_OVER.remove(*labels)
                self._remove_forecast(labels)

    def _remove_forecast(self, labels: tuple[str, str]) -> None:
        for horizon in self.forecast_horizons.pop(labels, set()):
            ZONE_FORECAST.remove(*labels, horizon)
            ZONE_FORECAST_UPPER.remove(*labels, horizon)

    def on_line_counts(self, counts: LineCounts) -> None:
        if not self.counted_windows.first_time(("line", counts.camera_id, counts.line_id, counts.window_start)):
            return  # a redelivered window must not be counted twice
        bound = self.labels
        for class_name, direction, count in zip(counts.class_name, counts.direction, counts.count, strict=True):
            class_name = bound.free("class_name", class_name)
            configured = bound.line(counts.camera_id, counts.line_id, counts.lane_id, direction)
            if configured is None:  # pooled, as a zone the site does not have
                LINE_CROSSINGS.labels(OTHER, OTHER, class_name, OTHER).inc(count)
                continue
            line, lane, direction = configured
            LINE_CROSSINGS.labels(counts.camera_id, line, class_name, direction).inc(count)
            if lane is not None:
                LANE_CROSSINGS.labels(counts.camera_id, lane, class_name, direction).inc(count)

    def _bounded(self, event: Event) -> Event:
        return event.model_copy(update={"camera_id": self.labels.camera(event.camera_id),
                                        "type": self.labels.free("event_type", event.type)})

    def on_event(self, event: Event, partition: int | None = None) -> None:
        event = self._bounded(event)
        # An incident is counted by its "opened" message, once: a rewound batch delivers it again.
        if event.state is EventState.OPENED and self.counted_openings.first_time((event.event_id,)):
            EVENTS.labels(event.camera_id, event.type, event.severity.value).inc()
        self.open_events.apply(event, partition)
        self.export_open_events()

    def export_open_events(self) -> None:
        counts = self.open_events.counts(time.time())
        for labels in self._open_labels - set(counts):
            if labels[0] in self.labels.cameras and labels[0] not in self.event_cameras:
                EVENTS_OPEN.remove(*labels)  # another sink reads the camera's incidents now, and exports them
                self._open_labels.discard(labels)
            else:
                EVENTS_OPEN.labels(*labels).set(0)
        for labels, count in counts.items():
            EVENTS_OPEN.labels(*labels).set(count)
        self._open_labels |= set(counts)

    def recover_open_events(self, partitions: set[int], timeout_s: float = 30.0) -> int:
        """The incidents still open on these partitions of the events topic when this sink took them: each from its
        start up to where this sink goes on, applied to the open incidents only (counters counted those events before;
        take_events then exports them), read with the `recovery` consumer. Returns the events read."""
        reader = self.recovery
        deadline = time.monotonic() + timeout_s  # the whole of it: the sink's loop waits meanwhile

        def left_ms() -> int:
            return max(1, int((deadline - time.monotonic()) * 1000))

        until = {}
        for tp in (TopicPartition(self.topics.events, number) for number in sorted(partitions)):
            until[tp] = self.consumer.position(tp, timeout_ms=left_ms())  # None: not known in time
        unknown = sorted(tp.partition for tp, offset in until.items() if offset is None)
        pending = [tp for tp, offset in until.items() if offset]
        read = 0
        try:
            if pending:
                reader.assign(pending)
                reader.seek_to_beginning(*pending)
            while pending and time.monotonic() < deadline:
                for tp, records in reader.poll(timeout_ms=min(500, left_ms())).items():
                    for record in records:
                        if record.offset < until[tp]:
                            read += 1
                            try:
                                self.open_events.apply(self._bounded(decode(record.value, Event)), tp.partition)
                            except SchemaError:
                                pass  # counted as unreadable when it was first read
                pending = [tp for tp in pending if (reader.position(tp, timeout_ms=left_ms()) or 0) < until[tp]]
        finally:
            reader.assign([])  # fetches nothing more of the topic until the next partition is taken
        if pending or unknown:
            log.warning("open incidents recovered only in part (events partitions %s not read back in %.0f s): their "
                        "gauges show the incidents opened from now", ", ".join(
                            str(number) for number in sorted({tp.partition for tp in pending} | set(unknown))),
                        timeout_s)
        return read

    def group_lag(self, group: str, topic: str, group_reader: KafkaConsumer) -> dict[tuple[str, str, str], int]:
        """Lag of another group on the partitions of the topic it consumes that this sink reads: our fetch
        high-watermark minus its committed offset."""
        lags = {}
        for tp in self.consumer.assignment():
            if tp.topic != topic:
                continue
            highwater = self.consumer.highwater(tp)
            # Bounded: without a timeout it waits out a whole broker outage, and the next stale-zone marking with it.
            committed = group_reader.committed(TopicPartition(tp.topic, tp.partition), timeout_ms=LAG_LOOKUP_MS) or 0
            if highwater is not None:
                lags[(group, tp.topic, str(tp.partition))] = max(0, highwater - committed)
        return lags

    def run(self, stop: threading.Event) -> None:
        """Until stopped; a lost broker is waited for with back-off (the clients reconnect), and so is any other
        failure of a pass (the client's, the periodic work's): never a reason to stop exporting."""
        last_lag, failures = 0.0, 0
        while not stop.is_set():
            loop_went_round("metrics-sink")
            try:
                polled = self.consumer.poll(timeout_ms=500)
                try:
                    self.follow_assignment(time.time())  # first: the records polled are of the partitions assigned now
                except Exception as exc:  # the records are handled anyway: their offsets go on to be committed
                    log.warning("taking the group's assignment failed (%s: %s); trying again at the next pass",
                                type(exc).__name__, exc)
                for records in polled.values():
                    for record in records:
                        self.handle(record.topic, record.value, record.partition)
                reset_positions_past_the_end(self.consumer, self.group)
                if time.monotonic() - last_lag > 5:
                    last_lag = time.monotonic()
                    BROKER_CONNECTED.labels("metrics-sink").set(1 if self.consumer.bootstrap_connected() else 0)
                    self.mark_stale_zones(time.time())
                    self.export_open_events()  # an incident whose resolve was lost expires while no event comes
                    if self.broker_memory is not None:
                        self.broker_memory.check()  # the gauge is what matters here; `up` prints the warning
                    lags = {}
                    for group, (topic, group_reader) in self.group_readers.items():
                        lags |= self.group_lag(group, topic, group_reader)
                    self.group_lag_labels = export_lag(lags, self.group_lag_labels)
                    # Its own too: a sink behind serves old figures, and its zones go stale while their windows wait.
                    self.lag_labels = export_partition_lag(self.consumer, self.group, self.lag_labels)
                failures = 0
            except Exception as exc:
                failures += 1
                delay = retry_delay_s(failures)
                if isinstance(exc, KafkaError):
                    BROKER_CONNECTED.labels("metrics-sink").set(0)
                    log.warning("broker unavailable (%s: %s); retrying in %.1f s", type(exc).__name__, exc, delay)
                else:
                    log.warning("reading the topics failed (%s: %s); retrying in %.1f s", type(exc).__name__, exc,
                                delay)
                    log.debug("the failed pass's traceback", exc_info=True)
                stop.wait(delay)

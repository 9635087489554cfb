"""Reads the topics into the console state, in a thread of its own, without ever holding the pipeline back.

The consumer is in the console's own group but takes every partition itself and never commits: each console
instance sees every camera, starts near the end of each topic (a short backlog so the picture, health and charts
are there at once) and its pace or absence changes nothing for the stages.

A message that cannot be shown is skipped and counted; a failing pass is retried with back-off. Each pass is reported
to the state, whose feed health says whether what the console shows is current: a pass while no broker can be reached
is reported as failed, as kafka-python's poll answers nothing then instead of raising.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kafka import TopicPartition

from infra.kafka import Consumer, reset_positions_past_the_end
from schemas import CameraStatus, Detections, Event, Frame, LineCounts, SchemaError, ZoneMetrics, decode
from sinks.console.state import ConsoleState, FeedReport
from sinks.topic_reading import retry_delay_s

log = logging.getLogger(__name__)


class TopicFeed:
    def __init__(self, consumer: Consumer, topics, state: ConsoleState, resolve_frame: Callable[[str], bytes],
                 backlog: dict[str, int]):
        self.consumer = consumer
        self.state = state
        self.resolve_frame = resolve_frame
        self.backlog = backlog  # topic -> messages per partition read from before the end at start
        self.live_from: dict[TopicPartition, int] = {}  # each partition's end at start: the backlog lies before it
        self.handlers = {
            topics.frames: self.on_frame,
            topics.detections: lambda record: state.on_detections(decode(record.value, Detections)),
            topics.zone_metrics: self.on_zone_metrics,
            topics.events: lambda record: state.on_event(decode(record.value, Event)),
            topics.line_counts: lambda record: state.on_line_counts(decode(record.value, LineCounts)),
            topics.camera_status: lambda record: state.on_camera_status(decode(record.value, CameraStatus)),
        }
        self.unreadable = 0
        self.thread: threading.Thread | None = None

    def on_frame(self, record) -> None:
        frame = decode(record.value, Frame)
        jpeg = frame.jpeg
        if jpeg is None:
            try:
                jpeg = self.resolve_frame(frame.frame_ref)
            except LookupError:
                return  # expired from the frame store: a later frame will do
        self.state.on_frame(frame.camera_id, frame.seq, frame.captured_at, jpeg, frame.source_size,
                            (frame.width, frame.height))

    def on_zone_metrics(self, record) -> None:
        # One of the backlog read at start may have been sent long ago, which the state cannot tell from its arrival.
        backlog = record.offset < self.live_from.get(TopicPartition(record.topic, record.partition), 0)
        self.state.on_zone_metrics(decode(record.value, ZoneMetrics), time.time(), backlog)

    def assign(self, timeout_s: float = 10.0) -> None:
        """Every partition of every topic, positioned `backlog` messages before its end."""
        deadline = time.monotonic() + timeout_s
        partitions: list[TopicPartition] = []
        for topic in self.handlers:
            numbers = self.consumer.partitions_for_topic(topic)
            while not numbers and time.monotonic() < deadline:
                time.sleep(0.2)
                numbers = self.consumer.partitions_for_topic(topic)
            partitions += [TopicPartition(topic, number) for number in sorted(numbers or ())]
        self.consumer.assign(partitions)
        beginnings = self.consumer.beginning_offsets(partitions)
        ends = self.consumer.end_offsets(partitions)
        self.live_from = dict(ends)
        for tp in partitions:
            self.consumer.seek(tp, max(beginnings[tp], ends[tp] - self.backlog.get(tp.topic, 0)))

    def poll_once(self, timeout_ms: int = 200) -> int:
        handled = 0
        for records in self.consumer.poll(timeout_ms=timeout_ms).values():
            for record in records:
                try:
                    self.handlers[record.topic](record)
                    handled += 1
                except SchemaError as exc:
                    # The stage that owns the topic dead-letters it; the console only skips it.
                    self.unreadable += 1
                    log.debug("unreadable message on %s: %s", record.topic, exc)
                except Exception as exc:  # one message the console cannot show must not stop it for the others
                    self.unreadable += 1
                    log.warning("message on %s skipped: %s: %s", record.topic, type(exc).__name__, exc)
        # A broker restarted empty starts the topics again at offset 0, below the positions held here: all new.
        for tp in reset_positions_past_the_end(self.consumer, self.consumer.config["group_id"]):
            self.live_from.pop(tp, None)
        return handled

    def run(self, stop: threading.Event) -> None:
        """Until stopped; a failing pass is reported and retried with back-off, never a reason to stop reading."""
        failures = 0
        reached = True
        while not stop.is_set():
            try:
                self.poll_once()
                failures = 0
                was_reached, reached = reached, self.consumer.bootstrap_connected()
                if reached != was_reached:
                    log.log(logging.INFO if reached else logging.WARNING, "the broker is %s",
                            "reached again" if reached else "out of reach; the clients keep trying")
                self.state.on_feed(FeedReport(time.time(), None if reached else "no broker can be reached",
                                              self.unreadable))
            except Exception as exc:
                failures += 1
                delay = retry_delay_s(failures)
                self.state.on_feed(FeedReport(time.time(), f"{type(exc).__name__}: {exc}", self.unreadable))
                log.warning("reading the topics failed (%s: %s); retrying in %.1f s", type(exc).__name__, exc, delay)
                stop.wait(delay)

    def start(self, stop: threading.Event) -> TopicFeed:
        self.thread = threading.Thread(target=self.run, args=(stop,), name="console-feed", daemon=True)
        self.thread.start()
        return self

"""Analytics stage (faust-streaming): detections topic -> zone metrics and events topics.

Faust only wires the pure per-camera analyzers (processors.analytics.contract) to the topics. Their state lives in a
faust table, so a restarted or rebalanced worker resumes the same windows and levels from the table's changelog.
The detections topic is keyed by camera, so one camera's frames always reach the same worker, in order.

At-least-once without loss: a frame's outputs are confirmed by the broker before it counts as applied, and the
table stores, per input partition, the next offset its states expect. That stored offset, not the committed one,
decides what is applied (processors.analytics.input_positions): a frame already in the state is skipped, and a gap
(faust can drop fetched frames when it resumes after a rebalance, or commit past a frame a stopped worker never
finished) is read directly from the partition and applied first. (Not by seeking faust's consumer back: its fetcher
can run past the seek and then drop the refetched frames as already read.)

Checkpoints: the worker keeps its analyzers live in memory and stores their states (then the position) every
`analytics.checkpoint_frames` frames of a partition, not after every frame; writing a busy camera's state to the
changelog per frame cost more than analysing the frame. A restarted worker resumes from the last checkpoint and the
same gap read brings it up to date, re-sending those frames' outputs: identical repeats, which every consumer of
these topics already tolerates under at-least-once.

Beside each analyzer's state, the table keeps what it has open as the events that would resolve it, with the input
offset they hold up to (`open_key`, `OpenRecord`). It is rewritten as soon as the broker has confirmed a frame's events
(an incident opened since the last checkpoint is in it at once), and at a checkpoint while something is open or once
after a worker takes the partition (`LivePartition.open_record_due`). A version that cannot read a stored state (a
format changed by an upgrade, a corrupt record) starts that analyzer afresh, and once the fresh one has taken the
frames up to that offset (or of a topic recreated since) it sends those events, leaving out the incidents the fresh
one found again itself (the same ids: they are its own now). Until then they are kept under their own key
(`lost_key`), so a worker that takes over meanwhile, from the fresh analyzer's checkpointed state, still sends them.
So nothing the old one had open is left open for ever, nor closed while still open.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import faust
import msgpack
from prometheus_client import Counter, Histogram

from infra.dead_letter import dead_letter, wrong_key
from infra.kafka import TopicIdentity, deliveries_confirmed, faust_settings, loop_went_round, read_offsets
from processors.analytics.contract import AnalyticsOutput, CameraAnalyzer
from processors.analytics.ignore_filters import IgnoreFilterReader, IgnoreFilterStore, without_ignored
from processors.analytics.input_positions import Position, Verdict, judge
from processors.analytics.registry import PictureCheck, analyzers_for
from schemas import Detections, Event, SchemaError, decode, encode
from schemas.event import CLOSED_BY_RESET
from schemas.settings.config import Config
from schemas.settings.crowd import area_disagreements

log = logging.getLogger(__name__)

STAGE = "analytics"
# An analyzer that raises on this many frames of its camera in a row is failing on its own state, not on the frames:
# restoring that state again would fail every later frame too, so it starts afresh.
MAX_FAILURES_IN_A_ROW = 5
STATE_LOST_REASON = "its analyzer's stored state could not be read, so it started afresh"
STATE_TABLE = "analyzer-state"
# How often the worker marks its event loop as going round when no frame comes (its /healthz reads it): analyzers
# run on that loop, so one stuck in a frame stops it.
ALIVE_INTERVAL_S = 5.0
# faust restarts a crashed agent inside the live process; one that crashes this often in a row without taking a frame
# (its topics disagree, say) is as stuck as a hung one.
MAX_AGENT_CRASHES_IN_A_ROW = 3

FRAMES_APPLIED = Counter("cityguard_analytics_frames_total", "Frames the camera's analyzers took", ["camera"])
ANALYSIS_SECONDS = Histogram("cityguard_analytics_seconds", "Time of all of a camera's analyzers on one frame",
                             buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0))
GAP_FRAMES = Counter("cityguard_analytics_gap_frames_total",
                     "Frames read by offset to fill a gap between the stored state and what the consumer delivered")
ANALYZER_RESETS = Counter("cityguard_analytics_analyzer_resets_total",
                          "Analyzers started afresh: their stored state could not be read, or they failed on frames "
                          "in a row", ["camera"])


def state_changelog(config: Config) -> str:
    """The topic faust keeps the analyzers' states in (named after the app, which is the consumer group)."""
    return f"{config.group_id(STAGE)}-{STATE_TABLE}-changelog"


def partition_problem(config: Config, counts: dict[str, int]) -> str | None:
    """Why the worker cannot run on topics with these partition counts, or None.

    A camera's state lives in the changelog partition numbered as its input partition, so faust refuses (and keeps
    restarting its agent, inside a live process) when the counts differ; and existing topics are never resized, so
    a raised broker.partitions would make the changelog disagree with the input."""
    detections, changelog = config.broker.topics.detections, state_changelog(config)
    if detections not in counts:
        return None
    count = counts[detections]
    if changelog in counts and counts[changelog] != count:
        return (f"topic {detections} has {count} partitions but the analytics state's changelog {changelog} has "
                f"{counts[changelog]}: grow the changelog to {count} with every analytics worker stopped "
                f"(kafka-topics --alter --topic {changelog} --partitions {count}); cameras whose partition changes "
                "start their analytics afresh")
    if count != config.broker.partitions:
        return (f"broker.partitions is {config.broker.partitions} but topic {detections} has {count} partitions "
                f"(topics that exist are never resized): set broker.partitions to {count}, or grow every topic and "
                "the analytics state's changelog to the new count with the analytics workers stopped")
    return None


def open_key(state_key: bytes) -> bytes:
    """The table key of what the analyzer of `state_key` has open ("/" cannot occur in a camera id)."""
    return state_key + b"/open"


def lost_key(state_key: bytes) -> bytes:
    """The table key of what an unreadable stored state of `state_key` had open, kept until it has been sent."""
    return state_key + b"/lost"


def closed_by_reset(events: list[Event]) -> list[Event]:
    """The resolved events marked as closing incidents that did not end but whose analyzer lost its state, so that a
    new episode the fresh analyzer opens is alerted at once, not held back as a repeat."""
    return [event.model_copy(update={"details": {**event.details, "closed_by": CLOSED_BY_RESET}}) for event in events]


@dataclass
class OpenRecord:
    """What an analyzer had open, as the events resolving it, as of the input offset `until` (the next one its state
    expected then; None: as of the stored state, in records written before offsets were kept)."""

    events: list[Event]
    until: int | None = None
    topic_id: str | None = None  # of the topic `until` counts in (processors.analytics.input_positions)
    # ids of the events a fresh analyzer sent since it replaced the unreadable state: incidents it found itself
    found_again: set[str] = field(default_factory=set)

    def pack(self) -> bytes:
        return msgpack.packb({"until": self.until, "topic_id": self.topic_id, "found_again": sorted(self.found_again),
                              "events": [encode(event) for event in self.events]})

    @classmethod
    def unpack(cls, value: bytes | None) -> OpenRecord:
        """The record stored under an `open_key` or `lost_key`; an empty one when there is none, and an event that does
        not decode is left out (its incident stays open: nothing else is known of it)."""
        try:
            stored = msgpack.unpackb(value) if value else []
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            log.error("a stored list of open incidents could not be read; they stay open: %s", exc)
            return cls([])
        if isinstance(stored, dict):
            until, topic_id, encoded = stored.get("until"), stored.get("topic_id"), stored.get("events")
            found_again = stored.get("found_again")
        else:
            until, topic_id, encoded, found_again = None, None, stored, None
        if not isinstance(encoded, list):
            log.error("a stored list of open incidents has no list of events; they stay open")
            return cls([])
        events = []
        for raw in encoded:
            try:
                events.append(decode(raw, Event))
            except (SchemaError, TypeError) as exc:
                log.error("a stored open incident could not be read; it stays open: %s", exc)
        found = {value for value in found_again if isinstance(value, str)} if isinstance(found_again, list) else set()
        return cls(events, until if isinstance(until, int) else None, topic_id if isinstance(topic_id, str) else None,
                   found)

    def merged(self, other: OpenRecord) -> OpenRecord:
        """This record with the incidents of `other` it lacks, holding up to the later of the two offsets."""
        known = {event.event_id for event in self.events}
        untils = [until for until in (self.until, other.until) if until is not None]
        return OpenRecord([*self.events, *(event for event in other.events if event.event_id not in known)],
                          max(untils) if untils else None, self.topic_id or other.topic_id,
                          self.found_again | other.found_again)

    def due(self, offset: int, topic_id: str | None) -> bool:
        """Whether the fresh analyzer has taken every frame the record covers once it has taken the one at `offset`
        of the topic `topic_id` (a topic recreated since counts its offsets afresh: nothing of it is covered)."""
        return (self.until is None or offset + 1 >= self.until
                or (None not in (topic_id, self.topic_id) and topic_id != self.topic_id))

    def unresolved(self, open_now: set[str]) -> list[Event]:
        """The events to send: those of incidents the fresh analyzer did not find again (it sent events of them, or
        has them open now)."""
        return [event for event in self.events if event.event_id not in self.found_again | open_now]


class AnalyzerReset(Exception):
    """An analyzer kept failing, so it starts afresh: `resolved` closes what it had open (its cause: the failure)."""

    def __init__(self, resolved: list[Event]):
        super().__init__(f"analyzer reset; {len(resolved)} open incidents resolved")
        self.resolved = resolved


@dataclass
class AgentHealth:
    """Whether the worker's agent counts as going round: its event loop turns (the timer runs) and it is not
    crashing again and again without taking a frame."""

    crashes_in_a_row: int = 0

    def took_frame(self) -> None:
        self.crashes_in_a_row = 0

    def crashed(self) -> None:
        self.crashes_in_a_row += 1

    def going_round(self) -> bool:
        return self.crashes_in_a_row < MAX_AGENT_CRASHES_IN_A_ROW


@dataclass
class LivePartition:
    """A worker's analyzers for the cameras of one input partition, ahead of the table by up to checkpoint_frames.

    The table holds each camera's state as of the partition's stored position; the live analyzers have applied every
    frame up to `next_offset`. Their encoded states since the last checkpoint are kept (`states`), both to store at
    the next checkpoint and to restart an analyzer that raised from the state after its last good frame.
    """

    next_offset: int | None  # the next input offset the live analyzers expect; None: nothing known yet
    stored_position: bytes | None  # the table's position this worker last read or wrote for the partition
    analyzers: dict[bytes, object] = field(default_factory=dict)
    states: dict[bytes, bytes] = field(default_factory=dict)
    frames_since_checkpoint: int = 0
    topic_id: str | None = None  # the id of the topic next_offset counts in (processors.analytics.input_positions)
    captured_at: dict[bytes, float] = field(default_factory=dict)  # state key -> capture time of its newest frame
    sent_events: set[bytes] = field(default_factory=set)  # state keys whose analyzer sent events for the current frame
    # state key -> what its unreadable stored state had open, until the fresh analyzer has caught up with it
    lost: dict[bytes, OpenRecord] = field(default_factory=dict)
    lost_sent: set[bytes] = field(default_factory=set)  # state keys whose `lost` the current frame sent
    # state key -> whether its open record, as last written here, lists anything (see `open_record_due`)
    open_recorded: dict[bytes, bool] = field(default_factory=dict)
    # the frame being applied: each analyzer's state before it and the frames in a row it had raised on
    before_frame: dict[bytes, tuple[bytes | None, int]] = field(default_factory=dict)
    failures: dict[bytes, int] = field(default_factory=dict)  # state key -> frames in a row its analyzer raised on
    analysed: tuple[str, float] | None = None  # the frame being applied: its camera and its analyzers' seconds

    def open_record_due(self, state_key: bytes) -> bool:
        """Whether the checkpoint rewrites what the analyzer has open: while it has something open (so the record's
        times stay those of the last checkpoint), and once after this worker took the partition (an incident open
        since before this version started has no record yet). A frame that sent events has rewritten it already."""
        return self.open_recorded.get(state_key, True)

    def newest_state(self, state_key: bytes, stored: bytes | None) -> bytes | None:
        """The analyzer's state after the last frame it took: its live one since the checkpoint, else the stored one."""
        return self.states.get(state_key) or stored or None

    def update(self, state_key: bytes, restore: Callable[[bytes | None], CameraAnalyzer], stored: bytes | None,
               detections: Detections) -> AnalyticsOutput:
        """The frame through the live analyzer of `state_key` (restored from its newest state when there is none
        live; `stored` is the table's state). An analyzer that raises is replaced, from the state after the last
        frame it took, or afresh once it has raised MAX_FAILURES_IN_A_ROW times in a row; the exception goes on to
        the caller, as the cause of an AnalyzerReset in the second case."""
        self.taking(state_key)
        analyzer = self.analyzers.get(state_key)
        if analyzer is None:
            analyzer = self.analyzers[state_key] = restore(self.newest_state(state_key, stored))
        try:
            output = analyzer.update(detections)
            self.states[state_key] = analyzer.state_bytes()
        except Exception as exc:
            failures = self.failures[state_key] = self.failures.get(state_key, 0) + 1
            dropped = self.analyzers[state_key] = restore(self.newest_state(state_key, stored))
            if failures < MAX_FAILURES_IN_A_ROW:
                raise
            raise self._reset(state_key, restore, dropped, detections.captured_at) from exc
        self.failures.pop(state_key, None)
        return output

    def _reset(self, state_key: bytes, restore: Callable[[bytes | None], CameraAnalyzer], dropped: CameraAnalyzer,
               at: float) -> AnalyzerReset:
        log.error("%s: the analyzer failed on %d frames in a row; its state is dropped and it starts afresh",
                  state_key.decode(), MAX_FAILURES_IN_A_ROW)
        try:
            resolved = closed_by_reset(dropped.resolve_open(at, "the camera's analyzer was reset after failing "
                                                            "repeatedly"))
        except Exception:
            log.exception("%s: the incidents open before the reset could not be read; they stay open",
                          state_key.decode())
            resolved = []
        fresh = self.analyzers[state_key] = restore(None)
        self.states[state_key] = fresh.state_bytes()
        del self.failures[state_key]
        return AnalyzerReset(resolved)

    def taking(self, state_key: bytes) -> None:
        """The analyzer is about to take the current frame: its state and failures before it are kept for
        `undo_frame`."""
        self.before_frame.setdefault(state_key, (self.states.get(state_key), self.failures.get(state_key, 0)))

    def frame_done(self) -> None:
        self.before_frame = {}
        self.analysed = None
        self.sent_events.clear()
        for state_key in self.lost_sent:
            del self.lost[state_key]
        self.lost_sent.clear()

    def undo_frame(self) -> None:
        """The frame's outputs were not confirmed, so it does not count as applied: its analyzers go back to their
        states before it and take it again when it is read again (they drop a frame they have already seen)."""
        self.analysed = None
        for state_key, (before, failures) in self.before_frame.items():
            self.analyzers.pop(state_key, None)
            if before is None:
                self.states.pop(state_key, None)
            else:
                self.states[state_key] = before
            if failures:
                self.failures[state_key] = failures
            else:
                self.failures.pop(state_key, None)
        self.before_frame = {}
        self.sent_events.clear()
        self.lost_sent.clear()


def create_app(config: Config, bootstrap_servers: str) -> faust.App:
    topics = config.broker.topics
    # Faust's data directory lies beside the site's other state, not in whatever directory the worker started in.
    state_dir = config.resolve_path("var")
    os.makedirs(state_dir, exist_ok=True)
    app = faust.App(
        config.group_id(STAGE),  # the faust app id is its consumer group
        **faust_settings(bootstrap_servers, config.broker.replication_factor),
        datadir=os.path.join(state_dir, "{conf.id}-data"),
        topic_partitions=config.broker.partitions,
        key_serializer="raw",
        value_serializer="raw",
    )
    detections_topic = app.topic(topics.detections, key_type=bytes, value_type=bytes)
    zone_metrics_topic = app.topic(topics.zone_metrics, key_type=bytes, value_type=bytes)
    events_topic = app.topic(topics.events, key_type=bytes, value_type=bytes)
    line_counts_topic = app.topic(topics.line_counts, key_type=bytes, value_type=bytes)
    dead_letter_topic = app.topic(topics.dead_letter, key_type=bytes, value_type=bytes)
    # "<camera id>/<analyzer>" -> that analyzer's encoded state; recovered from the changelog on restart.
    analyzer_state = app.Table(STATE_TABLE, default=bytes, partitions=config.broker.partitions,
                               key_type=bytes, value_type=bytes)
    cameras = {camera.id: (camera, analyzers_for(camera)) for camera in config.cameras}
    for camera in config.cameras:
        for disagreement in area_disagreements(camera.zones, camera.calibration):
            log.warning("camera %s: %s", camera.id, disagreement)
    picture_check = PictureCheck()
    ignore_filters = (IgnoreFilterReader(IgnoreFilterStore(Path(config.resolve_path(config.analytics.ignore_filters))))
                      if config.analytics.ignore_filters else None)
    checkpoint_frames = config.analytics.checkpoint_frames
    # input partition -> what this worker has applied beyond the table (see LivePartition)
    live_partitions: dict[int, LivePartition] = {}

    def restore(live: LivePartition, state_key: bytes, camera, factory, state: bytes | None):
        """The analyzer from `state` (its live state or the table's). One this version cannot read (or a corrupt one)
        starts afresh, and what it had open goes to `live.lost` and to the table (`lost_key`, so that a worker that
        takes over before it is sent still sends it): losing the state beats muting the camera for good, and those
        incidents must not stay open for ever."""
        if state_key not in live.lost and (pending := analyzer_state[lost_key(state_key)]):
            live.lost[state_key] = OpenRecord.unpack(pending)
        try:
            return factory(camera, config, state)
        except Exception:
            record = OpenRecord.unpack(analyzer_state[open_key(state_key)])
            if record.topic_id is None:  # written before records kept it: the stored position's topic
                stored = Position.decode(live.stored_position)
                record.topic_id = stored.topic_id if stored else None
            # Merged, not replaced: a fresh analyzer's checkpointed state can itself become unreadable while what the
            # first one had open still waits. However often the frame restores it, the merge is the same.
            waiting = live.lost.get(state_key)
            merged = record if waiting is None else waiting.merged(record)
            if merged != waiting:
                live.lost[state_key] = merged
                analyzer_state[lost_key(state_key)] = merged.pack()
                ANALYZER_RESETS.labels(camera.id).inc()  # once: restoring the same state again is no new reset
            log.exception("stored %s state unreadable; starting afresh and resolving the %d incidents it had open "
                          "that it does not find again", state_key.decode(), len(live.lost[state_key].events))
            return factory(camera, config, None)

    def open_incidents(state_key: bytes, state: bytes | None, at: float) -> list[Event]:
        """What the analyzer whose state this is has open, as the events that would resolve it as of `at` (from a
        copy: resolving changes an analyzer)."""
        if not state:
            return []
        camera_id, name = state_key.decode().split("/", 1)
        camera, factories = cameras[camera_id]
        try:
            return closed_by_reset(factories[name](camera, config, state).resolve_open(at, STATE_LOST_REASON))
        except Exception:  # the state itself is stored all the same: the analyzer goes on from it
            log.exception("%s: the incidents its state has open could not be listed", state_key.decode())
            return []

    def record_open(live: LivePartition, state_key: bytes) -> None:
        """Stores what the live analyzer of `state_key` has open (`open_key`), as of `live.next_offset`."""
        state = live.newest_state(state_key, analyzer_state[state_key] or None)
        incidents = open_incidents(state_key, state, live.captured_at[state_key])
        analyzer_state[open_key(state_key)] = OpenRecord(incidents, live.next_offset, live.topic_id).pack()
        live.open_recorded[state_key] = bool(incidents)

    async def apply(message, live: LivePartition) -> list[asyncio.Future]:
        """Runs one frame (a faust message or a record read to fill a gap) through its camera's live analyzers; the
        delivery futures of its outputs."""
        deliveries: list[asyncio.Future] = []

        async def send(topic, value: bytes, key: bytes) -> None:
            # Awaited one at a time to keep their order; returns once queued, with the delivery future.
            deliveries.append(await topic.send(key=key, value=value))

        async def reject(reason: str) -> None:
            letter = dead_letter(STAGE, message.topic, message.partition, message.offset, message.key, message.value,
                                 reason)
            await send(dead_letter_topic, encode(letter), letter.key)  # capped, like the letter

        try:
            detections = decode(message.value, Detections)
        except SchemaError as exc:
            await reject(str(exc))
            return deliveries
        if (misrouted := wrong_key("detections", detections.camera_id, message.key)) is not None:
            # On a partition other than its camera's, it would meet a second copy of the camera's analyzers, restored
            # from the table's state without this partition's record of the frames taken: windows and events again.
            await reject(misrouted)
            return deliveries
        if detections.camera_id not in cameras:
            await reject(f"camera {detections.camera_id!r} is not in the site configuration")
            return deliveries
        camera, factories = cameras[detections.camera_id]
        key = camera.id.encode()
        analysing = 0.0
        for warning in picture_check.warnings(camera, detections):
            log.warning("%s", warning)
        if ignore_filters is not None:
            # Operators' "ignore this": the covered objects never reach the analyzers, so they raise nothing.
            detections = without_ignored(detections, ignore_filters.current(detections.captured_at))
        for name, factory in factories.items():
            state_key = f"{camera.id}/{name}".encode()
            live.captured_at[state_key] = detections.captured_at
            begun = time.perf_counter()
            try:
                output = live.update(state_key, partial(restore, live, state_key, camera, factory),
                                     analyzer_state[state_key], detections)
            except Exception as exc:  # one bad message must not stop the camera's analytics
                failure = exc.__cause__ if isinstance(exc, AnalyzerReset) else exc
                if isinstance(exc, AnalyzerReset):
                    ANALYZER_RESETS.labels(camera.id).inc()
                log.error("%s analyzer failed on %s seq %d", name, camera.id, detections.seq, exc_info=failure)
                await reject(f"{name} analyzer failed: {type(failure).__name__}: {failure}")
                output = AnalyticsOutput(events=exc.resolved if isinstance(exc, AnalyzerReset) else [])
            analysing += time.perf_counter() - begun
            for metrics in output.zone_metrics:
                await send(zone_metrics_topic, encode(metrics), key)
            resolving_lost = []
            if (lost := live.lost.get(state_key)) is not None:
                found = {event.event_id for event in output.events} & {event.event_id for event in lost.events}
                if not found <= lost.found_again:  # kept with the record: a worker taking over must know it too
                    lost.found_again |= found
                    analyzer_state[lost_key(state_key)] = lost.pack()
                if lost.due(message.offset, live.topic_id):
                    newest = live.newest_state(state_key, analyzer_state[state_key] or None)
                    open_now = open_incidents(state_key, newest, detections.captured_at)
                    resolving_lost = lost.unresolved({event.event_id for event in open_now})
                    live.lost_sent.add(state_key)
            for incident in [*resolving_lost, *output.events]:
                live.sent_events.add(state_key)
                await send(events_topic, encode(incident), key)
            for counts in output.line_counts:
                await send(line_counts_topic, encode(counts), key)
        live.analysed = (camera.id, analysing)
        return deliveries

    async def apply_in_order(message, live: LivePartition, position_key: bytes) -> None:
        # A delivery failure raises here, before the frame counts as applied. (Most frames send nothing.)
        try:
            deliveries = await apply(message, live)
            if deliveries:
                await deliveries_confirmed(deliveries)
        except Exception:
            live.undo_frame()
            raise
        changed, lost_sent = set(live.sent_events), set(live.lost_sent)
        if live.analysed is not None:  # counted once its outputs are confirmed: a frame taken again counts once
            camera_id, seconds = live.analysed
            FRAMES_APPLIED.labels(camera_id).inc()
            ANALYSIS_SECONDS.observe(seconds)
        live.frame_done()
        live.next_offset = message.offset + 1
        for state_key in lost_sent:
            analyzer_state.pop(lost_key(state_key), None)
        for state_key in changed:  # what the frame opened or ended is on record before the next checkpoint
            record_open(live, state_key)
        live.frames_since_checkpoint += 1
        if live.frames_since_checkpoint >= checkpoint_frames:
            for state_key, state in live.states.items():
                analyzer_state[state_key] = state
                if live.open_record_due(state_key):
                    record_open(live, state_key)
            # Written after the states, to the same changelog partition: recovery never sees it without them.
            live.stored_position = analyzer_state[position_key] = Position(live.next_offset, live.topic_id).encode()
            live.states.clear()
            live.frames_since_checkpoint = 0

    detections_identity = TopicIdentity(bootstrap_servers, topics.detections)

    health = AgentHealth()

    @app.timer(interval=ALIVE_INTERVAL_S)
    async def alive() -> None:
        if health.going_round():
            loop_went_round(STAGE)

    @app.agent(detections_topic)
    async def analyze(stream):
        try:
            await analyze_frames(stream)
        except Exception as exc:  # faust logs it and restarts the agent
            health.crashed()
            log.error("the analytics agent crashed (%d in a row without a frame): %s", health.crashes_in_a_row,
                      type(exc).__name__)
            raise

    async def analyze_frames(stream):
        async for event in stream.events():
            if health.going_round():
                loop_went_round(STAGE)
            message = event.message
            # "_" cannot start a camera id, so this key never meets a camera's state key.
            position_key = f"_position/{message.partition}".encode()
            stored_position = analyzer_state[position_key] or None
            live = live_partitions.get(message.partition)
            if live is None or live.stored_position != stored_position:
                # First frame of the partition here, or another worker stored a later state since (a rebalance
                # moved the partition away and back): continue from the table.
                stored = Position.decode(stored_position)
                live = live_partitions[message.partition] = LivePartition(
                    stored.offset if stored else None, stored_position, topic_id=stored.topic_id if stored else None)
            expected = Position(live.next_offset, live.topic_id) if live.next_offset is not None else None
            current_id = await detections_identity.answer(fresh=False)
            verdict = judge(expected, message.offset, current_id)
            if verdict is not Verdict.APPLY:  # not the expected frame: first make sure it is still the same topic
                current_id = await detections_identity.answer(fresh=True)
                verdict = judge(expected, message.offset, current_id)
            live.topic_id = current_id or live.topic_id
            if expected is None:
                # Where the partition's state begins (empty, until the first checkpoint): a worker that takes it
                # over before that checkpoint then fills the gap from here, as after any checkpoint, instead of
                # starting fresh analyzers at the group's committed offset, which may have run ahead and would open
                # the incidents this worker had open a second time.
                live.stored_position = analyzer_state[position_key] = Position(message.offset,
                                                                              live.topic_id).encode()
            if verdict is Verdict.ALREADY_APPLIED:
                health.took_frame()
                continue
            if verdict is Verdict.TOPIC_RECREATED:
                log.warning("%s[%d] was recreated (id %s, the state counted in %s): its offsets start afresh at %d",
                            message.topic, message.partition, current_id, expected.topic_id, message.offset)
            if verdict is Verdict.FILL_GAP:
                missing = await read_offsets(bootstrap_servers, message.topic, message.partition, live.next_offset,
                                             message.offset)
                log.info("%s[%d]: offset %d arrived but the state expects %d; applied %d frames read directly",
                         message.topic, message.partition, message.offset, live.next_offset, len(missing))
                GAP_FRAMES.inc(len(missing))
                for record in missing:
                    await apply_in_order(record, live, position_key)
            await apply_in_order(message, live, position_key)
            health.took_frame()

    return app


def run_worker(config: Config, bootstrap_servers: str, loglevel: str = "warning") -> None:
    """Runs the faust worker until SIGTERM/SIGINT (blocks; faust owns the event loop and signal handling)."""
    app = create_app(config, bootstrap_servers)
    # The command's own logging stays (its formatter redacts secrets); faust would replace it with its own.
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, override_logging=False)
    # Its terminal spinner ends the start with a backspace and a show-cursor escape whether or not stdout is a
    # terminal, and stdout is the stage's log file; without it faust logs that it is ready instead.
    worker.spinner = None
    worker.execute_from_commandline()

"""Frame producer stage: cameras -> frames topic, camera health -> camera-status topic.

One reader thread per camera samples, checks and encodes its frames into a small bounded queue of its own; one sender
thread publishes from all the queues in turn. A slow or dead camera therefore never blocks another. The sender keeps
at most `max_in_flight_bytes` of frames unacknowledged by the broker, so when the broker is slow or away each camera's
oldest frames are dropped and counted instead of buffering without bound (replays, `realtime=False`, wait instead, so
no frame is lost). Failed cameras reconnect with exponential backoff and jitter; ITS cameras get a fresh URL from the
API first.
"""
from __future__ import annotations

import functools
import itertools
import logging
import random
import statistics
import sys
import threading
import time
import traceback
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
from prometheus_client import Counter, Gauge, Histogram

from infra import assets
from infra.frame_client import FrameClient, NotDelivered
from infra.kafka import BROKER_CONNECTED, loop_went_round
from infra.redaction import keep_out_of_logs, redacted, shown
from producers.capture import CameraUnavailable, PublishedUpTo, clip_fingerprint, sample_frames, source_kind
from producers.frame_store import FrameStore, open_frame_store
from producers.health import CameraHealth, FrameQualityMonitor, reconnect_delay
from producers.its_client import ItsApiError, ItsClient, ItsResolver
from producers.picture import encode_jpeg, source_size_fields
from schemas import CameraState, CameraStatus, Frame, encode
from schemas.settings.base import source_variable_values, source_with_variables
from schemas.settings.capture import ProducerConfig, SourceKind
from schemas.settings.config import CameraConfig, Config, ConfigError

log = logging.getLogger(__name__)

FRAMES_PRODUCED = Counter("cityguard_frames_produced_total", "Frames the broker acknowledged on the frames topic",
                          ["camera"])
FRAME_BYTES = Counter("cityguard_frame_bytes_total", "Frame message bytes the broker acknowledged", ["camera"])
FRAMES_SEND_FAILED = Counter("cityguard_frames_send_failed_total",
                             "Frames the Kafka client gave up on (not acknowledged within the delivery timeout, "
                             "or refused)", ["camera"])
FRAMES_IN_FLIGHT_BYTES = Gauge("cityguard_frames_in_flight_bytes",
                               "Frame bytes handed to the Kafka client and not yet acknowledged or failed")
FRAMES_STORED = Counter("cityguard_frames_stored_total",
                        "Frames sent through the frame store: oversized ones, or every one by reference", ["camera"])
ENCODE_SECONDS = Histogram(
    "cityguard_frame_encode_seconds", "Resize + JPEG encode time per frame", ["camera"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
CAMERA_UP = Gauge("cityguard_camera_up", "1 while the camera delivers usable frames", ["camera"])
CAMERA_STATE = Gauge("cityguard_camera_state", "1 for the camera's current state", ["camera", "state"])
CAMERA_FPS = Gauge("cityguard_camera_fps", "Frames published per second over the status interval", ["camera"])
CAMERA_RECONNECTS = Counter("cityguard_camera_reconnects_total", "Reconnection attempts after a failure", ["camera"])
CAMERA_DROPPED = Counter("cityguard_camera_dropped_frames_total",
                         "Frames that never reached the broker: dropped from a full queue or failed to send",
                         ["camera"])
CAMERA_FRAME_AGE = Gauge("cityguard_camera_last_frame_age_seconds", "Seconds since the last captured frame",
                         ["camera"])


class SequenceCounter:
    """Per-camera sequence numbers that are never reused, also across reconnects and producer restarts.

    They start at the process start time in microseconds; a restarted producer starts higher than any number the
    previous run could have reached unless it produced over a million frames per second.
    """

    def __init__(self, start: int | None = None):
        self._next = time.time_ns() // 1000 if start is None else start

    def next(self) -> int:
        value = self._next
        self._next += 1
        return value


@dataclass
class Clip:
    """One recorded clip of an ITS camera, as the API listed it last, and how far it has been read."""

    url: str
    made: str | None  # its filecreatetime; None where the API gave none
    fingerprint: str  # what its first bytes are (capture.clip_fingerprint)
    listed_at: float  # when it was first listed, on the reader's monotonic clock
    published: PublishedUpTo = field(default_factory=PublishedUpTo)  # up to which frame, in the clip's own time
    ended: bool = False  # played to its end


class PlayedClips:
    """The clips an ITS camera of recorded clips has read, newest last. A few are remembered, not only the last: an
    API whose servers are not in step may list an older clip again after a newer one."""

    def __init__(self, remembered: int = 16):
        self._clips: deque[Clip] = deque(maxlen=remembered)

    def listed(self, url: str, made: str | None, fingerprint: Callable[[str], str], now: float) -> Clip:
        """The clip the API lists at `url` with creation time `made`: one read before, under the URL it has now, or a
        new one. The same creation time is the same clip, and another is another; where either listing gave none (the
        API often does not), `fingerprint(url)` tells, since the URL's token changes at every listing and the same URL
        may serve another clip. (Two clips of one encoder may begin alike for their first bytes, all header: a
        creation time, where both have one, outranks them.) A new one overtakes those before it: one that broke off
        part way is not finished later, after it, which would publish older pictures after newer ones."""
        clip = next((clip for clip in self._clips if made is not None and clip.made == made), None)
        if clip is None:
            digest = fingerprint(url)
            clip = next((clip for clip in self._clips
                         if clip.fingerprint == digest and (made is None or clip.made is None)), None)
        if clip is None:
            for earlier in self._clips:
                earlier.ended = True
            clip = Clip(url, made, digest, now)
            self._clips.append(clip)
        clip.url, clip.made = url, made or clip.made
        return clip

    def longest_wait_s(self, first_wait_s: float, poll_max_s: float) -> float:
        """How long the camera may wait for its next clip while it is fine: twice the usual interval between its
        clips (the median of those remembered, which an outage does not move), plus the longest interval between two
        asks for one (a clip is seen that much after it is listed); first_wait_s while it has listed only one."""
        intervals = [later.listed_at - earlier.listed_at for earlier, later in itertools.pairwise(self._clips)]
        return 2 * statistics.median(intervals) + poll_max_s if intervals else first_wait_s


def cameras_for_shard(cameras: list[CameraConfig], shard_index: int, shard_count: int) -> list[CameraConfig]:
    """This shard's cameras: a stable hash of the id, so every producer process agrees without talking."""
    return [camera for camera in cameras if zlib.crc32(camera.id.encode()) % shard_count == shard_index]


class FrameQueue:
    """Encoded frames of one camera waiting for the sender; bounded, the oldest go first when it is full."""

    def __init__(self, max_frames: int, ready: threading.Event):
        self.max_frames = max_frames
        self._items: deque[bytes] = deque()
        self._space = threading.Condition()
        self._ready = ready

    def put(self, value: bytes, wait: bool, stop: threading.Event) -> int:
        """Adds a frame; returns how many old frames were dropped for it (always 0 with wait=True)."""
        dropped = 0
        with self._space:
            while wait and len(self._items) >= self.max_frames and not stop.is_set():
                self._space.wait(0.1)
            while len(self._items) >= self.max_frames:
                self._items.popleft()
                dropped += 1
            self._items.append(value)
        # Setting an Event takes its lock, which a hundred readers contend for; once set it needs no setting. The
        # sender clears it before each round, and the round then sees this frame, appended before the check.
        if not self._ready.is_set():
            self._ready.set()
        return dropped

    def take(self) -> bytes | None:
        if not self._items:  # the sender asks every queue in turn and most are empty: no lock, no notify for them
            return None
        with self._space:
            value = self._items.popleft() if self._items else None
            self._space.notify()
        return value

    def __len__(self) -> int:
        return len(self._items)


def frame_message(frame_fields: dict, jpeg: bytes, max_message_bytes: int, store: Callable[[], FrameStore]) -> bytes:
    """The encoded Frame; a JPEG that would make it larger than max_message_bytes goes to the frame store (every
    JPEG, at 0)."""
    value = encode(Frame(**frame_fields, jpeg=jpeg))
    if len(value) <= max_message_bytes:
        return value
    reference = store().put(frame_fields["camera_id"], frame_fields["seq"], jpeg)
    FRAMES_STORED.labels(frame_fields["camera_id"]).inc()
    return encode(Frame(**frame_fields, frame_ref=reference))


STOP_CHECK_S = 0.25  # how soon a pacing reader notices that it is stopped
WAITING_FOR_CLIP = "waiting for a new clip from the ITS API"


class CameraReader:
    """Reads one camera until stopped, reconnecting after failures; runs in its own thread."""

    def __init__(self, camera: CameraConfig, config: Config, queue: FrameQueue, health: CameraHealth,
                 resolver: Callable[[], ItsResolver | None], store: Callable[[], FrameStore], stop: threading.Event,
                 realtime: bool, max_frames: int | None, frames_by_reference: bool = False):
        self.camera = camera
        self.settings = config.producer
        # The largest message that carries its JPEG; every frame goes to the frame store by reference at 0.
        self.max_message_bytes = 0 if frames_by_reference else self.settings.max_message_bytes
        where = f"camera {camera.id}: source"
        for secret in source_variable_values(camera.source, where):
            keep_out_of_logs(secret)
        self.source = config.resolve_path(assets.resolve(source_with_variables(camera.source, where)))
        self.queue = queue
        self.health = health
        self.resolver = resolver
        self.store = store
        self.stop = stop
        self.realtime = realtime
        self.max_frames = max_frames
        self.quality = FrameQualityMonitor.from_config(config.producer)
        self.sequence = SequenceCounter()  # one per camera for the life of the process: survives reconnects
        self.published = PublishedUpTo()  # so does how far its stream was published
        # An ITS camera of recorded clips: the clips it read, and the one its source is (None until it is known)
        self.clips = PlayedClips() if camera.its is not None and camera.its.serves_clips else None
        self.clip: Clip | None = None
        self.lookup_failure: str | None = None  # why the last ITS lookup failed, until one succeeds
        self.rng = random.Random()
        self.unstored = LostFrames("not stored")
        self.queued = 0
        self.encode_seconds = ENCODE_SECONDS.labels(camera.id)  # labels() takes a lock that every reader shares

    def run(self) -> None:
        reconnecting = False
        while not self.stop.is_set():
            self.health.connecting()
            try:
                # Inside the attempt: an error in the lookup fails it, not the reader thread. A camera of clips asks
                # at the first attempt too, so that its first clip is known by its creation time.
                if reconnecting or self.clips is not None:
                    self.re_resolve(after_failure=reconnecting)
                if self.clips is not None:
                    self.read_clips()
                elif self.read_until_done(self.published):
                    self.health.ended("source ended")
                    log.info("camera %s: source ended after %d frames", self.camera.id, self.queued)
                return
            except CameraUnavailable as exc:
                # Only a recording ends for good. A live camera (a stream, a still image, a capture device) may come
                # back whatever failed, a local encoder's playlist not written yet or a device unplugged included:
                # it is retried and reported down meanwhile, and keeps its producer up to report it.
                if exc.permanent and source_kind(self.camera, self.source) is SourceKind.FILE:
                    self.health.ended(str(exc))
                    log.error("camera %s is down for good: %s", self.camera.id, exc)
                    return
                failures = self.health.failed(self.failure_reason(exc))
            except Exception as exc:  # whatever else went wrong (a bug, the disk), the camera is retried, not lost
                log.error("camera %s: %s in its reader: %s\n%s", self.camera.id, type(exc).__name__,
                          redacted(str(exc)), "".join(traceback.format_tb(exc.__traceback__)).rstrip())
                failures = self.health.failed(f"reader error: {type(exc).__name__}")
            delay = reconnect_delay(failures, self.settings.reconnect_backoff_base_s,
                                    self.settings.reconnect_backoff_max_s, self.settings.reconnect_jitter, self.rng)
            log.warning("camera %s %s (attempt %d): %s; retrying in %.1f s", self.camera.id,
                        self.health.state.value, failures, self.health.reason, delay)
            if self.stop.wait(delay):
                return
            CAMERA_RECONNECTS.labels(self.camera.id).inc()
            reconnecting = True

    def failure_reason(self, exc: CameraUnavailable) -> str:
        """The status reason for a failed attempt: an ITS lookup's failure first, since the last URL tried after it
        was likely to fail (the camera renamed or moved, its token expired)."""
        if self.lookup_failure is None:
            return str(exc)
        return f"{self.lookup_failure}; the last URL failed: {exc}"

    def re_resolve(self, after_failure: bool = True) -> None:
        """ITS URLs are tokenised and expire: ask the API for the current one before retrying (`after_failure`: the
        last URL failed, so a listing that handed it out is not reused). A camera of clips also asks for its next clip
        this way; `lookup_failure` says why the API could not tell."""
        resolver = self.resolver() if self.camera.its is not None else None
        if resolver is None:
            return
        try:
            listed = resolver.resolve(self.camera.its, failed_url=self.source if after_failure else None)
        except ItsApiError as exc:  # keep the last URL (a stream tries it anyway); the status says why it may not work
            log.warning("camera %s: ITS lookup failed, keeping the last URL: %s", self.camera.id, exc)
            self.lookup_failure = str(exc)
            return
        self.lookup_failure = None
        url = listed.url
        if url != self.source:
            log.info("camera %s: ITS API gave a new stream URL", self.camera.id)
            if shown(url) != shown(self.source):
                # Another stream (not the same one under a fresh token): its first frames are not compared with the
                # last one's, nor its timeline with the last one's. The same stream keeps both, so a picture frozen
                # across reconnections is still found frozen, and a playlist served again is not published again.
                self.quality.reset()
                self.published = PublishedUpTo()
            self.source = url
        if self.clips is not None:
            self.clip = self.listed_clip(listed.file_created)

    def listed_clip(self, made: str | None) -> Clip:
        """The clip at the source, listed with creation time `made`; raises CameraUnavailable where it must be told
        by its first bytes and they cannot be read."""
        return self.clips.listed(self.source, made, lambda url: clip_fingerprint(url, self.settings.read_timeout_s),
                                 time.monotonic())

    def pause(self, seconds: float) -> None:
        """Waits `seconds`, or until stopped. Not on the stop event: waiting on it takes its lock, which every reader
        would take for every frame it paces, so readers queued for that lock as well as for the GIL."""
        end = time.monotonic() + seconds
        while not self.stop.is_set() and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, STOP_CHECK_S))

    def read_clips(self) -> None:
        """Reads an ITS camera of recorded clips until stopped (or max_frames): a live camera whose video comes as
        MP4 clips, each replaced by a newer one. Each clip the API lists is played once, at its own speed; when it has
        played, the API is asked for a newer one at once, then at doubling intervals (producer.its_clip_poll_s up to
        its_clip_poll_max_s, the listing shared with the other cameras for its_refresh_min_s) while the camera is
        reported waiting (up for as long as its clips' own interval allows, PlayedClips.longest_wait_s, then stalled),
        or failing where the API cannot tell. A clip that breaks off raises CameraUnavailable; once its fresh URL is
        looked up it goes on after its last published frame, so no frame is published twice.

        A clip's frames are stamped when it began to play plus their offset in it, as a live stream's, not with the
        clip's filecreatetime plus their offset: the stages after take a capture time for when the picture was live
        (inference skips a frame older than model.max_frame_age_s, and a clip may be minutes old when it is listed),
        and neither that field's format and zone nor whether it marks the recording's start or end is documented."""
        polls = 0
        if self.clip is None:  # the API could not be asked: the clip is the one at the last URL it gave
            self.clip = self.listed_clip(None)
        while True:
            if not self.clip.ended:
                polls = 0
                if not self.read_until_done(self.clip.published):
                    return
                self.clip.ended = True
                log.info("camera %s: clip played (%d frames so far); asking the ITS API for a newer one",
                         self.camera.id, self.queued)
            else:
                polls += 1
                self.pause(reconnect_delay(polls, self.settings.its_clip_poll_s, self.settings.its_clip_poll_max_s,
                                           self.settings.reconnect_jitter, self.rng))
                if self.stop.is_set():
                    return
            self.re_resolve(after_failure=False)
            if self.resolver() is None:
                self.health.failed("the ITS API cannot be asked for a new clip: no usable API key (see the "
                                   "producer's log)")
            elif self.lookup_failure is not None:
                self.health.failed(f"{WAITING_FOR_CLIP}: {self.lookup_failure}")
            elif self.clip.ended:
                self.health.waiting(WAITING_FOR_CLIP, self.clips.longest_wait_s(self.settings.its_clip_first_wait_s,
                                                                                self.settings.its_clip_poll_max_s))

    def read_until_done(self, published: PublishedUpTo) -> bool:
        """Publishes frames until the source ends (files), max_frames or stop; returns whether the source ended.
        Raises CameraUnavailable."""
        for sampled in sample_frames(self.camera, self.source, self.realtime, self.settings, sleep=self.pause,
                                     published=published):
            if self.stop.is_set() or (self.max_frames is not None and self.queued >= self.max_frames):
                return False
            stall_reason = self.quality.check(sampled.picture.y, sampled.captured_at)
            with self.encode_seconds.time():
                jpeg, width, height = encode_jpeg(sampled.picture, self.camera.max_width, self.camera.jpeg_quality)
            fields = {"camera_id": self.camera.id, "seq": self.sequence.next(), "captured_at": sampled.captured_at,
                      "width": width, "height": height, **source_size_fields(sampled.picture, width),
                      "picture_fault": self.quality.fault}
            try:
                value = frame_message(fields, jpeg, self.max_message_bytes, self.store)
            except OSError as exc:  # a full disk or an unwritable frame store loses the frame, not the camera
                self.health.frames_dropped()
                self.unstored.record(self.camera.id, exc)
            else:
                dropped = self.queue.put(value, wait=not self.realtime, stop=self.stop)
                if dropped:
                    self.health.frames_dropped(dropped)
                    CAMERA_DROPPED.labels(self.camera.id).inc(dropped)
                self.queued += 1
            self.health.frame_captured(sampled.captured_at, stall_reason, sampled.source_fps)
        return not self.stop.is_set() and (self.max_frames is None or self.queued < self.max_frames)


class InFlightBytes:
    """Frame bytes handed to the Kafka client and not yet acknowledged or failed: the bound on what a broker outage
    piles up in memory. (The client's own queue limit is only a backstop: it frees a message's bytes after its
    acknowledgement has run, by when the sender has already filled the room again.)"""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._changed = threading.Condition()

    def add(self, size: int) -> None:
        with self._changed:
            self.bytes += size
            FRAMES_IN_FLIGHT_BYTES.set(self.bytes)

    def release(self, size: int) -> None:
        with self._changed:
            self.bytes -= size
            FRAMES_IN_FLIGHT_BYTES.set(self.bytes)
            self._changed.notify_all()

    def has_room(self) -> bool:
        return self.bytes < self.max_bytes

    def wait_for_room(self, timeout_s: float) -> bool:
        with self._changed:
            return self._changed.wait_for(self.has_room, timeout_s)


class LogLimit:
    """Lets a warning about a camera through at most once per interval, with the count of the occurrences held back
    since, so an outage repeating it for every camera and every frame or status does not flood the log."""

    def __init__(self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self.clock = clock
        self._lock = threading.Lock()
        self._held_back: dict[str, int] = {}  # keys: this process's configured cameras
        self._logged_at: dict[str, float] = {}

    def occurred(self, camera_id: str) -> int:
        """Counts one occurrence; returns how many to log now (this one and those held back), or 0 to log none."""
        with self._lock:
            count = self._held_back.get(camera_id, 0) + 1
            now = self.clock()
            if now - self._logged_at.get(camera_id, -self.interval_s) < self.interval_s:
                self._held_back[camera_id] = count
                return 0
            self._held_back[camera_id] = 0
            self._logged_at[camera_id] = now
            return count


class LostFrames:
    """Counts every frame lost one way (`how`: not delivered, not stored) as dropped; logs them per camera at most once
    per interval (the counter has them all)."""

    def __init__(self, how: str, log_interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.how = how
        self.log_limit = LogLimit(log_interval_s, clock)

    def record(self, camera_id: str, exc: BaseException) -> None:
        CAMERA_DROPPED.labels(camera_id).inc()
        if count := self.log_limit.occurred(camera_id):
            log.warning("camera %s: %d frame(s) %s: %s", camera_id, count, self.how, exc)


class FrameSender:
    """Publishes from every camera's queue in turn, so one busy camera cannot starve the others.

    It stops taking frames while `max_in_flight_bytes` are unacknowledged: during a broker outage the frames then wait
    in the bounded per-camera queues, which drop (and count) the oldest, and sending resumes as acknowledgements or
    delivery timeouts free room.
    """

    def __init__(self, producer: FrameClient, topic: str, queues: dict[str, FrameQueue],
                 health: dict[str, CameraHealth], ready: threading.Event, max_in_flight_bytes: int,
                 failures: LostFrames | None = None):
        self.producer = producer
        self.topic = topic
        self.queues = queues
        self.health = health
        self.ready = ready
        self.in_flight = InFlightBytes(max_in_flight_bytes)
        self.failures = failures or LostFrames("not delivered")
        self._turns = deque(queues)  # the camera whose frame goes first in the next round
        # Each camera's counters, looked up once: labels() takes a lock, hundreds of times a second here.
        self._metrics = {camera_id: (FRAMES_PRODUCED.labels(camera_id), FRAME_BYTES.labels(camera_id))
                         for camera_id in queues}

    def run(self, done: threading.Event) -> None:
        """Sends until `done` is set and every queue is empty."""
        while True:
            loop_went_round("producer-sender")  # it waits at most 0.1 s a round, a broker outage included
            self.ready.clear()  # before the round, so a frame queued during it wakes the next wait
            if self.send_round(finishing=done.is_set()):
                continue
            if done.is_set() and not any(self.queues.values()):
                return
            if self.in_flight.has_room():
                self.ready.wait(0.1)
            else:
                self.in_flight.wait_for_room(0.1)

    def send_round(self, finishing: bool) -> int:
        """Sends one frame from each camera that has one while there is room; returns how many were taken.

        The next round starts with the camera this one did not reach, so a full cap does not favour the first cameras.
        Once the readers are done (`finishing`) the cap is ignored: at most queue_max_frames per camera are left.
        """
        taken = 0
        for _ in range(len(self._turns)):
            if not finishing and not self.in_flight.has_room():
                break
            camera_id = self._turns[0]
            self._turns.rotate(-1)
            taken += self.send_one(camera_id)
        return taken

    def send_one(self, camera_id: str) -> int:
        value = self.queues[camera_id].take()
        if value is None:
            return 0
        size = len(value)
        self.in_flight.add(size)
        self.producer.send(self.topic, camera_id.encode(), value, functools.partial(self.acknowledged, camera_id, size))
        return 1

    def acknowledged(self, camera_id: str, size: int, error: NotDelivered | None) -> None:
        """Runs on the Kafka client's polling thread once the broker acknowledged the frame (`error` None) or the
        client gave up on it, and at once for a frame the client refuses."""
        self.in_flight.release(size)
        if error is not None:
            self.health[camera_id].frames_dropped()
            FRAMES_SEND_FAILED.labels(camera_id).inc()
            self.failures.record(camera_id, error)
            return
        self.health[camera_id].frame_sent()
        produced, sent_bytes = self._metrics[camera_id]
        produced.inc()
        sent_bytes.inc(size)


def frame_client(bootstrap_servers: str, settings: ProducerConfig) -> FrameClient:
    """The producer's Kafka client (librdkafka: infra.frame_client says why not kafka-python).

    A frame not acknowledged within frame_delivery_timeout_s is given up (and counted): a late frame is worthless to
    live analytics, and it would arrive in a flood with every other stale one when the broker returns. (Idempotence
    is off, as for every stage, which is what makes a short timeout safe.) Frames wait up to 20 ms to share a
    request, and a batch holds several frames of a partition. The sender's cap on bytes in flight bounds memory; the
    client's own queue limit, twice that, only catches what the cap cannot see (statuses, bytes the client frees
    late).
    """
    return FrameClient(bootstrap_servers, delivery_timeout_ms=int(settings.frame_delivery_timeout_s * 1000),
                       linger_ms=20, batch_bytes=settings.max_message_bytes,
                       max_queued_bytes=2 * (settings.max_in_flight_bytes + settings.max_message_bytes))


class CameraGauges:
    """One camera's status gauges, looked up once: labels() takes a lock and formats its labels, and the reporter
    sets seven gauges per camera twice a second, holding the GIL that the camera readers wait for."""

    def __init__(self, camera_id: str):
        self.camera_id = camera_id
        self.up = CAMERA_UP.labels(camera_id)
        self.states = {state: CAMERA_STATE.labels(camera_id, state.value) for state in CameraState}
        self.fps = CAMERA_FPS.labels(camera_id)
        # Made at the first frame: a series made earlier would read 0 s, a fresh frame from a camera that sent none.
        self.frame_age = None

    def export(self, status: CameraStatus) -> None:
        self.up.set(1 if status.state is CameraState.UP else 0)
        for state, gauge in self.states.items():
            gauge.set(1 if state is status.state else 0)
        self.fps.set(status.fps)
        if status.last_frame_age_s is not None:
            if self.frame_age is None:
                self.frame_age = CAMERA_FRAME_AGE.labels(self.camera_id)
            self.frame_age.set(status.last_frame_age_s)


class StatusReporter:
    """Camera status to Prometheus and the camera-status topic: at once on a state change, else every interval."""

    def __init__(self, producer: FrameClient, topic: str, health: dict[str, CameraHealth], interval_s: float,
                 undelivered_log: LogLimit | None = None):
        self.producer = producer
        self.topic = topic
        self.health = health
        self.interval_s = interval_s
        self.undelivered_log = undelivered_log or LogLimit()
        self._published: dict[str, tuple[CameraState, str, float]] = {}  # one per configured camera
        self._gauges = {camera_id: CameraGauges(camera_id) for camera_id in health}

    def report(self, force: bool = False) -> list[CameraStatus]:
        reported = []
        for camera_id, health in self.health.items():
            status = health.status()
            self._gauges[camera_id].export(status)
            state, reason, at = self._published.get(camera_id, (None, None, 0.0))
            if force or (status.state, status.reason) != (state, reason) or status.at - at >= self.interval_s:
                self._published[camera_id] = (status.state, status.reason, status.at)
                self.producer.send(self.topic, camera_id.encode(), encode(status),
                                   functools.partial(self.acknowledged, camera_id))
                reported.append(status)
        return reported

    def acknowledged(self, camera_id: str, error: NotDelivered | None) -> None:
        """A status the client gave up on (the broker away for longer than the delivery timeout) is sent again at
        the next report."""
        if error is not None:
            self._published.pop(camera_id, None)
            if count := self.undelivered_log.occurred(camera_id):
                log.warning("camera %s: %d status(es) not delivered (%s); sending the status again at the next report",
                            camera_id, count, error)


READER_SWITCH_INTERVAL_S = 0.0005


def configure_reader_process() -> None:
    """Process-wide settings for a producer process, whose work is one reader thread per camera.

    The readers spend most of their time in decoding, scaling and JPEG code that runs without the GIL, and hold it
    only briefly between those calls: a reader coming back for it waits for whichever thread holds it to yield, at
    the latest after the switch interval (5 ms by default, longer than a whole frame's work), so with a hundred
    cameras the cores stood idle while readers queued for it. OpenCV's own worker pool on top of the readers only
    adds hand-offs between threads for the small per-frame operations.
    """
    sys.setswitchinterval(READER_SWITCH_INTERVAL_S)
    cv2.setNumThreads(1)


def run_producer(config: Config, producer: FrameClient, stop: threading.Event, realtime: bool = True,
                 max_frames: int | None = None, camera_ids: list[str] | None = None,
                 on_status: Callable[[list[CameraStatus]], None] | None = None,
                 frames_by_reference: bool = False) -> dict[str, int]:
    """Runs this shard's cameras (or those named) until every source ends or `stop` is set. Only recordings (files,
    folders of pictures, http(s) MP4s) end: a producer with a live camera runs until stopped, an ITS camera of
    recorded clips included. With `frames_by_reference` every frame goes to the frame store and its message carries
    the reference, whatever producer.max_message_bytes says.

    Returns the frames queued per camera. A camera that cannot be read is reported down, never fatal.
    """
    settings = config.producer
    if camera_ids is None:
        cameras = cameras_for_shard(config.cameras, settings.shard_index, settings.shard_count)
    else:  # cameras named explicitly are read whatever the shard
        cameras = [camera for camera in config.cameras if camera.id in camera_ids]
    ready = threading.Event()
    queues = {camera.id: FrameQueue(settings.queue_max_frames, ready) for camera in cameras}
    health = {camera.id: CameraHealth(camera.id, settings.down_after_failures, settings.status_interval_s,
                                      settings.stall_after_s(camera.fps), camera.fps) for camera in cameras}
    resolver = lazy(lambda: its_resolver(config, cameras))
    store = lazy(lambda: open_frame_store(config))
    readers = [CameraReader(camera, config, queues[camera.id], health[camera.id], resolver, store, stop, realtime,
                            max_frames, frames_by_reference) for camera in cameras]
    threads = [threading.Thread(target=reader.run, name=f"camera-{reader.camera.id}", daemon=True)
               for reader in readers]
    readers_done = threading.Event()
    frame_sender = FrameSender(producer, config.broker.topics.frames, queues, health, ready,
                               settings.max_in_flight_bytes)
    sender = threading.Thread(target=frame_sender.run, args=(readers_done,), name="frame-sender", daemon=True)
    reporter = StatusReporter(producer, config.broker.topics.camera_status, health, settings.status_interval_s)
    log.info("producer shard %d/%d: %d cameras%s", settings.shard_index, settings.shard_count, len(cameras),
             ", every frame by reference" if frames_by_reference else "")
    sender.start()
    for thread in threads:
        thread.start()
    next_expiry = time.monotonic() + settings.frame_store_ttl_s / 10
    expiry_failing = False
    while any(thread.is_alive() for thread in threads) and not stop.wait(min(0.5, settings.status_interval_s)):
        # Statuses and the store's expiry come from this loop: hung (a frame store mount that hangs), the cameras' last
        # statuses would stand, up, for ever. Marked, it fails /healthz and raises CityguardStageStuck.
        loop_went_round("producer")
        BROKER_CONNECTED.labels("producer").set(1 if producer.bootstrap_connected() else 0)
        statuses = reporter.report()
        if on_status and statuses:
            on_status(statuses)
        if time.monotonic() >= next_expiry:
            expiry_failing = expire_frames(store(), expiry_failing)
            next_expiry = time.monotonic() + settings.frame_store_ttl_s / 10
    # Readers notice `stop` between frames; one blocked in a stream read is a daemon and is not waited for.
    deadline = time.monotonic() + 2.0
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    readers_done.set()
    sender.join()
    final = reporter.report(force=True)
    if on_status:
        on_status(final)
    producer.flush()
    return {reader.camera.id: reader.queued for reader in readers}


def expire_frames(store: FrameStore, failing: bool) -> bool:
    """Expires the store's old frames; returns whether that failed. A store that cannot be read (a network mount gone
    away) only keeps its old frames while it cannot: the cameras read on, and the failure is logged once until an
    expiry succeeds again, not at every try."""
    try:
        store.expire()
    except OSError as exc:
        if not failing:
            log.error("frame store: old frames cannot be expired, kept until they can: %s", exc)
        return True
    if failing:
        log.info("frame store: old frames are expired again")
    return False


def its_resolver(config: Config, cameras: list[CameraConfig]) -> ItsResolver | None:
    refs = [camera.its for camera in cameras if camera.its is not None]
    if not refs:
        return None
    try:
        client = ItsClient.from_config(config.producer)
    except (ItsApiError, ConfigError) as exc:  # no key, or one no request can carry: the cameras keep their URLs
        log.error("ITS cameras cannot be re-resolved: %s", exc)
        return None
    return ItsResolver(client, refs, config.producer.its_refresh_min_s)


def lazy(factory: Callable):
    """A thread-safe factory that builds its value on first use (the frame store only when a frame is too big)."""
    lock = threading.Lock()
    built: list = []

    def get():
        with lock:
            if not built:
                built.append(factory())
            return built[0]

    return get

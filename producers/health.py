"""Camera health as plain state: up / degraded / reconnecting / stalled / down with a reason, achieved fps, reconnects,
dropped frames, last frame age; frozen and blank frame detection; reconnect backoff. No Kafka, no Prometheus here.
"""
from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable

import cv2
import numpy as np

from infra.backoff import backoff_delay
from schemas import CameraState, CameraStatus, PictureFault
from schemas.settings.capture import ProducerConfig

THUMBNAIL_SIZE = (64, 36)  # enough to see a frozen or blank picture, cheap enough for every frame
# A picture this much of which is darker than black_max_mean is black: a camera name or a clock burned into it, and
# sensor noise, spread its grey levels but cover far less, while a night scene's lit road and lamps cover more.
BLACK_SHARE = 0.95
# A camera is degraded while it delivers under DEGRADED_BELOW of the rate it should deliver: its configured fps, or
# the rate the source itself declares where that is lower (a 2 fps stream); a source that declares none (a still
# image, MJPEG) is held to its fps. The window spans several HLS segments (2-10 s, each arriving at once), so a burst
# moves the measured rate by a segment's share at most. A few per cent (a frame every 10-30 s at 5 fps) is far below the
# bound, while a source offering a fifth of its configured rate (a still image answered once a second, polled at 5 fps)
# is twice above it. A degraded camera is up again only from RECOVERED_FROM, so a rate at the bound does not flap.
# The window is the last RATE_WINDOW_S the camera was connected (from a connection's first frame to its failure), so it
# and the hysteresis carry over reconnections (a server closing the stream every minute), and the time spent
# reconnecting, reported as such, does not count as time without frames. After an outage longer than the window, what
# the camera delivered before says nothing of it: its rate is measured afresh.
RATE_WINDOW_S = 60.0
DEGRADED_BELOW = 0.1
RECOVERED_FROM = 0.2


def reconnect_delay(attempt: int, base_s: float, max_s: float, jitter: float, rng: random.Random) -> float:
    """Exponential backoff for the attempt-th consecutive failure (1-based), randomised by +-jitter but never beyond
    `max_s`, the longest wait the settings promise: at the cap it is randomised downwards only, as capping a wait
    drawn above it would give most cameras that failed together the same wait again."""
    delay = backoff_delay(attempt, base_s, max_s)
    return rng.uniform(delay * (1 - jitter), min(max_s, delay * (1 + jitter)))


class FrameQualityMonitor:
    """Says why a stream that still delivers frames is useless: a frozen picture or blank (e.g. black) frames."""

    def __init__(self, frozen_after_s: float, frozen_max_difference: float, blank_after_s: float,
                 blank_max_stddev: float, black_max_mean: float):
        self.frozen_after_s = frozen_after_s
        self.frozen_max_difference = frozen_max_difference
        self.blank_after_s = blank_after_s
        self.blank_max_stddev = blank_max_stddev
        self.black_max_mean = black_max_mean
        self._previous: np.ndarray | None = None
        self._frozen_since: float | None = None
        self._blank_since: float | None = None
        self.fault: PictureFault | None = None  # what the last check found, whose reason it returned

    @classmethod
    def from_config(cls, settings: ProducerConfig) -> FrameQualityMonitor:
        return cls(settings.frozen_after_s, settings.frozen_max_difference, settings.blank_after_s,
                   settings.blank_max_stddev, settings.black_max_mean)

    def reset(self) -> None:
        """Forget the history (after a reconnect the first frames must not count as frozen)."""
        self._previous = None
        self._frozen_since = None
        self._blank_since = None
        self.fault = None

    def check(self, grey: np.ndarray, at: float) -> str | None:
        """The reason the picture is unusable as of this frame (its grey levels: a decoded frame's luma plane), or
        None while it is fine; `fault` says which fault it is."""
        self.fault = None
        # A sparse grid, still at least 4 x 4 pixels averaged into each thumbnail pixel so that sensor noise does not
        # look like motion, costs a fifth of averaging every pixel.
        step = max(1, min(grey.shape[1] // (4 * THUMBNAIL_SIZE[0]), grey.shape[0] // (4 * THUMBNAIL_SIZE[1])))
        thumbnail = cv2.resize(grey[::step, ::step], THUMBNAIL_SIZE, interpolation=cv2.INTER_AREA)
        previous, self._previous = self._previous, thumbnail
        # Two OpenCV calls, each releasing the GIL once, instead of NumPy's several passes that each release it and
        # take it back: a hundred camera readers contend for it.
        mean, stddev = (float(value[0, 0]) for value in cv2.meanStdDev(thumbnail))
        black = self.is_black(thumbnail, mean)
        if black or stddev < self.blank_max_stddev:
            self._frozen_since = None  # a blank picture is reported as blank, not as frozen
            self._blank_since = at if self._blank_since is None else self._blank_since
            if at - self._blank_since >= self.blank_after_s:
                self.fault = PictureFault.BLANK
                what = "black" if black or mean <= self.black_max_mean else f"blank (uniform grey level {mean:.0f})"
                return f"{what} frames for {at - self._blank_since:.0f} s"
            return None
        self._blank_since = None
        if previous is None or cv2.norm(thumbnail, previous, cv2.NORM_L1) / thumbnail.size > self.frozen_max_difference:
            self._frozen_since = None
            return None
        self._frozen_since = at if self._frozen_since is None else self._frozen_since
        if at - self._frozen_since >= self.frozen_after_s:
            self.fault = PictureFault.FROZEN
            return f"frozen: identical frames for {at - self._frozen_since:.0f} s"
        return None

    def is_black(self, thumbnail: np.ndarray, mean: float) -> bool:
        """Whether at least BLACK_SHARE of the thumbnail is darker than black_max_mean (counted only where the mean
        allows it, so a lit picture costs no more OpenCV calls)."""
        if mean > BLACK_SHARE * self.black_max_mean + (1 - BLACK_SHARE) * 255:
            return False
        dark = cv2.countNonZero(cv2.compare(thumbnail, self.black_max_mean, cv2.CMP_LE))
        return dark >= BLACK_SHARE * thumbnail.size


class CameraHealth:
    """What the producer knows about one camera. Written by its reader and by the sender, read by the reporter."""

    def __init__(self, camera_id: str, down_after_failures: int, fps_window_s: float, no_frame_stall_s: float,
                 configured_fps: float, clock: Callable[[], float] = time.time):
        self.camera_id = camera_id
        self.down_after_failures = down_after_failures
        self.fps_window_s = fps_window_s
        self.no_frame_stall_s = no_frame_stall_s
        self.configured_fps = configured_fps
        self.clock = clock
        self.started_at = clock()
        self.state = CameraState.RECONNECTING
        self.reason = "connecting"
        self.consecutive_failures = 0
        self.reconnects = 0
        self.dropped_frames = 0
        self.last_frame_at: float | None = None
        self.finished = False
        self._connection_frames_since: float | None = None  # when this connection's first frame arrived
        self._sent_at: deque[float] = deque(maxlen=10_000)  # trimmed to the fps window; maxlen is a backstop
        self._connected_s = 0.0  # seconds the earlier connections were connected since the rate was measured afresh
        self._disconnected_at: float | None = None  # when the last connection that delivered frames failed
        # Each frame's time connected (_connected_clock), trimmed to RATE_WINDOW_S; maxlen is a backstop.
        self._captured_at: deque[float] = deque(maxlen=10_000)
        self._source_fps: float | None = None
        self._degraded = False
        self._waiting_since: float | None = None  # when the source last had nothing new, while it still has not
        self._longest_wait_s = 0.0  # how long it may have nothing new while it is fine
        self._lock = threading.Lock()

    def connecting(self) -> None:
        """A (re)connection attempt starts; after a failure it counts as a reconnect."""
        with self._lock:
            if self.consecutive_failures:
                self.reconnects += 1

    def frame_captured(self, at: float, stall_reason: str | None, source_fps: float | None) -> None:
        """A frame was read (captured at `at`) from a source that declares source_fps (None: declares none)."""
        now = self.clock()
        with self._lock:
            self._source_fps = source_fps
            # Failures count on until the connection has delivered frames for as long as a stall takes to notice: a
            # source that hands out a burst and then stalls at every attempt (an HLS playlist no longer updated) backs
            # off further each time and goes down.
            if self._connection_frames_since is None:
                self._connection_frames_since = now
                if self._disconnected_at is not None and now - self._disconnected_at > RATE_WINDOW_S:  # a long outage
                    self._captured_at.clear()
                    self._connected_s = 0.0
                    self._degraded = False
                self._disconnected_at = None
                self._waiting_since = None
            elif now - self._connection_frames_since >= self.no_frame_stall_s:
                self.consecutive_failures = 0
            self._captured_at.append(self._connected_clock(now))
            self.last_frame_at = at
            if stall_reason:
                self.state, self.reason = CameraState.STALLED, stall_reason
            else:
                self.state, self.reason = CameraState.UP, ""

    def frame_sent(self) -> None:
        with self._lock:
            self._sent_at.append(self.clock())

    def frames_dropped(self, count: int = 1) -> None:
        with self._lock:
            self.dropped_frames += count

    def failed(self, reason: str) -> int:
        """Records a failed read or connection attempt; returns the number of consecutive failures."""
        now = self.clock()
        with self._lock:
            # A wait goes on through failures (an ITS API that errs between clips): only a frame ends it, so a camera
            # whose asks alternate between failing and "nothing new" is stalled once its clips are overdue.
            self._connection_ended(now)
            self.consecutive_failures += 1
            down = self.consecutive_failures >= self.down_after_failures
            self.state = CameraState.DOWN if down else CameraState.RECONNECTING
            self.reason = reason
            return self.consecutive_failures

    def waiting(self, reason: str, longest_wait_s: float) -> None:
        """The source has nothing new to read yet, and nothing failed (an ITS camera of recorded clips whose clip has
        played, while the API lists no newer one): the failures before are forgiven, and the camera is up, with the
        reason, while it has waited no longer than longest_wait_s (from the first of these calls since the last frame,
        failures between them included), stalled after."""
        now = self.clock()
        with self._lock:
            self._connection_ended(now)
            if self._waiting_since is None:
                self._waiting_since = now
            self._longest_wait_s = longest_wait_s
            self.consecutive_failures = 0
            self.state, self.reason = CameraState.UP, reason

    def _connection_ended(self, now: float) -> None:
        """The connection that delivered frames, if one did, is over. Called with the lock held."""
        if self._connection_frames_since is not None:
            self._connected_s += now - self._connection_frames_since
            self._connection_frames_since = None
            self._disconnected_at = now

    def ended(self, reason: str) -> None:
        """The source is finished for good (a file played to its end, a missing file): down, no retry."""
        with self._lock:
            self.state, self.reason, self.finished = CameraState.DOWN, reason, True

    def status(self) -> CameraStatus:
        now = self.clock()
        with self._lock:
            while self._sent_at and now - self._sent_at[0] > self.fps_window_s:
                self._sent_at.popleft()
            window = min(self.fps_window_s, max(now - self.started_at, 1e-3))
            state, reason = self.state, self.reason
            age = None if self.last_frame_at is None else max(0.0, now - self.last_frame_at)
            if self._waiting_since is not None and state is CameraState.UP:
                if now - self._waiting_since > self._longest_wait_s:
                    state, reason = CameraState.STALLED, (f"{reason} for {now - self._waiting_since:.0f} s, longer "
                                                          f"than the {self._longest_wait_s:.0f} s it may take")
            elif state is CameraState.UP and age is not None and age > self.no_frame_stall_s:
                state, reason = CameraState.STALLED, f"no frame for {age:.0f} s"
            elif state is CameraState.UP and (shortfall := self._too_few_frames(now)):
                state, reason = CameraState.DEGRADED, shortfall
            return CameraStatus(camera_id=self.camera_id, state=state, reason=reason,
                                fps=len(self._sent_at) / window, reconnects=self.reconnects,
                                dropped_frames=self.dropped_frames, last_frame_age_s=age, at=now)

    def _connected_clock(self, now: float) -> float:
        """Seconds the camera has been connected since its rate was last measured afresh. Called with the lock held."""
        current = 0.0 if self._connection_frames_since is None else now - self._connection_frames_since
        return self._connected_s + current

    def _too_few_frames(self, now: float) -> str | None:
        """Why the camera delivers too few frames, or None; judged once it has been connected for a whole
        RATE_WINDOW_S. Called with the lock held."""
        connected = self._connected_clock(now)
        while self._captured_at and connected - self._captured_at[0] > RATE_WINDOW_S:
            self._captured_at.popleft()
        if connected < RATE_WINDOW_S:
            return None
        expected = min(self.configured_fps, self._source_fps or self.configured_fps)
        delivered = len(self._captured_at) / RATE_WINDOW_S
        self._degraded = delivered < (RECOVERED_FROM if self._degraded else DEGRADED_BELOW) * expected
        if not self._degraded:
            return None
        source = f", the source's own {expected:g} fps" if expected < self.configured_fps else ""
        return (f"too few frames: {delivered:.2f} fps over the last {RATE_WINDOW_S:.0f} s, {self.configured_fps:g} "
                f"fps configured{source}")

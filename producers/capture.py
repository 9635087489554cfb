"""Reading cameras: video files, HLS, RTSP and webcams through OpenCV, still-image URLs over HTTP; sampling at a
configured rate, resizing and JPEG encoding. No Kafka here.
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import cv2
import numpy as np

from producers.http_fetch import HTTP_SCHEMES, FetchError, fetch
from schemas.settings.capture import ProducerConfig, SourceKind
from schemas.settings.config import CameraConfig

URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
IMAGE_PATH = re.compile(r"\.(jpe?g|png|bmp)$", re.IGNORECASE)
LIVE_KINDS = (SourceKind.HLS, SourceKind.RTSP, SourceKind.WEBCAM)


class CameraUnavailable(RuntimeError):
    """The source could not be opened or stopped delivering frames; the text says which and why.

    `permanent` failures (a local file that does not exist) are not retried.
    """

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class SampledFrame:
    captured_at: float  # unix seconds
    image: np.ndarray  # BGR


def source_kind(camera: CameraConfig, source: str) -> SourceKind:
    """The configured kind, or the one the source string implies."""
    if camera.kind is not SourceKind.AUTO:
        return camera.kind
    if source.isdigit():
        return SourceKind.WEBCAM
    if source.lower().startswith(("rtsp://", "rtsps://")):
        return SourceKind.RTSP
    path = source.split("?", 1)[0]
    if URL.match(source):
        if path.lower().endswith(".m3u8"):
            return SourceKind.HLS
        if IMAGE_PATH.search(path):
            return SourceKind.IMAGE
        if path.lower().endswith((".mp4", ".avi", ".mkv", ".mov")):
            return SourceKind.FILE
        return SourceKind.HLS  # other http(s) streams (ITS tokenised URLs) are live playlists
    return SourceKind.FILE


def configure_ffmpeg(settings: ProducerConfig) -> None:
    """OpenCV reads FFmpeg options from the environment at every open; RTSP transport is one per process."""
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"rtsp_transport;{settings.rtsp_transport}"


def open_capture(source: str, open_timeout_s: float = 30.0, read_timeout_s: float = 30.0) -> cv2.VideoCapture:
    if source.isdigit():
        capture = cv2.VideoCapture(int(source))
    else:
        capture = cv2.VideoCapture(source, cv2.CAP_FFMPEG, [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1000),
        ])
    if not capture.isOpened():
        capture.release()
        missing_file = not URL.match(source) and not source.isdigit() and not os.path.exists(source)
        reason = "no such file" if missing_file else "cannot open"
        raise CameraUnavailable(f"{reason}: {source}", permanent=missing_file)
    return capture


def encode_jpeg(image: np.ndarray, max_width: int, quality: int) -> tuple[bytes, int, int]:
    """JPEG bytes and the encoded size; images wider than max_width are scaled down keeping the aspect ratio."""
    height, width = image.shape[:2]
    if width > max_width:
        scale = max_width / width
        image = cv2.resize(image, (max_width, round(height * scale)), interpolation=cv2.INTER_AREA)
        height, width = image.shape[:2]
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buffer.tobytes(), width, height


def sample_frames(
    camera: CameraConfig,
    source: str,
    realtime: bool = True,
    settings: ProducerConfig | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[SampledFrame]:
    """Frames from one source at `camera.fps`; raises CameraUnavailable when the source fails.

    Files are sampled on their own timeline (frame index / native fps), so a 10 fps clip sampled at 5 fps keeps every
    second frame whether or not playback is paced; with `realtime` the file plays at its natural speed, like a
    camera. Live sources are read continuously (so the decoder never falls behind) and sampled on the wall clock.
    Frames that are not sampled are only grabbed, never converted to BGR.
    """
    settings = settings or ProducerConfig()
    kind = source_kind(camera, source)
    if kind is SourceKind.IMAGE:
        yield from poll_image(camera, source, settings.read_timeout_s, settings.image_max_bytes, clock, sleep)
    elif kind in LIVE_KINDS:
        yield from _sample_live(camera, source, settings, clock)
    else:
        yield from _sample_file(camera, source, settings, realtime, clock, sleep)


class MediaClock:
    """Wall-clock capture times for a live stream's frames, from their presentation timestamps.

    HLS delivers a whole segment at once, so arrival times bunch up; presentation times keep the frames evenly
    spaced. The offset between them is the smallest seen (arrival minus media time of the last frame of a burst), so
    times never run ahead of the clock; after the first burst they are evenly spaced. It is re-anchored when the
    stream falls more than `resync_s` behind or its timestamps jump.
    """

    def __init__(self, resync_s: float = 5.0):
        self.resync_s = resync_s
        self._offset: float | None = None  # wall time minus media time

    def captured_at(self, media_s: float, now: float) -> float:
        if self._offset is None or now - (self._offset + media_s) > self.resync_s:
            self._offset = now - media_s
        self._offset = min(self._offset, now - media_s)
        return self._offset + media_s


def _sample_live(camera: CameraConfig, source: str, settings: ProducerConfig,
                 clock: Callable[[], float]) -> Iterator[SampledFrame]:
    """Sampled on the stream's own timeline (presentation timestamps) where it has one, else on arrival time."""
    capture = open_capture(source, settings.open_timeout_s, settings.read_timeout_s)
    interval = 1.0 / camera.fps
    media_clock = MediaClock()
    started = clock()
    next_sample: float | None = None
    try:
        while True:
            if not capture.grab():
                raise CameraUnavailable(f"stream ended or broke: {source}")
            now = clock()
            position_ms = capture.get(cv2.CAP_PROP_POS_MSEC)
            media_s = position_ms / 1000 if position_ms > 0 else now - started
            if next_sample is None or media_s < next_sample - 2 * interval - 1.0:  # first frame, or timestamps reset
                next_sample = media_s
            if media_s + 1e-9 < next_sample:
                continue
            ok, image = capture.retrieve()
            if not ok:
                raise CameraUnavailable(f"undecodable frame: {source}")
            # Skip the sampling slots missed while the stream stalled instead of bursting to catch up.
            next_sample += interval * max(1, int((media_s - next_sample) // interval) + 1)
            yield SampledFrame(media_clock.captured_at(media_s, now), image)
    finally:
        capture.release()


def _sample_file(camera: CameraConfig, source: str, settings: ProducerConfig, realtime: bool,
                 clock: Callable[[], float], sleep: Callable[[float], None]) -> Iterator[SampledFrame]:
    capture = open_capture(source, settings.open_timeout_s, settings.read_timeout_s)
    native_fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    if not 0 < native_fps < 1000:
        native_fps = 25.0  # containers without a rate: assume PAL
    interval = 1.0 / camera.fps
    started = clock()
    media_offset = 0.0  # media time already played in earlier loops of a looping file
    next_sample = 0.0
    index = 0
    try:
        while True:
            if not capture.grab():
                if not camera.loop or index == 0:
                    return
                media_offset += index / native_fps
                index = 0
                capture.release()
                capture = open_capture(source, settings.open_timeout_s, settings.read_timeout_s)
                continue
            media_time = media_offset + index / native_fps
            index += 1
            if media_time + 1e-9 < next_sample:
                continue
            next_sample += interval
            ok, image = capture.retrieve()
            if not ok:
                raise CameraUnavailable(f"undecodable frame {index} in {source}")
            if realtime:
                delay = started + media_time - clock()
                if delay > 0:
                    sleep(delay)
                yield SampledFrame(clock(), image)
            else:
                # Unpaced replay (tests, benchmarks): timestamps still follow the media timeline.
                yield SampledFrame(started + media_time, image)
    finally:
        capture.release()


def poll_image(camera: CameraConfig, url: str, timeout_s: float, max_bytes: int, clock: Callable[[], float],
               sleep: Callable[[float], None]) -> Iterator[SampledFrame]:
    """A still-image camera: one HTTP GET of its JPEG per sampling interval, each within timeout_s and max_bytes.

    Every failure is CameraUnavailable; a URL that is not http(s) is a permanent one (a local image is a file)."""
    if urlsplit(url).scheme.lower() not in HTTP_SCHEMES:
        raise CameraUnavailable(f"still-image source {url} is not an http(s) URL", permanent=True)
    interval = 1.0 / camera.fps
    next_fetch = clock()
    while True:
        delay = next_fetch - clock()
        if delay > 0:
            sleep(delay)
        fetched_at = clock()
        try:
            body = fetch(url, max_bytes, timeout_s)
        except FetchError as exc:
            raise CameraUnavailable(f"still-image URL {url}: {exc.reason}") from None
        image = cv2.imdecode(np.frombuffer(body, dtype=np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise CameraUnavailable(f"still-image URL {url} did not return an image ({len(body)} bytes)")
        next_fetch = max(next_fetch + interval, fetched_at)
        yield SampledFrame(fetched_at, image)

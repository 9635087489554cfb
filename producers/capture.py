"""Reading cameras with OpenCV: sampling at a configured rate, resizing and JPEG encoding. No Kafka here."""
from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from cityguard.config import CameraConfig

LIVE_SOURCE = re.compile(r"^(rtsp|rtmp|http|https|udp|tcp)://", re.IGNORECASE)


class CameraUnavailable(RuntimeError):
    """The source could not be opened or stopped delivering frames; the text says which and why."""


@dataclass(frozen=True)
class SampledFrame:
    captured_at: float  # unix seconds
    image: np.ndarray  # BGR


def is_live(source: str) -> bool:
    return bool(LIVE_SOURCE.match(source)) or source.isdigit()


def open_capture(source: str) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(int(source) if source.isdigit() else source)
    if not capture.isOpened():
        capture.release()
        raise CameraUnavailable(f"cannot open video source {source!r}")
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
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[SampledFrame]:
    """Frames from one source at `camera.fps`.

    Files are sampled on their own timeline (frame index / native fps), so a 10 fps clip sampled at 5 fps keeps every
    second frame whether or not playback is paced; with `realtime` the file plays at its natural speed, like a
    camera. Live sources are read continuously (so the decoder never falls behind) and sampled on the wall clock.
    """
    capture = open_capture(source)
    live = is_live(source)
    native_fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    if not live and not 0 < native_fps < 1000:
        native_fps = 25.0  # containers without a rate: assume PAL
    interval = 1.0 / camera.fps
    started = clock()
    media_offset = 0.0  # media time already played in earlier loops of a looping file
    next_sample = 0.0
    index = 0
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                if live:
                    raise CameraUnavailable(f"camera {camera.id}: stream ended or broke ({source})")
                if not camera.loop or index == 0:
                    return
                media_offset += index / native_fps
                index = 0
                capture.release()
                capture = open_capture(source)
                continue
            if live:
                now = clock()
                if now - started < next_sample:
                    continue
                next_sample += interval * max(1, int((now - started - next_sample) // interval) + 1)
                yield SampledFrame(now, image)
                continue
            media_time = media_offset + index / native_fps
            index += 1
            if media_time + 1e-9 < next_sample:
                continue
            next_sample += interval
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

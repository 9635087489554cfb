"""Reading cameras: video files, HLS and MJPEG streams over HTTP, RTSP and capture devices decoded with FFmpeg (PyAV),
still-image URLs over HTTP; sampling at a configured rate. No Kafka here.
"""
from __future__ import annotations

import functools
import glob
import hashlib
import logging
import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import av
import cv2
import numpy as np
import simplejpeg
from av.codec.hwaccel import HWAccel
from av.format import Flags

from infra.redaction import URL, shown
from producers.http_fetch import FetchError, fetch
from producers.picture import YuvPicture
from schemas.settings.capture import HTTP_SCHEMES, ProducerConfig, SourceKind
from schemas.settings.config import CameraConfig

log = logging.getLogger(__name__)

IMAGE_PATH = re.compile(r"\.(jpe?g|png|bmp)$", re.IGNORECASE)
# How IP cameras name their MJPEG streams: /mjpg/video.mjpg, /axis-cgi/mjpg/video.cgi, mjpg-streamer's ?action=stream.
# Others (an opaque /video.cgi) are told by their answer: FFmpeg reads what it is sent, and MJPEG has no timestamps.
MJPEG_URL = re.compile(r"\.mjpe?g(\?|$)|/mjpe?g(/|\?|$)|[?&]action=stream(&|$)", re.IGNORECASE)
MAX_IMAGE_PIXELS = 7680 * 4320  # 8K UHD, the widest a camera may be (CameraConfig.max_width): a still image's cap
LIVE_KINDS = (SourceKind.HLS, SourceKind.MJPEG, SourceKind.RTSP, SourceKind.WEBCAM)
# A folder of these is a clip of numbered pictures (frames exported from a recorder, anomaly datasets' frame folders).
SEQUENCE_PICTURE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MAX_UNDECODABLE_PACKETS = 250  # in a row (10 s at 25 fps): single corrupt packets of a lossy stream are skipped
# A live HLS playlist read again after a reconnection serves its last segments again, and one no longer updated serves
# the same ones at every attempt; their timestamps carry on across connections. A connection's first frames up to
# this far behind the last one published are such repeats; further behind is a restarted encoder's new timeline.
REPEAT_WINDOW_S = 60.0
# A clip's first bytes: its container's header and the start of its first picture's coded data, which tell two clips
# apart even where the header alone is alike (an MP4 whose index comes at its end, a fragmented MP4).
CLIP_FINGERPRINT_BYTES = 64 * 1024


class CameraUnavailable(RuntimeError):
    """The source could not be opened or stopped delivering frames; the text says which and why.

    `permanent` failures (a local file that does not exist) end a recording's camera for good; a live camera is
    retried whatever failed.
    """

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class SampledFrame:
    captured_at: float  # unix seconds
    picture: YuvPicture
    source_fps: float | None = None  # the frame rate the source itself declares; None where it declares none


@dataclass
class PublishedUpTo:
    """How far a camera's HLS stream or recording has been published, in its own time, across its connections."""

    stream_s: float | None = None

    def repeats(self, stream_s: float) -> bool:
        return self.stream_s is not None and self.stream_s - REPEAT_WINDOW_S <= stream_s <= self.stream_s


def source_kind(camera: CameraConfig, source: str) -> SourceKind:
    """The configured kind, or the one the source string implies (for an ITS camera of recorded clips, the API's
    word that it serves MP4 files, whatever its URL looks like)."""
    if camera.kind is not SourceKind.AUTO:
        return camera.kind
    if camera.its is not None and camera.its.serves_clips:
        return SourceKind.FILE
    if source.isdigit():
        return SourceKind.WEBCAM
    if source.lower().startswith(("rtsp://", "rtsps://")):
        return SourceKind.RTSP
    path = source.split("?", 1)[0]
    if URL.match(source):
        if path.lower().endswith(".m3u8"):
            return SourceKind.HLS
        if MJPEG_URL.search(source):
            return SourceKind.MJPEG
        if IMAGE_PATH.search(path):
            return SourceKind.IMAGE
        if path.lower().endswith((".mp4", ".avi", ".mkv", ".mov")):
            return SourceKind.FILE
        return SourceKind.HLS  # other http(s) streams (ITS tokenised URLs) are live playlists
    return SourceKind.FILE


def picture_sequence(folder: str) -> str:
    """The pattern FFmpeg reads a folder of numbered pictures by, in the order of their names: those with the folder's
    most common picture extension. Names numbered without leading zeros (9.jpg before 10.jpg in number, after it in
    name) are refused, as their order would be read wrong."""
    try:
        names = [name for name in os.listdir(folder) if name.lower().endswith(SEQUENCE_PICTURE_EXTENSIONS)]
    except OSError as exc:
        raise CameraUnavailable(f"cannot list {shown(folder)}: {exc.strerror}", permanent=True) from None
    if not names:
        raise CameraUnavailable(f"no pictures ({', '.join(SEQUENCE_PICTURE_EXTENSIONS)}) in folder {shown(folder)}",
                                permanent=True)
    extension = Counter(os.path.splitext(name)[1] for name in names).most_common(1)[0][0]
    names = sorted(name for name in names if name.endswith(extension))
    in_number_order = sorted(names, key=lambda name: [int(part) if part.isdigit() else part
                                                      for part in re.split(r"(\d+)", name)])
    misplaced = next(((named, numbered) for named, numbered in zip(names, in_number_order, strict=True)
                      if named != numbered), None)
    if misplaced is not None:
        raise CameraUnavailable(f"the pictures in {shown(folder)} are numbered without leading zeros, so their names "
                                f"are out of order ({misplaced[0]} sorts before {misplaced[1]}): rename them with "
                                "zeros (0009.jpg, 0010.jpg)", permanent=True)
    return os.path.join(glob.escape(folder), "*" + glob.escape(extension))


@functools.cache
def hardware_decoder(device_type: str) -> HWAccel | None:
    """Settings that decode on this kind of device, or None (said once) when this machine has no such device."""
    accel = HWAccel(device_type, allow_software_fallback=True)
    try:
        accel.create(av.Codec("h264", "r"))
    except (av.FFmpegError, NotImplementedError) as exc:
        log.warning("hardware decoding (%s) is unavailable on this machine (%s): decoding on the CPU", device_type, exc)
        return None
    return accel


class VideoDecoder:
    """One video stream opened with FFmpeg; `frames()` yields each decoded frame with its time in seconds from the
    stream's first frame (None where the stream has no timestamps: FFmpeg makes them up at a guessed rate for formats
    without any, such as MJPEG over HTTP, and those say nothing of when a live camera took its pictures), and
    `arrived_at` is when, on `clock`, its packet was read.

    Frames presented before `wanted_from` (same timeline; for a stream without timestamps, seconds of arrival from
    `opened_at`) are not decoded where the codec allows: non-reference frames are skipped, and a group of pictures is
    reduced to its keyframe when the next keyframe is due by `wanted_from`. Full decoding resumes at a keyframe, so no
    frame is decoded from a skipped one (unless the keyframe is a whole group late). Where every packet is a whole
    picture (an intra-only codec: MJPEG), a packet presented (or, without timestamps, arriving) before `wanted_from`
    and not behind the one before it is not decoded at all: it is yielded with its time and None for the frame, so
    the sampler sees every picture's time as if it had been decoded.
    """

    def __init__(self, source: str, settings: ProducerConfig, clock: Callable[[], float] = time.time,
                 frame_rate: float | None = None):
        """`frame_rate`: the pictures a second of a folder of numbered pictures (25 where not given), which hold no
        times of their own."""
        self.source = source
        self.clock = clock
        url, format_name, options = source, None, {}
        if source.isdigit():  # a capture device index, as OpenCV numbers them
            url, format_name = f"/dev/video{source}", "v4l2"
        elif os.path.isdir(source):
            url, format_name = picture_sequence(source), "image2"
            options = {"pattern_type": "glob", "framerate": f"{frame_rate or 25.0:g}"}
        elif source.lower().startswith(("rtsp://", "rtsps://")):
            options = {"rtsp_transport": settings.rtsp_transport}
        hwaccel = None if settings.hardware_decoding == "off" else hardware_decoder(settings.hardware_decoding)
        try:
            self.container = av.open(url, format=format_name, options=options, hwaccel=hwaccel,
                                     timeout=(settings.open_timeout_s, settings.read_timeout_s))
        except av.FFmpegError:
            missing = not URL.match(source) and not source.isdigit() and not os.path.exists(source)
            raise CameraUnavailable(f"{'no such file' if missing else 'cannot open'}: {shown(source)}",
                                    permanent=missing) from None
        if not self.container.streams.video:
            self.container.close()
            raise CameraUnavailable(f"no video stream in {shown(source)}", permanent=not URL.match(source))
        self.stream = self.container.streams.video[0]
        # One thread per decoder costs the least CPU per frame; a producer's cameras decode in parallel anyway.
        self.stream.thread_count = 1
        self.codec = self.stream.codec_context
        if hwaccel is not None and not self.codec.is_hwaccel:
            log.info("%s: no %s decoder for %s, decoding on the CPU", shown(source), settings.hardware_decoding,
                     self.codec.name)
        self.timed = not self.container.format.flags & Flags.no_timestamps.value
        rate = self.stream.average_rate or self.stream.guessed_rate
        if not self.timed and self.codec.framerate:
            # A raw H.264 or H.265 stream (a recorder's .264 export) has no timestamps, and its demuxer assumes 25
            # frames a second; the rate the encoder wrote into the stream's headers is its own.
            rate = self.codec.framerate
        self.native_fps = float(rate) if rate and 0 < rate < 1000 else 25.0  # containers without a rate: PAL
        # Every packet of an intra-only codec (MJPEG) is a whole picture that no other needs: one not wanted yet can
        # go undecoded, which the skip_frame modes do not do for a keyframe.
        self._intra_only = self.codec.codec.intra_only
        # A single picture (a snapshot URL): FFmpeg's image demuxers, image2 and one <format>_pipe for each format.
        self.single_picture = self.container.format.name in ("image2", "image2pipe") \
            or self.container.format.name.endswith("_pipe")
        self.opened_at = clock()
        self.arrived_at = self.opened_at
        self.wanted_from: float | None = None
        self._time_base = float(self.stream.time_base or 0)
        self.origin: float | None = None  # stream time of the first frame
        self._keyframe_at: float | None = None
        # Time of the last packet that had one, on the sampler's timeline (arrival, for a stream without timestamps).
        self._packet_at: float | None = None
        self.gop_s: float | None = None  # seconds between the last two keyframes; None until two were seen
        self._keyframes_only = False
        self._skip = "DEFAULT"

    def frames(self) -> Iterator[tuple[float | None, av.VideoFrame | None]]:
        undecodable = 0
        try:
            for packet in self.container.demux(self.stream):
                self.arrived_at = self.clock()
                at = None
                if packet.pts is not None and self.origin is not None and self._time_base:
                    at = packet.pts * self._time_base - self.origin
                self._choose_skipping(packet, at)
                packet_at = at if self.timed else self.arrived_at - self.opened_at
                not_wanted = self._whole_picture_not_wanted(packet_at, self._packet_at)
                if packet_at is not None:
                    self._packet_at = packet_at
                if not_wanted:
                    yield at, None
                    continue
                try:
                    decoded = packet.decode()
                except av.InvalidDataError:
                    undecodable += 1
                    if undecodable >= MAX_UNDECODABLE_PACKETS:
                        raise CameraUnavailable(f"undecodable stream: {shown(self.source)}") from None
                    continue
                undecodable = 0
                for frame in decoded:
                    if frame.time is None or not self.timed:
                        yield None, frame
                        continue
                    if self.origin is None:
                        self.origin = frame.time
                    yield frame.time - self.origin, frame
        except av.FFmpegError as exc:
            reason = exc.strerror or type(exc).__name__  # not str(exc): it quotes the URL
            raise CameraUnavailable(f"stream broke: {shown(self.source)}: {reason}") from None

    def _whole_picture_not_wanted(self, at: float | None, previous_at: float | None) -> bool:
        """Whether a packet of an intra-only stream presented at `at` (or, without timestamps, arriving then) comes
        before `wanted_from`, where the sampler takes no frame. One behind the packet before it (at previous_at) is
        decoded: where the timeline went back (the stream's timestamps, or the wall clock stepping back), the sampler
        starts it afresh from that frame."""
        return (self._intra_only and self.wanted_from is not None and at is not None and previous_at is not None
                and at >= previous_at and before_slot(at, self.wanted_from))

    def _choose_skipping(self, packet: av.Packet, at: float | None) -> None:
        if packet.is_keyframe and at is not None:
            if self._keyframe_at is not None and at > self._keyframe_at:
                self.gop_s = at - self._keyframe_at
            self._keyframe_at = at
            self._keyframes_only = (self.gop_s is not None and self.wanted_from is not None
                                    and at + self.gop_s <= self.wanted_from + 1e-9)
        elif self._keyframes_only and at is not None and (
                self.wanted_from is None or at > self.wanted_from + self.gop_s):
            # Nothing wanted, or the keyframe is a whole group overdue (the stream changed its coding): decode on.
            self._keyframes_only = False
        if self._keyframes_only:
            skip = "NONKEY"
        elif at is not None and self.wanted_from is not None and at + 1e-9 < self.wanted_from:
            skip = "NONREF"
        else:
            skip = "DEFAULT"
        if skip != self._skip:
            self.codec.skip_frame = skip
            self._skip = skip

    def close(self) -> None:
        self.container.close()


def sample_frames(
    camera: CameraConfig,
    source: str,
    realtime: bool = True,
    settings: ProducerConfig | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    published: PublishedUpTo | None = None,
) -> Iterator[SampledFrame]:
    """Frames from one source at `camera.fps`; raises CameraUnavailable when the source fails.

    Files are sampled on their own timeline (frame timestamps), so a 10 fps clip sampled at 5 fps keeps every second
    frame whether or not playback is paced; with `realtime` the file plays at its natural speed, like a camera. Live
    sources are read continuously (so the decoder never falls behind) and sampled on the stream's timeline, or on
    arrival where the stream has no timestamps (MJPEG). Frames that are not sampled are decoded only where later
    frames need them, and never converted. An HLS stream leaves out the frames that `published` (the camera's, kept
    across its connections) says were published already, and a file those up to where it says (a recording read
    again after it broke off goes on after its last published frame, at once). A live source that answers with a
    single picture is polled as a still image.
    """
    settings = settings or ProducerConfig()
    kind = source_kind(camera, source)
    if kind is SourceKind.IMAGE:
        yield from poll_image(camera, source, settings.read_timeout_s, settings.image_max_bytes, clock, sleep)
    elif kind in LIVE_KINDS:
        yield from _sample_live(camera, source, settings, clock, sleep,
                                published if kind is SourceKind.HLS else None)
    else:
        yield from _sample_file(camera, source, settings, realtime, clock, sleep, published)


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


TIMESTAMP_JUMP_S = 1.0  # how far a frame's time may stray beyond where the timeline leads before it has jumped
# A frame this close before its slot takes it: timestamps rounded to milliseconds (or 90 kHz ticks) and summed slot
# times land a little either side, and at a camera rate equal to the stream's a miss would skip every other frame.
SLOT_TOLERANCE_S = 0.001


def before_slot(media_s: float, slot_s: float) -> bool:
    """Whether a frame at media_s comes before the slot at slot_s, by more than a rounding error."""
    return media_s + SLOT_TOLERANCE_S < slot_s


class SampleSlots:
    """The frames to sample, one per `interval` seconds of a stream's own timeline.

    Slots missed while a stream stalled or its reader fell behind are skipped, not caught up in a burst. A frame
    behind its predecessor by less than two intervals or a group of pictures came out of the decoder late and is
    dropped. A frame further behind, or more than TIMESTAMP_JUMP_S after the next slot or the predecessor's time plus
    an interval (a restarted encoder, spliced segments or recordings), starts the timeline afresh.
    """

    def __init__(self, interval: float, skip_missed: bool):
        self.interval = interval
        # A live stream's slots missed while it stalled are gone; a file's frames are all there, and a slot passed
        # between two unevenly timed frames (a GIF's, a variable frame rate) is made up by the next frame.
        self.skip_missed = skip_missed
        self.next_at: float | None = None
        self.last_at: float | None = None  # the time of the last frame offered

    def late(self, media_s: float, gop_s: float | None) -> bool:
        """Whether the frame at media_s is one the decoder handed back after later ones, in a stream whose groups of
        pictures last gop_s (None: not known yet)."""
        # When frame skipping switches on or off, a decoder holding B-frames back can release a frame from before the
        # frames it skipped, as old as the span skipped: about an interval, or a group of pictures.
        if self.last_at is None:
            return False
        return self.last_at - max(2 * self.interval, gop_s or 0.0) <= media_s < self.last_at

    def jumped(self, media_s: float, gop_s: float | None) -> bool:
        """Whether the frame at media_s is off its predecessor's timeline: further behind it than a late frame, or
        beyond where the timeline leads."""
        if self.last_at is None or self.late(media_s, gop_s):
            return False
        # Frames the decoder did not decode leave gaps of up to an interval, or up to a slot skipped to.
        due_by = max(self.last_at + self.interval, self.next_at)
        return media_s < self.last_at or media_s > due_by + TIMESTAMP_JUMP_S

    def take(self, media_s: float, gop_s: float | None, decoded: bool = True) -> bool:
        """Whether to sample the frame at media_s; the next slot is then after it. A late frame changes nothing. A
        frame that was not `decoded` is never sampled: the slot it would take is left to the frame after it."""
        if self.late(media_s, gop_s):
            return False
        if self.next_at is None or self.jumped(media_s, gop_s):
            self.next_at = media_s
        self.last_at = media_s
        if before_slot(media_s, self.next_at) or not decoded:
            return False
        missed = max(0, math.floor((media_s + SLOT_TOLERANCE_S - self.next_at) / self.interval)) \
            if self.skip_missed else 0
        self.next_at += self.interval * (missed + 1)
        return True

    def skip_to(self, media_s: float) -> None:
        """Samples nothing before media_s."""
        self.next_at = media_s


def _sample_live(camera: CameraConfig, source: str, settings: ProducerConfig, clock: Callable[[], float],
                 sleep: Callable[[float], None], published: PublishedUpTo | None) -> Iterator[SampledFrame]:
    """Sampled on the stream's own timeline (presentation timestamps) where it has one, else on arrival time. With
    `published`, the connection's first frames that repeat what it says was published are left out, and it is kept
    up to date. A source that answers with a single picture is a still-image camera, polled."""
    decoder = VideoDecoder(source, settings, clock)
    if decoder.single_picture:
        # Read as a stream, its one frame would end every connection and the camera would go down. Polled, a snapshot
        # URL that names no kind (a CGI, an ITS camera's) works without the operator having to know what it serves.
        log.info("camera %s answers with a single picture (%s): polled as a still image", camera.id,
                 decoder.container.format.name)
        decoder.close()
        yield from poll_image(camera, source, settings.read_timeout_s, settings.image_max_bytes, clock, sleep)
        return
    source_fps = decoder.native_fps if decoder.timed else None  # a rate FFmpeg guessed is not the camera's
    slots = SampleSlots(1.0 / camera.fps, skip_missed=True)
    media_clock = MediaClock()
    repeats = sampled = 0
    resuming = published is not None and published.stream_s is not None and not camera.loop
    try:
        for frame_at, frame in decoder.frames():
            now = decoder.arrived_at
            if resuming and frame_at is not None:
                stream_s = decoder.origin + frame_at
                if published.repeats(stream_s):
                    repeats += 1
                    decoder.wanted_from = published.stream_s - decoder.origin
                    continue
                resuming = False
                if stream_s > published.stream_s:  # right after the last frame published: its rate goes on evenly
                    slots.skip_to(published.stream_s + slots.interval - decoder.origin)
            media_s = frame_at if frame_at is not None else now - decoder.opened_at
            taken = slots.take(media_s, decoder.gop_s, decoded=frame is not None)
            # Set after every frame, not only a sampled one: an undecoded frame can start a new timeline.
            decoder.wanted_from = slots.next_at if frame_at is not None or not decoder.timed else None
            if not taken:
                continue
            if published is not None and frame_at is not None:
                published.stream_s = decoder.origin + frame_at
            sampled += 1
            yield SampledFrame(media_clock.captured_at(media_s, now), YuvPicture.from_frame(frame), source_fps)
        if repeats and not sampled:
            raise CameraUnavailable(f"no new frames, only {repeats} already published (a playlist no longer "
                                    f"updated?): {shown(source)}")
        raise CameraUnavailable(f"stream ended or broke: {shown(source)}")
    finally:
        decoder.close()


def _sample_file(camera: CameraConfig, source: str, settings: ProducerConfig, realtime: bool,
                 clock: Callable[[], float], sleep: Callable[[float], None],
                 published: PublishedUpTo | None) -> Iterator[SampledFrame]:
    interval = 1.0 / camera.fps
    slots = SampleSlots(interval, skip_missed=False)
    origin = clock()  # wall time of media time 0
    # A looping file (a demo) starts again from its beginning: its loops are no timeline to go on with, and skimming
    # every loop played before would take longer the longer it ran.
    resuming = published is not None and published.stream_s is not None and not camera.loop
    if resuming:
        slots.skip_to(published.stream_s + interval)  # the slot after the last frame published
    played = 0.0  # media time already played in earlier loops of a looping file
    while True:
        decoder = VideoDecoder(source, settings, frame_rate=camera.fps)
        frame_s = 1.0 / decoder.native_fps
        position: float | None = None  # of the last frame in this loop, seconds from its first frame
        try:
            for frame_at, frame in decoder.frames():
                position = frame_at if frame_at is not None else (-frame_s if position is None else position) + frame_s
                media_time = played + position
                if slots.jumped(media_time, decoder.gop_s):
                    # Play on as if the frame followed the last one, instead of waiting for the time its timestamp
                    # names or skipping frames until the timeline is back where it was.
                    origin += slots.last_at + frame_s - media_time
                taken = slots.take(media_time, decoder.gop_s, decoded=frame is not None)
                if taken and resuming:  # the frames before it were only skimmed: it plays at once, the rest after it
                    origin = clock() - media_time
                    resuming = False
                if taken and realtime and clock() - origin - media_time > interval:
                    # Behind the clock (an overloaded machine): skip the missed slots as a live camera's frames would
                    # be, instead of bursting to catch up.
                    slots.skip_to(clock() - origin)
                    taken = False
                # Set after every frame, not only a sampled one: an undecoded frame can start a new timeline.
                decoder.wanted_from = slots.next_at - played if frame_at is not None else None
                if not taken:
                    continue
                picture = YuvPicture.from_frame(frame)
                if published is not None:
                    published.stream_s = media_time
                if realtime:
                    delay = origin + media_time - clock()
                    if delay > 0:
                        sleep(delay)
                # Stamped on the file's own timeline, paced or not: a reader woken late (a busy machine) would
                # otherwise put its lateness into the gaps between frames, and the speeds measured across them.
                yield SampledFrame(origin + media_time, picture, decoder.native_fps)
        finally:
            decoder.close()
        if position is None:  # a container that opens but holds nothing decodable (a text file named .jpg)
            # A local file stays that way; a URL may be served whole on the next try (a recording still being written).
            raise CameraUnavailable(f"no frame could be decoded: {shown(source)}", permanent=not URL.match(source))
        if not camera.loop:
            return
        played += position + frame_s


def clip_fingerprint(url: str, timeout_s: float) -> str:
    """What tells a recorded clip served over http(s) from another, whatever URL it is served at (an ITS clip's token
    changes at every listing) and whatever it is listed with: a digest of its first CLIP_FINGERPRINT_BYTES. Raises
    CameraUnavailable where they cannot be read."""
    try:
        head = fetch(url, CLIP_FINGERPRINT_BYTES, timeout_s, first_bytes=True)
    except FetchError as exc:
        raise CameraUnavailable(f"cannot read the start of clip {shown(url)}: {exc.reason}") from None
    return hashlib.sha256(head).hexdigest()


def poll_image(camera: CameraConfig, url: str, timeout_s: float, max_bytes: int, clock: Callable[[], float],
               sleep: Callable[[float], None]) -> Iterator[SampledFrame]:
    """A still-image camera: one HTTP GET of its picture per sampling interval, each within timeout_s and max_bytes.

    A failed poll after a good one (a request lost, a timeout) misses that picture only; a failed first poll, or a
    second in a row, is CameraUnavailable. A URL that is not http(s) is a permanent failure (a local image is a
    file)."""
    if urlsplit(url).scheme.lower() not in HTTP_SCHEMES:
        raise CameraUnavailable(f"still-image source {shown(url)} is not an http(s) URL", permanent=True)
    interval = 1.0 / camera.fps
    next_fetch = clock()
    last_poll_delivered = False
    while True:
        delay = next_fetch - clock()
        if delay > 0:
            sleep(delay)
        fetched_at = clock()
        next_fetch = max(next_fetch + interval, fetched_at)
        try:
            image = fetch_still_image(url, max_bytes, timeout_s)
        except CameraUnavailable as exc:
            if not last_poll_delivered:
                raise
            log.warning("camera %s: one picture missed: %s", camera.id, exc)
            last_poll_delivered = False
            continue
        last_poll_delivered = True
        yield SampledFrame(fetched_at, YuvPicture.from_bgr(image))


def fetch_still_image(url: str, max_bytes: int, timeout_s: float) -> np.ndarray:
    """The picture at a still-image URL (BGR); raises CameraUnavailable."""
    try:
        body = fetch(url, max_bytes, timeout_s)
    except FetchError as exc:
        raise CameraUnavailable(f"still-image URL {shown(url)}: {exc.reason}") from None
    try:
        return decode_still_image(body)
    except ValueError as exc:
        raise CameraUnavailable(f"still-image URL {shown(url)} {exc}") from None


def decode_still_image(data: bytes) -> np.ndarray:
    """The picture in an image file's bytes (BGR), in any format OpenCV reads. ValueError for bytes it cannot read
    and for a picture of more than MAX_IMAGE_PIXELS: refused before decoding where image_size reads the header (a few
    compressed bytes can declare gigabytes), else once decoded."""
    declared = image_size(data)
    if declared is not None:
        refuse_larger_than_a_camera(*declared)
    # OpenCV asserts on no bytes at all (an empty body), where other bytes it cannot read decode to None.
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        raise ValueError(f"did not return an image ({len(data)} bytes)")
    refuse_larger_than_a_camera(image.shape[1], image.shape[0])
    return image


def refuse_larger_than_a_camera(width: int, height: int) -> None:
    """Raises ValueError for a picture of more than MAX_IMAGE_PIXELS."""
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(f"returned a {width}x{height} image, more than the {MAX_IMAGE_PIXELS} pixels a camera "
                         "picture may have")


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as a JPEG, PNG, BMP, WebP, GIF or TIFF header declares them, read without decoding; None for
    other bytes."""
    if data.startswith(b"\xff\xd8"):
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError:
            return None
        return width, height
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data.startswith(b"BM") and len(data) >= 26 and int.from_bytes(data[14:18], "little") >= 40:
        # BITMAPINFOHEADER and its successors; the height is negative for top-down rows
        return (abs(int.from_bytes(data[18:22], "little", signed=True)),
                abs(int.from_bytes(data[22:26], "little", signed=True)))
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return webp_size(data)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:  # the logical screen holds every frame
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    if data[:4] in (b"II*\0", b"MM\0*"):
        return tiff_size(data)
    return None


def tiff_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a TIFF file's first image directory (TIFF 6.0: tags 256 and 257, SHORT or LONG); None if
    cut short or either tag is missing."""
    order = "little" if data.startswith(b"II") else "big"
    directory = int.from_bytes(data[4:8], order)
    entries = int.from_bytes(data[directory:directory + 2], order)
    found = {}
    for start in range(directory + 2, min(directory + 2 + 12 * entries, len(data) - 11), 12):
        tag, kind = int.from_bytes(data[start:start + 2], order), int.from_bytes(data[start + 2:start + 4], order)
        if tag in (256, 257) and kind in (3, 4):
            found[tag] = int.from_bytes(data[start + 8:start + (10 if kind == 3 else 12)], order)
    return (found[256], found[257]) if len(found) == 2 else None


def webp_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a WebP file's first chunk (RFC 9649): extended, lossless or lossy; None if cut short."""
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + (bits >> 14 & 0x3FFF)
    if chunk == b"VP8 " and len(data) >= 30:
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    return None

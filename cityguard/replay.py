"""`cityguard replay`: a recorded clip through the code the inference and analytics stages run, in video time,
as fast as the CPU allows, without a broker.

Each frame goes the way it goes in the pipeline: sampled at the camera's fps on the clip's own timeline, checked for a
frozen or blank picture and JPEG-encoded as the producer does, decoded as the inference stage does, detected, enriched
(tracker, background model, a crowd camera's density map every `analytics.density_model.interval_seconds` of video) and
fed to the camera's analyzers. Capture times are video times; the messages need positive capture times, so without a
start time the clip plays from an internal origin that is taken off again in everything reported.
"""
from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from cityguard.arguments import counted
from cityguard.stages import (
    build_density_counter,
    build_static_blobs,
    build_trackers,
    serving_detectors,
)
from processors.analytics.ignore_filters import IgnoreFilterStore, without_ignored
from processors.analytics.registry import PictureCheck, analyzers_for
from processors.analytics.traffic.analyzer import TrafficAnalyzer
from processors.inference.stage import FrameEnricher, ZoneDensityMaps, decode_frame, decoded_on_cpu, to_message
from producers.capture import CameraUnavailable, VideoDecoder, sample_frames
from producers.health import FrameQualityMonitor
from producers.picture import encode_jpeg, source_size_fields
from schemas import Detections, Event, Frame, LineCounts, RiskLevel, ZoneMetrics, encode
from schemas.settings.config import CameraConfig, Config, validation_problems

CLIP_ORIGIN_S = 1_000_000.0  # capture time of a clip's first frame when no start time is given
SOURCE_RATE_TOLERANCE = 0.2  # footage this much below a camera's fps still has its rate (at_source_rate)


class ReplayError(RuntimeError):
    """A clip or recording that cannot be replayed; the text says why."""


@dataclass
class ReplayedFrame:
    detections: Detections
    events: list[Event] = field(default_factory=list)
    area_scores: dict[str, float] = field(default_factory=dict)  # frame-level score per pedestrian area
    warnings: list[str] = field(default_factory=list)  # for the operator: the camera's settings misfit its picture
    line_counts: list[LineCounts] = field(default_factory=list)  # counting-line windows closed at this frame
    zone_metrics: list[ZoneMetrics] = field(default_factory=list)  # crowd zones' windows closed at this frame


class CameraAnalytics:
    """The analyzers the analytics stage runs for one camera, fed in order, after the operators' ignore filters (read
    once: a replay is short; judged at each frame's capture time, as the stage does), with the stage's check of the
    camera's configuration against its picture."""

    def __init__(self, camera: CameraConfig, config: Config):
        self.camera = camera
        self.picture_check = PictureCheck()
        self.analyzers = [restore(camera, config, None) for restore in analyzers_for(camera).values()]
        filters_file = config.analytics.ignore_filters
        self.ignore_filters = IgnoreFilterStore(Path(config.resolve_path(filters_file))).load() if filters_file else []

    def update(self, detections: Detections) -> ReplayedFrame:
        replayed = ReplayedFrame(detections)
        replayed.warnings.extend(self.picture_check.warnings(self.camera, detections))
        if self.ignore_filters:
            detections = without_ignored(detections, self.ignore_filters)
        for analyzer in self.analyzers:
            output = analyzer.update(detections)
            replayed.events.extend(output.events)
            replayed.line_counts.extend(output.line_counts)
            replayed.zone_metrics.extend(output.zone_metrics)
            replayed.area_scores.update(getattr(output, "area_scores", {}))
        return replayed

    def end_of_footage_counts(self, until: float) -> list[LineCounts]:
        """The traffic counting lines' window still open when the footage ends (`until`: the end of its latest
        frame), its pending crossings included."""
        return [counts for analyzer in self.analyzers if isinstance(analyzer, TrafficAnalyzer)
                for counts in analyzer.end_of_footage_counts(until)]


def zone_summaries(windows: list[ZoneMetrics], zone_ids: list[str], footage_end: float | None) -> list[str]:
    """One line per crowd zone over its windows: people and density at their peak, the highest risk level reached,
    how many windows were unknown (no fresh density map, an unreliable count), and the footage after the last closed
    window, which no window judged (a window closes with the first frame after it)."""
    lines = []
    for zone_id in sorted(set(zone_ids) | {window.zone_id for window in windows}):
        own = [window for window in windows if window.zone_id == zone_id]
        if not own:
            lines.append(f"zone {zone_id}: no window closed (the footage is shorter than the analytics window)")
            continue
        judged = [window for window in own if window.risk_level is not RiskLevel.UNKNOWN]
        if judged:
            peak = max(judged, key=lambda window: window.density_max_per_m2)
            highest = max(judged, key=lambda window: window.risk_level.rank).risk_level.value
            text = (f"people up to {max(window.people_max for window in judged)}, density up to "
                    f"{peak.density_max_per_m2:.2f} p/m², highest level {highest}")
        else:
            text = "never judged"
        unknown = len(own) - len(judged)
        unjudged = (footage_end or 0.0) - max(window.window_end for window in own)
        lines.append(f"zone {zone_id}: {counted(len(own), 'window')}, {text}"
                     + (f", {unknown} unknown" if unknown else "")
                     + (f"; the last {unjudged:.1f} s of footage not judged" if unjudged >= 0.05 else ""))
    return lines


def line_totals(windows: list[LineCounts]) -> dict[str, dict[tuple[str, str], int]]:
    """Crossings per line, by (class, direction), over all the windows."""
    totals: dict[str, dict[tuple[str, str], int]] = {}
    for window in windows:
        line = totals.setdefault(window.line_id, {})
        for class_name, direction, count in zip(window.class_name, window.direction, window.count, strict=True):
            line[class_name, direction] = line.get((class_name, direction), 0) + count
    return totals


def clip_detections(config: Config, camera: CameraConfig, clip: Path, origin_s: float,
                    detectors=None) -> Iterator[Detections]:
    """Detections messages of a clip's frames, as the inference stage would send them (with the model it serves
    here, unless `detectors` are given)."""
    detectors = detectors or serving_detectors(config)
    # The trackers follow the camera as replayed (its fps may be the footage's, at_source_rate).
    replayed = [camera if other.id == camera.id else other for other in config.cameras]
    enricher = FrameEnricher(build_trackers(config.model_copy(update={"cameras": replayed})),
                             build_static_blobs(config))
    # A camera with crowd zones gets its density maps as the stage makes them, scheduled in video time.
    try:
        counter = build_density_counter(config) if camera.zones else None
    except (OSError, RuntimeError, ImportError) as exc:
        raise ReplayError(f"the density model for camera {camera.id}'s zones cannot be loaded: {exc} (with "
                          "analytics.density_model.enabled: false it replays without maps, zones unknown)") from None
    zone_maps = None if counter is None else ZoneDensityMaps(config, counter, video_time=True)
    camera = camera.model_copy(update={"loop": False})
    frames = sample_frames(camera, str(clip), realtime=False, settings=config.producer, clock=lambda: origin_s)
    # The producer's check of the picture, so a frozen or blank stretch of footage is marked as it would be live.
    quality = FrameQualityMonitor.from_config(config.producer)
    for seq, sampled in enumerate(frames):
        quality.check(sampled.picture.y, sampled.captured_at)
        jpeg, width, height = encode_jpeg(sampled.picture, camera.max_width, camera.jpeg_quality)
        frame = Frame(camera_id=camera.id, seq=seq, captured_at=sampled.captured_at, width=width, height=height,
                      jpeg=jpeg, picture_fault=quality.fault, **source_size_fields(sampled.picture, width))
        item = decode_frame(encode(frame), decoded_on_cpu(detectors, enricher, camera.id))
        outcome = detectors.detect([item])[0]
        if isinstance(outcome, str):
            raise ReplayError(f"{clip}: frame {seq}: {outcome}")
        result, model_name = outcome
        density = None
        if zone_maps is not None:
            density = zone_maps.make([item], [result.person_boxes()]).get(0)
        yield enricher.enrich(item, to_message(item.frame, result, model_name, detectors.version), density)


def recorded_detections(path: Path, camera_id: str) -> Iterator[Detections]:
    """Detections messages recorded by an earlier replay (one JSON object per line, gzip-compressed when the name
    ends in .gz), for this camera."""
    number = 0
    try:
        with (gzip.open(path, "rt") if str(path).endswith(".gz") else open(path)) as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    detections = Detections.model_validate_json(line)
                except ValidationError as exc:
                    problems = validation_problems(exc)
                    raise ValueError(f"{path}:{number}: not a Detections message: {problems[0]}"
                                     + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")) from None
                if detections.camera_id == camera_id:
                    yield detections
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: not a Detections recording (JSON lines, gzip-compressed when named .gz): "
                         f"unreadable after line {number}: {exc}") from None


def recording_offset(recording: list[Detections]) -> float:
    """What a recording's times are printed from: one made from a clip without a start time counts from CLIP_ORIGIN_S
    (its events print in seconds from the clip's start); any other carries unix capture times, printed as they are."""
    return CLIP_ORIGIN_S if CLIP_ORIGIN_S <= recording[0].captured_at < 2 * CLIP_ORIGIN_S else 0.0


def shift_event(event: Event, offset_s: float) -> Event:
    """The event with its times moved by -offset_s (internal origin -> seconds from the clip start)."""
    if offset_s == 0:
        return event
    ended = None if event.ended_at is None else round(event.ended_at - offset_s, 6)
    return event.model_copy(update={"started_at": round(event.started_at - offset_s, 6),
                                    "updated_at": round(event.updated_at - offset_s, 6), "ended_at": ended})


def shift_window(window: LineCounts, first_frame_s: float, offset_s: float) -> LineCounts:
    """A counting-line window in the replay's times: from the footage's first frame at the earliest (windows are
    aligned to the clock, so the first one began before it), moved by -offset_s like the events."""
    return window.model_copy(update={"window_start": round(max(window.window_start, first_frame_s) - offset_s, 6),
                                     "window_end": round(window.window_end - offset_s, 6)})


def describe(event: Event) -> str:
    zone = f" in {event.zone_id}" if event.zone_id else ""
    return (f"{event.updated_at:9.2f} s  {event.state.value:<8} {event.type} ({event.severity.value}){zone}: "
            f"{event.reason}")


def clip_rate(config: Config, clip: Path) -> float:
    """Frames per second the clip holds (its container's rate); ValueError for a file that is not a video."""
    try:
        decoder = VideoDecoder(str(clip), config.producer)
    except CameraUnavailable as exc:
        raise ValueError(f"{clip} is not a video this decoder reads ({exc})") from None
    try:
        return decoder.native_fps
    finally:
        decoder.close()


def recorded_rate(recording: list[Detections]) -> float | None:
    """Frames per second of a recording: one over its median interval between frames (a gap or a repeated frame
    does not move it); None under two distinct capture times."""
    intervals = np.diff(np.unique([detections.captured_at for detections in recording]))
    return 1.0 / float(np.median(intervals)) if intervals.size else None


def at_source_rate(camera: CameraConfig, rate_fps: float | None) -> CameraConfig:
    """The camera as a replay runs it: footage with fewer frames a second than the camera's fps is played at its own
    rate, and the analyzers expect that many (a crowd zone would read the frames the footage never had as a camera
    that is down, and report unknown throughout). Within SOURCE_RATE_TOLERANCE of the fps, the footage has the
    camera's rate: sampling a 24 fps clip at 5 fps makes intervals of 5/24 s and 4/24 s, a 16 fps one of 4/16 s and
    3/16 s."""
    if rate_fps is None or rate_fps >= camera.fps * (1 - SOURCE_RATE_TOLERANCE):
        return camera
    return camera.model_copy(update={"fps": rate_fps})


def find_camera(config: Config, camera_id: str) -> CameraConfig:
    for camera in config.cameras:
        if camera.id == camera_id:
            return camera
    known = ", ".join(camera.id for camera in config.cameras)
    raise ValueError(f"camera {camera_id!r} is not in the site configuration (cameras: {known})")

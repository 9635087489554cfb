"""What the console shows, as plain bounded state: the latest picture, detections and health per camera, recent
zone windows per zone, line totals, recent events with their evidence frames.

Every collection has a cap (the console runs for months): once the site is known (`follow_site`) only its cameras
and zones are kept; line totals keep the configured lines and direction names, and up to a cap per camera of others
(an analyzer counts under the names it started with until it is restarted).
Nothing here touches Kafka or HTTP, so it is tested with plain messages. The topic reader calls the `on_*` methods
from its thread, the web server reads snapshots from its own: one lock guards both.
"""
from __future__ import annotations

import bisect
import threading
from collections import OrderedDict, deque
from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np

from schemas import CameraStatus, Detections, Event, EventState, LineCounts, RiskLevel, ZoneMetrics
from schemas.base import frame_seen, run_of, with_frame
from schemas.event import CLOSED_BY_RESET
from schemas.settings.config import Config
from schemas.settings.crowd import CountingConfig
from sinks.topic_reading import LabelBounds, RecentKeys

HEAT_MAX_CELLS = 48  # the density heat overlay is sent at most this many cells wide or high
# Sequence numbers count a camera's published frames one by one (producers/frame_producer.py), so a gap is a number
# of frames. An event's own frame missing from the buffer (expired from the frame store before the console read it,
# or dropped from a full send queue) is stood in for by a neighbour at most this many frames away: a fraction of a
# second at the sampling rates used, the same scene. Further away the picture may show other people or none of the
# event, and a false alarm marked on it would teach the detector from an unrelated picture.
EVIDENCE_MAX_SEQ_GAP = 2
# Boxes are drawn on the live frame only from detections captured at most this long before or after it: the
# detector runs a fraction of a second behind the frames, and in a second more a walking person has moved about a
# metre and a car far more, so older boxes would mark where nobody is any more.
LIVE_BOXES_MAX_LAG_S = 1.0
# The detector may run further behind the frames (inference on CPU, batching): the newest frame it has boxes of is
# shown then, at most this much older than the newest frame. Further behind, it counts as stopped, and the newest
# frame is shown without boxes.
LIVE_MAX_DETECTOR_LAG_S = 5.0
# Line totals kept per camera, and direction names per line: the configured ones always, and others while fewer than
# this many are held (those an analyzer started before a scene save still counts under until it is restarted, lines
# added to the site file since the console read it).
LINES_PER_CAMERA = 64
DIRECTIONS_PER_LINE = 8
FEED_SILENCE_S = 30.0  # the topic reader reports every fraction of a second: silent this long, it has stopped


@dataclass(frozen=True)
class StoredFrame:
    seq: int
    captured_at: float
    jpeg: bytes
    picture_size: tuple[int, int]  # the camera's own picture (Frame.source_size), in whose pixels the boxes are
    jpeg_size: tuple[int, int]  # the JPEG's, smaller where capture scaled the picture down


@dataclass(frozen=True)
class Evidence:
    """The frame an event points at, with the detections of that frame when the console still had them."""

    camera_id: str
    frame: StoredFrame
    detections: dict | None


@dataclass(frozen=True)
class FeedReport:
    """The topic reader's last pass."""

    at: float
    error: str | None  # why the pass failed; None when it read
    unreadable: int  # messages skipped since the start


def feed_health(report: FeedReport | None, now: float) -> dict:
    """up / down / starting with a reason, and the messages skipped: whether what the console shows is current."""
    if report is None:
        return {"state": "starting", "reason": "the topics have not been read yet", "unreadable": 0}
    if report.error is not None:
        reason = f"cannot read the topics: {report.error}"
    elif now - report.at > FEED_SILENCE_S:
        reason = f"the topics were last read {now - report.at:.0f} s ago"
    else:
        reason = ""
    return {"state": "down" if reason else "up", "reason": reason, "unreadable": report.unreadable}


@dataclass
class CameraView:
    frames: deque[StoredFrame]
    detections: deque[dict]
    status: CameraStatus | None = None
    heat: dict | None = None
    line_totals: dict[str, dict[str, int]] = field(default_factory=dict)  # line id -> direction -> crossings


def detections_overlay(detections: Detections) -> dict:
    """Boxes, classes and track ids of one frame, as the browser draws them."""
    return {
        "seq": detections.seq, "captured_at": detections.captured_at,
        "width": detections.image_width, "height": detections.image_height,
        "boxes": [[round(value, 1) for value in box] for box in detections.xyxy],
        "class_name": list(detections.class_name),
        "confidence": [round(value, 2) for value in detections.confidence],
        "track_id": list(detections.track_id) if detections.track_id is not None else None,
    }


def live_frame(frames: deque[StoredFrame], detections: deque[dict]) -> tuple[StoredFrame, dict | None]:
    """The frame to show and its boxes: the newest frame, with its own detections or those of a frame captured
    within LIVE_BOXES_MAX_LAG_S of it; else the newest frame with detections of its own, captured at most
    LIVE_MAX_DETECTOR_LAG_S before the newest; else the newest frame, without boxes."""
    newest = frames[-1]

    def lag(item: dict) -> float:
        return abs(item["captured_at"] - newest.captured_at)

    near = [item for item in detections if lag(item) <= LIVE_BOXES_MAX_LAG_S]
    if near:
        return newest, min(near, key=lambda item: (item["seq"] != newest.seq, lag(item)))
    own = {item["seq"]: item for item in detections}
    for frame in reversed(frames):
        if abs(newest.captured_at - frame.captured_at) > LIVE_MAX_DETECTOR_LAG_S:
            break
        if frame.seq in own:
            return frame, own[frame.seq]
    return newest, None


def heat_grid(density: np.ndarray) -> dict:
    """The density map pooled to at most HEAT_MAX_CELLS a side and scaled to 0..255 of its own peak."""
    rows, cols = density.shape
    step = max(1, int(np.ceil(max(rows, cols) / HEAT_MAX_CELLS)))
    padded = np.zeros((int(np.ceil(rows / step)) * step, int(np.ceil(cols / step)) * step), dtype=np.float32)
    padded[:rows, :cols] = density
    pooled = padded.reshape(padded.shape[0] // step, step, padded.shape[1] // step, step).sum(axis=(1, 3))
    peak = float(pooled.max())
    scaled = np.zeros_like(pooled) if peak <= 0 else pooled / peak * 255
    return {"rows": int(pooled.shape[0]), "cols": int(pooled.shape[1]), "peak": peak,
            "cells": scaled.round().astype(int).ravel().tolist()}


def zone_point(metrics: ZoneMetrics) -> dict:
    """One zone window as a chart point and a status line."""
    return {
        "window_start": metrics.window_start, "window_end": metrics.window_end,
        "people": round(metrics.people_mean, 2), "density": round(metrics.density_mean_per_m2, 4),
        "density_max": round(metrics.density_max_per_m2, 4), "level": metrics.risk_level.value,
        "reason": metrics.risk_reason, "inflow": metrics.inflow, "outflow": metrics.outflow,
        "net_per_minute": round(metrics.net_accumulation_per_minute, 2), "surge": metrics.inflow_surge,
        "count_reliable": metrics.count_reliable, "flow_regime": metrics.flow_regime.value,
        "forecast": [{"horizon_s": point.horizon_s, "density": point.density_per_m2, "lower": point.lower_per_m2,
                      "upper": point.upper_per_m2} for point in metrics.forecast],
        "seconds_to": dict(metrics.seconds_to_threshold), "rise_over_s": metrics.rise_over_s,
        "last_seq": metrics.last_seq,
    }


def clock_stepped_back(newest: dict, metrics: ZoneMetrics, runs: list[tuple[int, int]]) -> bool:
    """Whether a window not held yet means that the camera's clock stepped back: it starts more than a window length
    before the newest window held, yet covers frames not seen before (its last frame in none of the zone's `runs` of
    windows' last frames, schemas.base.with_frame). A window sent again by an analyzer restarted from its checkpoint
    covers frames seen: it is an old window, not a new time."""
    return (not frame_seen(runs, metrics.last_seq)
            and metrics.window_start < newest["window_start"] - (metrics.window_end - metrics.window_start))


def heard_at(metrics: ZoneMetrics, received_at: float, backlog: bool) -> float:
    """When a zone window counts as heard of, which the zone's silence is measured from: when it arrived, as the
    camera's clock may be ahead of the console's or behind it; for one of the backlog read at start, which may have
    been sent long before, its end where that is earlier (the only time it carries)."""
    return min(metrics.window_end, received_at) if backlog else received_at


def replayed(newest: dict, metrics: ZoneMetrics, runs: list[tuple[int, int]]) -> bool:
    """Whether a window that would become the newest covers frames seen already, before the newest window held's: one
    sent again by an analyzer restarted from a checkpoint taken before the camera's clock stepped back, stamped with
    the time the clock showed then, later than the windows since. Its last frame lies in one of the zone's `runs`,
    below the newest's or in another run (an earlier producer's, numbered higher before its clock was set back). A
    window ending on the newest's last frame is a new one: the camera sent nothing since (a short gap)."""
    if not frame_seen(runs, metrics.last_seq):
        return False
    return metrics.last_seq < newest["last_seq"] or run_of(runs, metrics.last_seq) != run_of(runs, newest["last_seq"])


def kept_name(name: str, held: dict, configured: Collection[str], cap: int) -> bool:
    """Whether counts under `name` are kept: a configured name always, another while fewer than `cap` are held."""
    return name in held or name in configured or len(held) < cap


def event_summary(event: Event) -> dict:
    return {
        "event_id": event.event_id, "type": event.type, "state": event.state.value,
        "severity": event.severity.value, "camera_id": event.camera_id, "zone_id": event.zone_id,
        "track_ids": list(event.track_ids), "started_at": event.started_at, "updated_at": event.updated_at,
        "ended_at": event.ended_at, "reason": event.reason, "details": dict(event.details),
        "evidence_seq": event.evidence.seq if event.evidence else None,
    }


class ConsoleState:
    def __init__(self, frame_buffer: int, zone_history: int, recent_events: int, zone_stale_after_s: float):
        self.frame_buffer = frame_buffer
        self.zone_history = zone_history
        self.max_events = recent_events
        self.zone_stale_after_s = zone_stale_after_s
        self.lock = threading.Lock()
        self.cameras: dict[str, CameraView] = {}
        self.zones: dict[tuple[str, str], deque[dict]] = {}  # windows in the order of their start
        self.zone_received: dict[tuple[str, str], float] = {}  # the zone's newest window's `heard_at`
        self.zone_runs: dict[tuple[str, str], list[tuple[int, int]]] = {}  # its windows' last frames, as runs
        self.events: OrderedDict[str, dict] = OrderedDict()  # event id -> latest summary, oldest first
        self.evidence: OrderedDict[str, Evidence] = OrderedDict()
        # The topics are read together, so an event can come before its frame, a frame before its detections.
        self.awaiting_frame: OrderedDict[tuple[str, int], str] = OrderedDict()  # (camera, seq) -> event id
        self.awaiting_detections: OrderedDict[tuple[str, int], str] = OrderedDict()
        self.counted_windows = RecentKeys(10_000)
        self.bounds: LabelBounds | None = None  # the site's cameras and zones; until known, every id is kept
        # A density map older than the analytics use is not drawn either (maps come less often than detections).
        self.heat_max_age_s = CountingConfig().density_map_max_age_seconds
        self.lines: dict[str, dict[str, set[str]]] = {}  # camera -> its counting lines -> their two direction names
        self.feed: FeedReport | None = None

    def follow_site(self, config: Config) -> None:
        """From now on keeps only the site's cameras and zones, and forgets those of any other already kept; the
        site's counting lines and direction names are kept beyond LINES_PER_CAMERA."""
        with self.lock:
            self.bounds = LabelBounds(config)
            self.heat_max_age_s = config.analytics.counting.density_map_max_age_seconds
            self.lines = {camera.id: {line.id: {line.forward, line.backward} for line in camera.scene.counting_lines}
                          for camera in config.cameras if camera.scene is not None}
            self.cameras = {camera_id: view for camera_id, view in self.cameras.items() if self._kept(camera_id)}
            self.zones = {key: history for key, history in self.zones.items() if self._kept(*key)}
            self.zone_received = {key: at for key, at in self.zone_received.items() if key in self.zones}
            self.zone_runs = {key: runs for key, runs in self.zone_runs.items() if key in self.zones}

    def _kept(self, camera_id: str, zone_id: str | None = None) -> bool:
        if self.bounds is None:
            return True
        if zone_id is None:
            return camera_id in self.bounds.cameras
        return self.bounds.zone(camera_id, zone_id) is not None

    def _camera(self, camera_id: str) -> CameraView:
        view = self.cameras.get(camera_id)
        if view is None:
            view = self.cameras[camera_id] = CameraView(deque(maxlen=self.frame_buffer),
                                                        deque(maxlen=self.frame_buffer))
        return view

    # -- from the topics -----------------------------------------------------------------------------------------

    def on_frame(self, camera_id: str, seq: int, captured_at: float, jpeg: bytes, picture_size: tuple[int, int],
                 jpeg_size: tuple[int, int]) -> None:
        with self.lock:
            if not self._kept(camera_id):
                return
            self._camera(camera_id).frames.append(StoredFrame(seq, captured_at, jpeg, picture_size, jpeg_size))
            # Frames come in the order of their numbers: one awaited and not come by now never will (it expired
            # from the frame store), and a neighbour may stand in for it.
            for key in [key for key in self.awaiting_frame if key[0] == camera_id and key[1] <= seq]:
                event_id = self.awaiting_frame.pop(key)
                if event_id in self.events:
                    self._find_evidence(event_id, camera_id, key[1])

    def on_detections(self, detections: Detections) -> None:
        overlay = detections_overlay(detections)
        density = detections.density()
        heat = None if density is None else {**heat_grid(density), "captured_at": detections.captured_at}
        with self.lock:
            if not self._kept(detections.camera_id):
                return
            view = self._camera(detections.camera_id)
            view.detections.append(overlay)
            if heat is not None:
                view.heat = heat
            event_id = self.awaiting_detections.pop((detections.camera_id, detections.seq), None)
            evidence = self.evidence.get(event_id) if event_id is not None else None
            if evidence is not None:
                self.evidence[event_id] = Evidence(evidence.camera_id, evidence.frame, overlay)

    def on_camera_status(self, status: CameraStatus) -> None:
        with self.lock:
            if self._kept(status.camera_id):
                self._camera(status.camera_id).status = status

    def on_zone_metrics(self, metrics: ZoneMetrics, received_at: float, backlog: bool = False) -> None:
        """Keeps the windows in the order of their start; `backlog`: the window is one of those read at start. A
        window already kept (redelivered) is dropped, and so is one that would be the newest but is `replayed`.
        After the camera's clock stepped back, the analyzer starts its windows again from the new time
        (processors/analytics/crowd/analyzer.py): so does the zone's history, or a window stamped ahead would stay
        the newest for as long as the clock was ahead."""
        key, start = (metrics.camera_id, metrics.zone_id), metrics.window_start
        with self.lock:
            if not self._kept(*key):
                return
            history = self.zones.setdefault(key, deque(maxlen=self.zone_history))
            index = bisect.bisect(history, start, key=lambda point: point["window_start"])
            if index and history[index - 1]["window_start"] == start:
                return
            runs = self.zone_runs.get(key, [])
            if history and clock_stepped_back(history[-1], metrics, runs):
                history.clear()
                index = 0
            elif index == len(history) and history and replayed(history[-1], metrics, runs):
                return
            self.zone_runs[key] = with_frame(runs, metrics.last_seq)
            if len(history) == history.maxlen:
                if index == 0:
                    return  # older than every window kept
                history.popleft()
                index -= 1
            history.insert(index, zone_point(metrics))
            if index == len(history) - 1:
                self.zone_received[key] = heard_at(metrics, received_at, backlog)

    def on_line_counts(self, counts: LineCounts) -> None:
        """Adds a window's crossings to the line's totals, under the line and direction names the window carries
        (see LINES_PER_CAMERA)."""
        with self.lock:
            if not self._kept(counts.camera_id):
                return
            lines = self.lines.get(counts.camera_id, {})
            view = self._camera(counts.camera_id)
            if not kept_name(counts.line_id, view.line_totals, lines, LINES_PER_CAMERA):
                return
            if not self.counted_windows.first_time((counts.camera_id, counts.line_id, counts.window_start)):
                return
            totals = view.line_totals.setdefault(counts.line_id, {})
            directions = lines.get(counts.line_id, set())
            for direction, count in zip(counts.direction, counts.count, strict=True):
                if kept_name(direction, totals, directions, DIRECTIONS_PER_LINE):
                    totals[direction] = totals.get(direction, 0) + count

    def on_event(self, event: Event) -> None:
        with self.lock:
            kept = self.events.get(event.event_id)
            if kept is not None and kept["state"] == EventState.RESOLVED.value and (
                    event.details.get("closed_by") == CLOSED_BY_RESET
                    or event.state is not EventState.RESOLVED and event.updated_at <= kept["updated_at"]):
                # What a reset analyzer last stored as open, or a late copy of a message from before the end (sent
                # again): this incident really ended, as shown.
                return
            self.events[event.event_id] = event_summary(event)
            self.events.move_to_end(event.event_id)
            if event.evidence is not None and event.event_id not in self.evidence:
                self._find_evidence(event.event_id, event.evidence.camera_id, event.evidence.seq)
            while len(self.events) > self.max_events:
                dropped, _ = self.events.popitem(last=False)
                self.evidence.pop(dropped, None)

    def _find_evidence(self, event_id: str, camera_id: str, seq: int) -> None:
        """The buffered frame `seq`; a newer one is waited for; one not in the buffer: the nearest buffered frame
        at most EVIDENCE_MAX_SEQ_GAP frames away, else none."""
        view = self.cameras.get(camera_id)
        if view is None or not view.frames or seq > view.frames[-1].seq:
            self._remember(self.awaiting_frame, (camera_id, seq), event_id)
            return
        nearest = min(view.frames, key=lambda stored: abs(stored.seq - seq))
        if abs(nearest.seq - seq) <= EVIDENCE_MAX_SEQ_GAP:
            self._attach(event_id, camera_id, nearest)

    def _attach(self, event_id: str, camera_id: str, frame: StoredFrame) -> None:
        view = self.cameras[camera_id]
        detections = next((item for item in view.detections if item["seq"] == frame.seq), None)
        self.evidence[event_id] = Evidence(camera_id, frame, detections)
        if detections is None:
            self._remember(self.awaiting_detections, (camera_id, frame.seq), event_id)

    def _remember(self, waiting: OrderedDict, key: tuple[str, int], event_id: str) -> None:
        waiting[key] = event_id
        while len(waiting) > self.max_events:
            waiting.popitem(last=False)

    # -- for the web server --------------------------------------------------------------------------------------

    def frame(self, camera_id: str, seq: int | None = None) -> StoredFrame | None:
        """The buffered frame `seq` (the one an overlay was drawn for), else the latest."""
        with self.lock:
            view = self.cameras.get(camera_id)
            if view is None or not view.frames:
                return None
            if seq is not None:
                for stored in reversed(view.frames):
                    if stored.seq == seq:
                        return stored
            return view.frames[-1]

    def camera_live(self, camera_id: str, now: float) -> dict:
        """The identity of the frame to show (`live_frame`), with how much older it is than the newest frame
        (`behind_s`), its detections, health, heat, line totals."""
        with self.lock:
            view = self.cameras.get(camera_id)
            if view is None:
                return {"frame": None, "detections": None, "status": None, "heat": None, "line_totals": {}}
            frame, detections = live_frame(view.frames, view.detections) if view.frames else (None, None)
            heat = view.heat if view.heat and now - view.heat["captured_at"] <= self.heat_max_age_s else None
            status = view.status.model_dump(mode="json") if view.status else None
            return {
                "frame": None if frame is None else {"seq": frame.seq, "captured_at": frame.captured_at,
                                                     "age_s": round(max(0.0, now - frame.captured_at), 2),
                                                     "behind_s": round(view.frames[-1].captured_at
                                                                       - frame.captured_at, 2),
                                                     # the browser draws boxes and geometry at this size
                                                     "width": frame.picture_size[0],
                                                     "height": frame.picture_size[1]},
                "detections": detections, "status": status, "heat": heat,
                "line_totals": {line: dict(totals) for line, totals in view.line_totals.items()},
            }

    def zone_now(self, camera_id: str, zone_id: str, now: float) -> dict | None:
        """The zone's newest window, with its level turned UNKNOWN when windows stopped arriving (see `heard_at`)."""
        with self.lock:
            history = self.zones.get((camera_id, zone_id))
            if not history:
                return None
            latest = dict(history[-1])
            silent_s = now - self.zone_received[camera_id, zone_id]
        if silent_s > self.zone_stale_after_s:
            latest["level"] = RiskLevel.UNKNOWN.value
            latest["reason"] = f"no zone window for {silent_s:.0f} s"
        return latest

    def zone_history_of(self, camera_id: str, zone_id: str) -> list[dict]:
        with self.lock:
            return list(self.zones.get((camera_id, zone_id), ()))

    def on_feed(self, report: FeedReport) -> None:
        with self.lock:
            self.feed = report

    def feed_report(self) -> FeedReport | None:
        with self.lock:
            return self.feed

    def event(self, event_id: str) -> dict | None:
        with self.lock:
            return self.events.get(event_id)

    def evidence_of(self, event_id: str) -> Evidence | None:
        with self.lock:
            return self.evidence.get(event_id)

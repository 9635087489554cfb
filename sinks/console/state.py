"""What the console shows, as plain bounded state: the latest picture, detections and health per camera, recent
zone windows per zone, line totals, recent events with their evidence frames.

Every collection has a cap (the console runs for months): once the site is known (`follow_site`) only its cameras
and zones are kept, and line totals keep the first LINES_PER_CAMERA line ids of a camera and as many direction names.
Nothing here touches Kafka or HTTP, so it is tested with plain messages. The topic reader calls the `on_*` methods
from its thread, the web server reads snapshots from its own: one lock guards both.
"""
from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np

from schemas import CameraStatus, Detections, Event, LineCounts, RiskLevel, ZoneMetrics
from schemas.settings.config import Config
from sinks.metrics_exporter import LabelBounds, RecentKeys

HEAT_MAX_CELLS = 48  # the density heat overlay is sent at most this many cells wide or high
HEAT_MAX_AGE_S = 15.0  # an older density map is not drawn (the density counter runs less often than the detector)
LINES_PER_CAMERA = 64  # line totals kept per camera, and directions kept in all
FEED_SILENCE_S = 30.0  # the topic reader reports every fraction of a second: silent this long, it has stopped


@dataclass(frozen=True)
class StoredFrame:
    seq: int
    captured_at: float
    received_at: float
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
        "seconds_to": dict(metrics.seconds_to_threshold),
    }


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
        self.zones: dict[tuple[str, str], deque[dict]] = {}
        self.events: OrderedDict[str, dict] = OrderedDict()  # event id -> latest summary, oldest first
        self.evidence: OrderedDict[str, Evidence] = OrderedDict()
        # The topics are read together, so an event can come before its frame, a frame before its detections.
        self.awaiting_frame: OrderedDict[tuple[str, int], str] = OrderedDict()  # (camera, seq) -> event id
        self.awaiting_detections: OrderedDict[tuple[str, int], str] = OrderedDict()
        self.counted_windows = RecentKeys(10_000)
        self.bounds: LabelBounds | None = None  # the site's cameras and zones; until known, every id is kept
        self.feed: FeedReport | None = None

    def follow_site(self, config: Config) -> None:
        """From now on keeps only the site's cameras and zones, and forgets those of any other already kept."""
        with self.lock:
            bounds = LabelBounds(config, limit=LINES_PER_CAMERA)
            if self.bounds is not None:
                bounds.seen = self.bounds.seen  # line ids already kept stay counted against the cap
            self.bounds = bounds
            self.cameras = {camera_id: view for camera_id, view in self.cameras.items() if self._kept(camera_id)}
            self.zones = {key: history for key, history in self.zones.items() if self._kept(*key)}

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

    def on_frame(self, camera_id: str, seq: int, captured_at: float, jpeg: bytes, received_at: float,
                 picture_size: tuple[int, int], jpeg_size: tuple[int, int]) -> None:
        with self.lock:
            if not self._kept(camera_id):
                return
            frame = StoredFrame(seq, captured_at, received_at, jpeg, picture_size, jpeg_size)
            self._camera(camera_id).frames.append(frame)
            event_id = self.awaiting_frame.pop((camera_id, seq), None)
            if event_id is not None and event_id in self.events:
                self._attach(event_id, camera_id, frame)

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

    def on_zone_metrics(self, metrics: ZoneMetrics) -> None:
        with self.lock:
            if not self._kept(metrics.camera_id, metrics.zone_id):
                return
            history = self.zones.setdefault((metrics.camera_id, metrics.zone_id), deque(maxlen=self.zone_history))
            if history and history[-1]["window_start"] >= metrics.window_start:
                return  # a redelivered or late window: the chart runs forward in time
            history.append(zone_point(metrics))

    def on_line_counts(self, counts: LineCounts) -> None:
        with self.lock:
            if not self._kept(counts.camera_id) or not self._within_cap(f"line {counts.camera_id}", counts.line_id):
                return
            if not self.counted_windows.first_time((counts.camera_id, counts.line_id, counts.window_start)):
                return
            totals = self._camera(counts.camera_id).line_totals.setdefault(counts.line_id, {})
            for direction, count in zip(counts.direction, counts.count, strict=True):
                if self._within_cap("direction", direction):
                    totals[direction] = totals.get(direction, 0) + count

    def _within_cap(self, label: str, value: str) -> bool:
        """True for one of the first values of the label (all of them until the site is known)."""
        return self.bounds is None or self.bounds.free(label, value) == value

    def on_event(self, event: Event) -> None:
        with self.lock:
            self.events[event.event_id] = event_summary(event)
            self.events.move_to_end(event.event_id)
            if event.evidence is not None and event.event_id not in self.evidence:
                self._find_evidence(event.event_id, event.evidence.camera_id, event.evidence.seq)
            while len(self.events) > self.max_events:
                dropped, _ = self.events.popitem(last=False)
                self.evidence.pop(dropped, None)

    def _find_evidence(self, event_id: str, camera_id: str, seq: int) -> None:
        """The buffered frame `seq`; a newer one is waited for; an older one gone from the buffer: the nearest."""
        view = self.cameras.get(camera_id)
        if view is None or not view.frames or seq > view.frames[-1].seq:
            self._remember(self.awaiting_frame, (camera_id, seq), event_id)
            return
        self._attach(event_id, camera_id, min(view.frames, key=lambda stored: abs(stored.seq - seq)))

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
        """The latest frame's identity, its detections (those of the same frame when present), health, heat, lines."""
        with self.lock:
            view = self.cameras.get(camera_id)
            if view is None:
                return {"frame": None, "detections": None, "status": None, "heat": None, "line_totals": {}}
            frame = view.frames[-1] if view.frames else None
            detections = None
            if view.detections:
                same = [item for item in view.detections if frame is not None and item["seq"] == frame.seq]
                detections = same[-1] if same else view.detections[-1]
            heat = view.heat if view.heat and now - view.heat["captured_at"] <= HEAT_MAX_AGE_S else None
            status = view.status.model_dump(mode="json") if view.status else None
            return {
                "frame": None if frame is None else {"seq": frame.seq, "captured_at": frame.captured_at,
                                                     "age_s": round(max(0.0, now - frame.captured_at), 2),
                                                     # the browser draws boxes and geometry at this size
                                                     "width": frame.picture_size[0],
                                                     "height": frame.picture_size[1]},
                "detections": detections, "status": status, "heat": heat,
                "line_totals": {line: dict(totals) for line, totals in view.line_totals.items()},
            }

    def zone_now(self, camera_id: str, zone_id: str, now: float) -> dict | None:
        """The zone's last window, with its level turned UNKNOWN when windows stopped arriving."""
        with self.lock:
            history = self.zones.get((camera_id, zone_id))
            if not history:
                return None
            latest = dict(history[-1])
        if now - latest["window_end"] > self.zone_stale_after_s:
            latest["level"] = RiskLevel.UNKNOWN.value
            latest["reason"] = f"no zone window for {now - latest['window_end']:.0f} s"
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

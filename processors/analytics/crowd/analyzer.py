"""The crowd analyzer of one camera: counts, density, flow, movement, forecast and risk level per zone.

Pure (no Kafka, no clock): output depends only on the detections stream, so a replay gives the same metrics and a
restart from `state_bytes` continues the same windows and levels. Windows run on event time (frame capture time) and
close when the first frame of a later hop arrives; a capture time more than a window before the open hop (a clock
set back, or the right time again after a frame stamped far ahead) starts them again from there. Frames at or below
the last sequence number seen are redeliveries and are ignored. The pieces live in processors.analytics.crowd; this
module composes them per frame and window.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field, replace

import msgpack
import numpy as np

from processors.analytics.contract import AnalyticsOutput
from processors.analytics.crowd.counting import CONFIDENCE_UNRELIABLE, fuse_counts
from processors.analytics.crowd.feet_map import (
    PERSON_BOX_DTYPE,
    FeetMap,
    PersonHeights,
    PictureHeights,
    calibrated_head_height,
    heads_above,
)
from processors.analytics.crowd.forecast import (
    HoltState,
    borne_out_rise,
    forecast_points,
    holt_update,
    seconds_to_thresholds_surely,
    slope_per_s,
)
from processors.analytics.crowd.local_density import GroundGrid, uniform_peak_per_m2
from processors.analytics.crowd.picture_sizes import PerPictureSize
from processors.analytics.crowd.risk import RiskInputs, RiskState, next_level
from processors.analytics.crowd.tracks import CountingLine, TrackTable
from processors.analytics.crowd.windows import Bucket, FrameSample, bucket_start, hop_index
from schemas import (
    PERSON_CLASS_ID,
    UNTRACKED,
    Detections,
    Event,
    EventState,
    FrameRef,
    RiskLevel,
    Severity,
    ZoneMetrics,
)
from schemas.base import frame_seen, runs_up_to, with_frame
from schemas.detections import foot_points
from schemas.geometry import PolygonZone, polygon_area, polygon_cell_weights
from schemas.settings.config import CameraConfig, Config
from schemas.settings.crowd import (
    MIN_ZONE_AREA_M2,
    AnalyticsConfig,
    ZoneConfig,
    area_disagreement,
    zone_ground_area_m2,
)
from schemas.settings.lines import InwardSide
from schemas.zone_metrics import CountSource, FlowRegime

log = logging.getLogger(__name__)

RISING_PER_MINUTE = 0.05  # p/m² per minute: a density trend above this counts as rising (stop-and-go rule)
# A zone's density stands for all of it: with more of it outside the picture than this allows, a packed crowd there
# would go unseen (the map and the detector see only the picture).
MIN_SHARE_IN_PICTURE = 0.95
# How long the pipeline takes to reach a camera's live frames once it starts: the inference stage loads its model,
# then sheds the frames that aged past model.max_frame_age_s (10 s by default) meanwhile.
STARTUP_GRACE_S = 10.0
# A frame stamped this far before its zone's map may leave the map's age unknown: a live stream's reconnection can place
# its first burst of frames a few seconds back (producers.capture.MediaClock), and counted from such a frame a map
# stays fresh at most this much past its maximum age, whereas a clock set back further would keep it fresh for the step.
MAP_CLOCK_STEP_TOLERANCE_S = 5.0
SEVERITY = {RiskLevel.UNKNOWN: Severity.WARNING, RiskLevel.NORMAL: Severity.INFO, RiskLevel.CAUTION: Severity.INFO,
            RiskLevel.WARNING: Severity.WARNING, RiskLevel.DANGER: Severity.CRITICAL,
            RiskLevel.CRITICAL: Severity.CRITICAL}


@dataclass
class SurgeState:
    baseline_per_minute: float = 0.0
    windows: int = 0
    active: bool = False
    started_at: float | None = None  # window end at which the active surge was flagged: its episode's id


@dataclass
class ZoneState:
    buckets: list[Bucket] = field(default_factory=list)
    model_people: float | None = None  # the density model's last count for the zone, and its capture time
    model_at: float | None = None
    holt: HoltState | None = None
    risk: RiskState = field(default_factory=RiskState)
    surge: SurgeState = field(default_factory=SurgeState)
    first_at: float | None = None  # capture time of the zone's first frame (a zone added later starts later)


@dataclass
class CrowdState:
    """Everything needed to resume a camera after a restart; plain data for a changelog table."""

    last_seq: int = -1
    first_captured_at: float | None = None
    open_bucket: float | None = None  # start of the newest hop bucket
    zones: dict[str, ZoneState] = field(default_factory=dict)
    tracks: dict[str, bytes] | None = None  # TrackTable columns
    track_lines: list[str] | None = None  # which counting line each of the tracks' line columns belongs to
    clock_stepped_at: float | None = None  # capture time of the first frame after the latest clock step
    seen_runs: list[tuple[int, int]] = field(default_factory=list)  # frame numbers applied (schemas.base.with_frame)
    # PersonHeights.boxes (what a calibration's unit is judged on), or an uncalibrated camera's PictureHeights.boxes,
    # as raw bytes
    person_boxes: bytes = b""

    def encode(self) -> bytes:
        """msgpack, the track columns and person boxes as raw arrays: the stage stores it after every frame, so it must
        be cheap."""
        zones = {zone_id: {"buckets": [vars(bucket) for bucket in zone.buckets], "model_people": zone.model_people,
                           "model_at": zone.model_at, "holt": vars(zone.holt) if zone.holt else None,
                           "risk": [zone.risk.level.value, zone.risk.since, zone.risk.episode_started,
                                    zone.risk.known.value if zone.risk.known else None, zone.risk.known_since,
                                    zone.risk.lower_since, zone.risk.unseen_since],
                           "surge": vars(zone.surge), "first_at": zone.first_at}
                 for zone_id, zone in self.zones.items()}
        return msgpack.packb([self.last_seq, self.first_captured_at, self.open_bucket, zones, self.tracks,
                              self.track_lines, self.clock_stepped_at, self.seen_runs, self.person_boxes])

    @classmethod
    def decode(cls, raw: bytes | None) -> CrowdState:
        if not raw:
            return cls()
        # A record stored before clock_stepped_at, seen_runs or person_boxes existed lacks those `later` fields; one
        # without runs has seen the frames up to last_seq, as far back as a run reaches.
        last_seq, first_captured_at, open_bucket, zones, tracks, track_lines, *later = msgpack.unpackb(raw)
        clock_stepped_at, seen_runs, person_boxes = [*later, None, None, None][:3]
        if seen_runs is None:
            seen_runs = runs_up_to(last_seq)
        return cls(last_seq, first_captured_at, open_bucket, {
            zone_id: ZoneState(
                buckets=[Bucket.from_record(bucket) for bucket in zone["buckets"]],
                model_people=zone["model_people"], model_at=zone["model_at"],
                holt=HoltState(**zone["holt"]) if zone["holt"] else None,
                risk=risk_state(*zone["risk"]),
                surge=SurgeState(**zone["surge"]),
                # a zone stored before zones kept their own start has been there since the camera's
                first_at=zone.get("first_at", first_captured_at),
            ) for zone_id, zone in zones.items()}, tracks, track_lines, clock_stepped_at,
            [tuple(run) for run in seen_runs], person_boxes or b"")


def risk_state(level: str, since: float | None, episode_started: float | None, known: str | None = None,
               known_since: float | None = None, lower_since: float | None = None,
               unseen_since: float | None = None) -> RiskState:
    """A zone's stored risk state; one stored by an earlier version lacks the fields after `episode_started`."""
    return RiskState(RiskLevel(level), since, episode_started, RiskLevel(known) if known else None, known_since,
                     lower_since, unseen_since)


@dataclass(frozen=True)
class InView:
    share: float  # of the zone's ground inside the picture (of its polygon's pixels without a calibration)
    area_m2: float  # what a density is measured over: the ground in the picture (the whole area without a calibration)
    of: str  # what the share is of, in words


class ZoneGeometry:
    """A zone's fixed geometry: image polygon, area, ground grid (calibrated cameras) and counting lines."""

    def __init__(self, zone: ZoneConfig, camera: CameraConfig, analytics: AnalyticsConfig, first_line: int):
        self.camera_id = camera.id
        self.config = zone
        self.polygon = PolygonZone(zone.polygon)
        self.area_m2 = zone_ground_area_m2(zone, camera.calibration)
        # A measured area larger than the calibration's makes the crowd that much sparser than it is: one of them is
        # wrong, and while it may be the measure, a calm level is not proven.
        calibrated = area_disagreement(zone, camera.calibration)
        self.area_problem = (f"area_m2 is {zone.area_m2:g} m² but the calibration gives the zone {calibrated:.3g} m²"
                             if calibrated is not None and zone.area_m2 > calibrated else None)
        self.grid = None
        self.homography = camera.calibration.to_homography() if camera.calibration else None
        if self.homography is not None:
            ground = self.homography.to_ground(np.asarray(zone.polygon, dtype=float))
            movement = analytics.movement
            self.grid = GroundGrid(ground, movement.local_density_radius_m, movement.grid_cell_m)
        self.lines = []
        for entrance in zone.entrances:
            line = CountingLine(entrance.start, entrance.end, 1)
            if entrance.inward == InwardSide.AUTO:
                sign = self.polygon.side_of_segment(line.start, line.end)
            else:  # image y points down, so positive cross products are on the right looking start -> end
                sign = 1 if entrance.inward == InwardSide.RIGHT else -1
            self.lines.append(CountingLine(entrance.start, entrance.end, sign))
        # What makes a track's line columns meaningful: a moved, re-sided or renamed line is another line.
        self.line_keys = [f"{zone.id}/{entrance.id} {line.start}->{line.end} {line.inward_sign:+d}"
                          for entrance, line in zip(zone.entrances, self.lines, strict=True)]
        self.line_indices = range(first_line, first_line + len(self.lines))
        self._map_weights = PerPictureSize(functools.partial(polygon_cell_weights, self.config.polygon))
        self._in_view = PerPictureSize(self._measure_in_view)

    def in_view(self, image_size: tuple[int, int]) -> InView:
        """How much of the zone the picture shows (logged once per picture size when too little).

        Measured on the ground where the camera is calibrated, as the share of the zone's ground cells whose centre
        the picture shows with the head of a person standing there: seen along its length, a zone's far metres take
        few pixels, and an alley whose far end lies 12 px above the picture keeps 99.9 % of its pixels but 66 % of
        its ground. The density map counts people by their heads, so a cell whose feet are in the picture but whose
        heads are above it is not seen either (an alley drawn to 1 px below the top read a packed crowd as caution).
        The density is then the people seen over the ground seen, which holds for the part in view whatever the
        share. Without a calibration only the pixels tell, and the density stays over the whole area."""
        return self._in_view(image_size)

    def _measure_in_view(self, image_size: tuple[int, int]) -> InView:
        width, height = image_size
        cells = self.grid.inside_centres if self.grid is not None else np.empty((0, 2))
        if len(cells):
            feet = self.homography.to_image(cells)
            x, y = feet.T
            head_y = heads_above(self.homography, feet)[:, 1]
            share = float(((x >= 0) & (x <= width) & (head_y >= 0) & (y <= height)).mean())
            area_m2 = max(self.area_m2 * share, MIN_ZONE_AREA_M2)  # a sliver in view would inflate a few people
            of = "the zone's ground (with the heads of people standing on it)"
        else:
            inside = float(polygon_cell_weights(self.config.polygon, image_size, (1, 1))[0, 0]) * width * height
            share, area_m2, of = inside / polygon_area(self.config.polygon), self.area_m2, "the zone"
        if share < MIN_SHARE_IN_PICTURE:
            log.warning("camera %s zone %s: only %.0f%% of %s lies inside the %dx%d picture; its count is "
                        "unreliable until it is redrawn inside", self.camera_id, self.config.id, share * 100, of,
                        width, height)
        return InView(share, area_m2, of)

    def model_people(self, density: np.ndarray, image_size: tuple[int, int]) -> float:
        return float((density * self._map_weights(image_size, density.shape)).sum())


class CrowdAnalyzer:
    """Implements processors.analytics.contract.CameraAnalyzer for a camera's crowd zones."""

    def __init__(self, camera: CameraConfig, analytics: AnalyticsConfig, state: CrowdState | None = None):
        self.camera = camera
        self.config = analytics
        self.step = analytics.step_seconds
        self.hops_per_window = round(analytics.window_seconds / self.step)
        self.homography = camera.calibration.to_homography() if camera.calibration else None
        self.state = state or CrowdState()
        self.feet_map = FeetMap(calibrated_head_height(self.homography)) if self.homography else None
        self.person_heights = PersonHeights(self.homography) if self.homography else None
        self.picture_heights = None if self.homography else PictureHeights()
        self._judge_heights(np.frombuffer(self.state.person_boxes, dtype=PERSON_BOX_DTYPE), None)
        self.zones: dict[str, ZoneGeometry] = {}
        for zone in camera.zones:
            self.zones[zone.id] = ZoneGeometry(zone, camera, analytics,
                                               sum(len(z.lines) for z in self.zones.values()))
        self.lines = [line for zone in self.zones.values() for line in zone.lines]
        self.line_keys = [key for zone in self.zones.values() for key in zone.line_keys]
        self.image_size: tuple[int, int] | None = None  # the latest frame's picture
        # Zones removed from the configuration are forgotten once what they had open is resolved (with the next
        # frame: nothing else would ever close it); new ones start empty.
        self.removed_zones = {zone_id: zone for zone_id, zone in self.state.zones.items() if zone_id not in self.zones}
        self.state.zones = {zone_id: self.state.zones.get(zone_id) or ZoneState() for zone_id in self.zones}
        if self.state.tracks and self.state.track_lines != self.line_keys:
            # Track columns hold one side/pending entry per counting line, by position: after lines were added,
            # removed, reordered or moved they would be misread. Tracks are re-learnt within a few frames.
            log.warning("camera %s: counting lines changed since the state was saved; starting with no tracks",
                        camera.id)
            self.state.tracks = None
        self.tracks = TrackTable.from_columns(len(self.lines), self.state.tracks) if self.state.tracks \
            else TrackTable(len(self.lines))
        self.state.track_lines = self.line_keys

    @classmethod
    def restore(cls, camera: CameraConfig, config: Config, state: bytes | None) -> CrowdAnalyzer:
        return cls(camera, config.analytics, CrowdState.decode(state))

    def state_bytes(self) -> bytes:
        self.state.tracks = self.tracks.to_columns()
        return self.state.encode()

    def _judge_heights(self, boxes: np.ndarray, image_size: tuple[int, int] | None) -> None:
        """Takes person boxes until the camera's people are judged: a calibration's unit by PersonHeights, or an
        uncalibrated picture's heights by PictureHeights, whose density maps then go to the feet too. The boxes
        judged go to the state (those the camera's present calibration, or lack of one, takes)."""
        if self.person_heights is not None and self.person_heights.judging:
            if self.person_heights.add(boxes, image_size):
                log.warning("camera %s: %s; its zones' counts are unreliable until it is calibrated in metres",
                            self.camera.id, self.person_heights.problem)
            self.state.person_boxes = self.person_heights.boxes.tobytes()
        elif self.picture_heights is not None and self.picture_heights.judging:
            self.picture_heights.add(boxes, image_size)
            self.state.person_boxes = self.picture_heights.boxes.tobytes()
            if not self.picture_heights.judging:
                self.feet_map = FeetMap(self.picture_heights.head_height_px)

    def resolve_open(self, at: float, reason: str) -> list[Event]:
        """Each zone's risk episode and inflow surge still open, resolved at `at` (a removed zone's too)."""
        removed, self.removed_zones = self.removed_zones, {}
        return self._resolve({**removed, **self.state.zones}, at, reason)

    def _resolve(self, zones: dict[str, ZoneState], at: float, reason: str) -> list[Event]:
        evidence = FrameRef(camera_id=self.camera.id, seq=self.state.last_seq) if self.state.last_seq >= 0 else None
        events = []
        for zone_id, zone in zones.items():
            risk, surge = zone.risk, zone.surge
            if risk.level != RiskLevel.NORMAL and risk.episode_started is not None:
                events.append(Event(
                    event_id=self._risk_id(zone_id, risk.episode_started), type="risk_level_changed",
                    state=EventState.RESOLVED, severity=SEVERITY[RiskLevel.NORMAL], camera_id=self.camera.id,
                    zone_id=zone_id, started_at=risk.episode_started, updated_at=at, ended_at=at, confidence=1.0,
                    evidence=evidence, reason=f"{risk.level.value} until {reason}",
                    details={"from_level": risk.level.value}))
            if surge.active and surge.started_at is not None:
                events.append(Event(
                    event_id=self._surge_id(zone_id, surge.started_at), type="inflow_surge",
                    state=EventState.RESOLVED, severity=Severity.WARNING, camera_id=self.camera.id, zone_id=zone_id,
                    started_at=surge.started_at, updated_at=at, ended_at=at, confidence=1.0, evidence=evidence,
                    reason=f"surge until {reason}"))
            zone.risk, zone.surge = RiskState(), SurgeState()
        return events

    def update(self, detections: Detections) -> AnalyticsOutput:
        """Adds one frame's detections; returns the metrics (and level changes) of windows this frame closed.

        The frame counts as seen only once it is fully processed, so one that raised is not taken for a redelivery
        when it comes again. An exception can leave the analyzer partly updated: the caller discards it and
        restores the last stored state (processors.analytics.stage does).
        """
        if frame_seen(self.state.seen_runs, detections.seq):
            return AnalyticsOutput()
        at = detections.captured_at
        start = bucket_start(at, self.step)
        # Measuring first: input a frame cannot be measured on raises before any window is closed.
        samples = self._measure(detections)
        if self.state.first_captured_at is None:
            self.state.first_captured_at = at
        removed = self._resolve(self.removed_zones, at, "the zone was removed from the configuration")
        self.removed_zones = {}
        output = AnalyticsOutput()
        open_bucket = self.state.open_bucket
        # Later is a gap (the camera was away), reported by the windows' frame coverage; earlier is a clock step.
        stepped = open_bucket is not None and \
            hop_index(start, self.step) < hop_index(open_bucket, self.step) - self.hops_per_window
        if open_bucket is not None and (start > open_bucket or stepped):
            output = self._close_windows(hop_index(open_bucket, self.step) + 1)
        if stepped:
            self._step_clock(at)
        if open_bucket is None or start > open_bucket or stepped:
            self.state.open_bucket = start
        for zone_id, sample in samples.items():
            if self.state.zones[zone_id].first_at is None:
                self.state.zones[zone_id].first_at = at
            buckets = self.state.zones[zone_id].buckets
            if not buckets or buckets[-1].start != self.state.open_bucket:
                buckets.append(Bucket(start=self.state.open_bucket))
            buckets[-1].add(sample)
        self.state.last_seq = detections.seq
        self.state.seen_runs = with_frame(self.state.seen_runs, detections.seq)
        output.events[:0] = removed
        return output

    def _step_clock(self, at: float) -> None:
        """The capture time went back by more than a window: the kept buckets and maps belong to the old timeline and
        go, and windows that began before `at` report UNKNOWN (`_window`)."""
        log.warning("camera %s: capture time went back from about %.0f to %.0f; windows start again from there",
                    self.camera.id, self.state.open_bucket, at)
        self.state.clock_stepped_at = at
        # Times from a timeline ahead of the new one are brought back to it: frame coverage, ages, dwell times and
        # the forecast's steps count from there, and tracks expire in the new time.
        self.state.first_captured_at = min(self.state.first_captured_at, at)
        for zone in self.state.zones.values():
            zone.buckets = []
            if zone.first_at is not None:
                zone.first_at = min(zone.first_at, at)
            if zone.model_at is not None and zone.model_at > at:
                # A map from the timeline ahead is of no known age: a clock set back as the camera came back from
                # an outage hides how long ago it was made, and the crowd it counted may have packed since.
                zone.model_people = zone.model_at = None
            if zone.risk.since is not None:
                zone.risk.since = min(zone.risk.since, at)
            if zone.risk.known_since is not None:
                zone.risk.known_since = min(zone.risk.known_since, at)
            if zone.risk.lower_since is not None:
                zone.risk.lower_since = min(zone.risk.lower_since, at)
            if zone.risk.unseen_since is not None:
                zone.risk.unseen_since = min(zone.risk.unseen_since, at)
            if zone.holt is not None:
                zone.holt.at = min(zone.holt.at, at)
                # the trend's evidence from the timeline ahead would be fitted together with the new one's
                zone.holt.recent = [point for point in zone.holt.recent if point[0] <= at]
        self.tracks.last_seen = np.minimum(self.tracks.last_seen, at)
        self.tracks.step_at = np.minimum(self.tracks.step_at, at)

    # -- one frame -------------------------------------------------------------------------------------------

    def _measure(self, detections: Detections) -> dict[str, FrameSample]:
        # A frozen or blank picture shows nothing of the zone now: nobody in it counts, moves or crosses a line, and a
        # density map of it is not taken (processors.analytics.crowd.counting).
        fault = detections.picture_fault
        people = detections.class_mask(PERSON_CLASS_ID) & (fault is None)
        boxes = detections.boxes()[people]
        feet = foot_points(boxes)
        heights = boxes[:, 3] - boxes[:, 1]
        ground = self.homography.to_ground(feet) if self.homography else np.full_like(feet, np.nan)
        # A person counts where the picture shows the ground they stand on whole, head too (ZoneGeometry.in_view).
        counted = heads_above(self.homography, feet)[:, 1] >= 0 if self.homography else np.ones(len(feet), bool)
        velocity = np.full_like(feet, np.nan)
        crossings = []
        if detections.track_id is not None and len(feet):
            track_ids = np.asarray(detections.track_id, dtype=np.int64)[people]
            # Unconfirmed detections share one id and are no track: they count as people, but never move or cross.
            confirmed = np.flatnonzero(track_ids != UNTRACKED)
            _, first = np.unique(track_ids[confirmed], return_index=True)  # a tracker should not repeat an id
            rows = confirmed[np.sort(first)]
            movement = self.config.movement
            velocity_rows, crossings = self.tracks.update(
                detections.captured_at, track_ids[rows], feet[rows], heights[rows], ground[rows], self.lines,
                movement.velocity_smoothing, movement.max_speed_m_s, movement.track_ttl_seconds,
                movement.crossing_debounce_frames, movement.max_tracks)
            velocity[rows] = velocity_rows
        density = detections.density() if fault is None else None
        image_size = self.image_size = (detections.image_width, detections.image_height)
        self._judge_heights(boxes, image_size)
        if density is not None and self.feet_map is not None:
            density = self.feet_map.moved(density, image_size)
        samples = {}
        for zone_id, zone in self.zones.items():
            state = self.state.zones[zone_id]
            inside = zone.polygon.contains(feet)
            detector_people = int((inside & counted).sum())
            if density is not None:
                state.model_people, state.model_at = zone.model_people(density, image_size), detections.captured_at
            elif state.model_at is not None and detections.captured_at < state.model_at - MAP_CLOCK_STEP_TOLERANCE_S:
                # The clock went back (by less than a window, or _step_clock would have gone): the map's age can no
                # longer be told, and counted from the new time it would stay fresh for the step past its maximum.
                state.model_people = state.model_at = None
            age = None if state.model_at is None else max(0.0, detections.captured_at - state.model_at)
            fused = fuse_counts(detector_people, state.model_people, self.config.counting, age,
                                self.config.density_model.enabled, fault)
            in_view = zone.in_view(image_size)
            if in_view.share < MIN_SHARE_IN_PICTURE:
                fused = replace(fused, confidence=CONFIDENCE_UNRELIABLE, reliable=False,
                                reason=f"only {in_view.share:.0%} of {in_view.of} lies inside the picture (the rest "
                                "is not seen)")
            if self.person_heights is not None and self.person_heights.problem:
                fused = replace(fused, confidence=CONFIDENCE_UNRELIABLE, reliable=False,
                                reason=self.person_heights.problem)
            if zone.area_problem:
                fused = replace(fused, confidence=CONFIDENCE_UNRELIABLE, reliable=False, reason=zone.area_problem)
            sample = FrameSample(
                people=fused.people, detector_people=detector_people,
                model_people=state.model_people if fused.reliable else None,
                source=fused.source.value, confidence=fused.confidence, reliable=fused.reliable,
                unreliable_reason=fused.reason, seq=detections.seq,
                inflow=sum(1 for c in crossings if c.line_index in zone.line_indices and c.inward),
                outflow=sum(1 for c in crossings if c.line_index in zone.line_indices and not c.inward),
            )
            if zone.grid is not None:
                fields_ = zone.grid.fields(ground, velocity if detections.track_id is not None else None)
                sample.peak_local_density = fields_.peak_density_per_m2
                sample.velocity_variance = fields_.velocity_variance_m2_per_s2
                sample.pressure = fields_.peak_pressure_per_s2
                moving = velocity[inside]
                moving = moving[np.isfinite(moving).all(axis=1)]
                if len(moving):
                    sample.speed_m_s = float(np.hypot(moving[:, 0], moving[:, 1]).mean())
            samples[zone_id] = sample
        return samples

    # -- one window ------------------------------------------------------------------------------------------

    def _close_windows(self, end_hop: int) -> AnalyticsOutput:
        """Closes the window that ends where hop `end_hop` begins."""
        output = AnalyticsOutput()
        first_hop = end_hop - self.hops_per_window
        window_start, window_end = first_hop * self.step, end_hop * self.step
        for zone_id, zone in self.zones.items():
            state = self.state.zones[zone_id]
            spanned = [bucket for bucket in state.buckets if first_hop <= hop_index(bucket.start, self.step) < end_hop]
            if spanned:
                metrics, events = self._window(zone_id, zone, state, Bucket.merge(window_start, spanned), window_end)
                output.zone_metrics.append(metrics)
                output.events.extend(events)
            # keep only buckets that a later window can still span
            state.buckets = [b for b in state.buckets if hop_index(b.start, self.step) > first_hop]
        return output

    def _window(self, zone_id: str, zone: ZoneGeometry, state: ZoneState, window: Bucket,
                window_end: float) -> tuple[ZoneMetrics, list[Event]]:
        config = self.config
        seconds = config.window_seconds
        area_m2 = zone.in_view(self.image_size).area_m2
        # Unreliable frames carry only the detector's count, which misses most of a packed crowd.
        people_mean = window.mean("reliable_people")
        if people_mean is None:  # no frame is reliable, so neither is the window (below): the detector's figure
            people_mean = window.mean("people")
        density = people_mean / area_m2
        # Frames are expected from STARTUP_GRACE_S after the camera's first one: while the pipeline starts few
        # arrive, which says nothing about the camera, and "down or stalling" then would page someone at every start.
        observed_from = max(window.start, self.state.first_captured_at + STARTUP_GRACE_S)
        expected_frames = self.camera.fps * max(0.0, window_end - observed_from)
        reliable, reason = True, ""
        if self.state.clock_stepped_at is not None and window.start < self.state.clock_stepped_at:
            reliable, reason = False, "the camera's capture clock jumped within this window"
        elif window.frames < config.risk.min_frame_coverage * expected_frames:
            reliable, reason = False, (f"camera delivered {window.frames} of ~{expected_frames:.0f} expected frames "
                                       "(down or stalling)")
        elif not window.latest_reliable or window.unreliable_frames * 2 > window.frames:
            # A level stands on the window's latest frame: a map gone stale or a picture frozen in its last seconds
            # leaves nothing that vouches for it at the window's end, however many frames before did.
            reliable, reason = False, window.unreliable_reason
        net_per_minute = (window.inflow - window.outflow) / seconds * 60
        if reliable:
            net_rate = (window.inflow - window.outflow) / seconds / area_m2 if zone.lines else None
            state.holt = holt_update(state.holt, window_end, density, config.forecast, self.step, net_rate,
                                     seconds)
        forecast, surely, rise = [], {}, None
        holt = state.holt
        if reliable and holt is not None and holt.windows >= config.forecast.min_windows:
            rise = borne_out_rise(holt, config.forecast, seconds, self.hops_per_window)
            surely = seconds_to_thresholds_surely(holt, config.forecast, config.thresholds, rise)
            if rise is not None:
                forecast = forecast_points(holt, config.forecast, self.step, rise)
        regime = self._regime(window.mean("speed"), density, holt)
        surge_events = self._surge(zone_id, state.surge, window, window_end, zone.lines != [])
        # Unreliable, the window's density is only a floor: the people the detector saw, whom no count can undo.
        detected = window.mean("detector") / area_m2
        inputs = RiskInputs(density_per_m2=density if reliable else detected,
                            reliable=reliable, unreliable_reason=reason,
                            peak_local_density_per_m2=window.mean("peak_local"),
                            uniform_peak_per_m2=uniform_peak_per_m2(detected, area_m2,
                                                                    config.movement.local_density_radius_m),
                            pressure_per_s2=window.mean("pressure"), surely_seconds_to_threshold=surely,
                            rise_over_s=rise.over_s if rise else None)
        previous = state.risk
        state.risk, level_reason, changed = next_level(previous, inputs, window_end, config.thresholds, config.risk)
        level = state.risk.level
        if changed and level == RiskLevel.UNKNOWN and previous.level == RiskLevel.NORMAL \
                and self._starting(state, window_end):
            # Unknown because the camera's analytics are starting, which is no news for an operator: the window
            # says so, but no incident opens. Maps that do not come in time open one (and the zone-unknown alert
            # pages).
            state.risk, changed = previous, False
        if regime == FlowRegime.STOP_AND_GO:
            level_reason += f"; stop-and-go: speed {window.mean('speed'):.2f} m/s while density rises"
        if state.surge.active:
            level_reason += f"; inflow surge: {window.inflow / seconds * 60:.0f}/min"
        sources = window.source_frames
        metrics = ZoneMetrics(
            camera_id=self.camera.id, zone_id=zone_id, window_start=window.start, window_end=window_end,
            frames=window.frames, area_m2=area_m2, people_mean=people_mean,
            people_max=round(window.people_max), density_mean_per_m2=density,
            density_max_per_m2=window.people_max / area_m2,
            risk_level=level, risk_reason=level_reason, last_seq=window.last_seq,
            detector_people_mean=window.mean("detector"), density_model_people_mean=window.mean("model"),
            count_source=CountSource(max(sources, key=sources.get)) if sources else CountSource.DETECTOR,
            count_confidence=window.mean("confidence"), count_reliable=reliable,
            peak_local_density_per_m2=window.mean("peak_local"), mean_speed_m_per_s=window.mean("speed"),
            velocity_variance_m2_per_s2=window.mean("variance"), crowd_pressure_per_s2=window.mean("pressure"),
            flow_regime=regime, inflow=window.inflow, outflow=window.outflow,
            net_accumulation_per_minute=net_per_minute, inflow_surge=state.surge.active,
            forecast=forecast, seconds_to_threshold=surely, rise_over_s=rise.over_s if rise else None,
        )
        events = surge_events
        if changed:
            events.append(self._level_event(zone_id, previous, state.risk, level_reason, metrics))
        return metrics, events

    def _starting(self, zone: ZoneState, window_end: float) -> bool:
        """Whether a zone's window ends while its first density maps may still be on their way: the inference
        stage needs STARTUP_GRACE_S to reach live frames, and its schedule gives each camera a map within the maximum
        age (a zone added to a running camera waits for the next). Until then a window may have too few frames with
        a map to be judged."""
        config = self.config
        return config.density_model.enabled and window_end <= (
            zone.first_at + STARTUP_GRACE_S + config.counting.density_map_max_age_seconds)

    def _regime(self, speed: float | None, density: float, holt: HoltState | None) -> FlowRegime:
        movement = self.config.movement
        if speed is None:
            return FlowRegime.UNKNOWN
        rising = (holt is not None and slope_per_s(holt, self.config.forecast) * 60 > RISING_PER_MINUTE) \
            or density >= self.config.thresholds.warning
        if speed < movement.stop_and_go_speed_m_s and rising:
            return FlowRegime.STOP_AND_GO
        if speed < movement.congested_speed_m_s:
            return FlowRegime.CONGESTED
        return FlowRegime.FREE

    def _surge(self, zone_id: str, surge: SurgeState, window: Bucket, window_end: float,
               has_lines: bool) -> list[Event]:
        if not has_lines:
            return []
        config = self.config.surge
        rate = window.inflow / self.config.window_seconds * 60
        baseline = surge.baseline_per_minute
        accepted = surge.active and window_end - surge.started_at >= config.new_baseline_after_minutes * 60
        if surge.active:
            # Open until the rate is back below halfway to the bound, so a surge hovering at it does not flap.
            now_active = (not accepted and rate >= config.min_inflow_per_minute
                          and rate >= (1 + config.factor) / 2 * baseline)
        else:
            now_active = (surge.windows >= config.min_windows and rate >= config.min_inflow_per_minute
                          and rate >= config.factor * baseline)
        # Learning from a surge's windows would absorb it: a sustained surge was resolved at its peak.
        if accepted or surge.windows == 0:
            surge.baseline_per_minute = rate
        elif not now_active:
            surge.baseline_per_minute = baseline + config.baseline_smoothing * (rate - baseline)
        surge.windows += 1
        if now_active == surge.active:
            return []
        surge.active = now_active
        started_at = window_end if now_active else surge.started_at
        surge.started_at = window_end if now_active else None
        if now_active:
            reason = f"inflow {rate:.0f}/min is {rate / max(baseline, 1e-9):.1f}x its baseline"
        elif accepted:
            reason = (f"inflow {rate:.0f}/min for {config.new_baseline_after_minutes:g} min: taken as the new "
                      "baseline")
        else:
            reason = f"inflow back to {rate:.0f}/min (baseline {baseline:.0f}/min)"
        return [Event(
            event_id=self._surge_id(zone_id, started_at), type="inflow_surge",
            state=EventState.OPENED if now_active else EventState.RESOLVED, severity=Severity.WARNING,
            camera_id=self.camera.id, zone_id=zone_id, started_at=started_at, updated_at=window_end,
            ended_at=None if now_active else window_end, confidence=0.8,
            evidence=FrameRef(camera_id=self.camera.id, seq=window.last_seq), reason=reason,
            details={"inflow_per_minute": rate, "baseline_per_minute": surge.baseline_per_minute},
        )]

    # One id per episode, opened to resolved, from its start in event time: the same after a redelivery or restart.
    def _risk_id(self, zone_id: str, episode_started: float) -> str:
        return f"{self.camera.id}:{zone_id}:crowd_risk:{round(episode_started * 1000)}"

    def _surge_id(self, zone_id: str, started_at: float) -> str:
        return f"{self.camera.id}:{zone_id}:inflow_surge:{round(started_at * 1000)}"

    def _level_event(self, zone_id: str, previous: RiskState, risk: RiskState, reason: str,
                     metrics: ZoneMetrics) -> Event:
        if risk.level == RiskLevel.NORMAL:
            state, episode_started = EventState.RESOLVED, previous.episode_started
        else:
            state = EventState.OPENED if previous.level == RiskLevel.NORMAL else EventState.UPDATED
            episode_started = risk.episode_started
        details: dict[str, float | int | str] = {
            "from_level": previous.level.value, "to_level": risk.level.value,
            "density_per_m2": metrics.density_mean_per_m2, "window_start": metrics.window_start,
        }
        details.update({f"seconds_to_{name}": value for name, value in metrics.seconds_to_threshold.items()})
        return Event(
            # One incident per episode (leaving NORMAL until back to NORMAL), so consumers can close what they opened.
            event_id=self._risk_id(zone_id, episode_started),
            type="risk_level_changed", state=state, severity=SEVERITY[risk.level], camera_id=self.camera.id,
            zone_id=zone_id, started_at=episode_started, updated_at=metrics.window_end,
            ended_at=metrics.window_end if state == EventState.RESOLVED else None,
            confidence=metrics.count_confidence, evidence=FrameRef(camera_id=self.camera.id, seq=metrics.last_seq),
            reason=reason, details=details,
        )

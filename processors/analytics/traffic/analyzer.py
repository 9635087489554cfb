"""Traffic analyzer of one camera: tracks in, rule events and per-window line counts out. Pure: no Kafka, no clock.

Time is the frames' capture time, so replaying the same detections gives the same events, ids and counts; a capture
time more than a count window before the last one is a clock step (`_step_the_clock`). A frame at or below the last
sequence number seen is a redelivery and is ignored.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from processors.analytics.contract import AnalyticsOutput
from processors.analytics.traffic import converging, counting, rules, unconfirmed
from processors.analytics.traffic.congestion import LaneTraffic, congestion_conditions, observe_lanes
from processors.analytics.traffic.fallback_tracker import assign_track_ids
from processors.analytics.traffic.incidents import reconcile, resolve_all
from processors.analytics.traffic.scene import GroundHistories, Scene, anchor_point, box_area, edges_moved
from processors.analytics.traffic.state import TrackState, TrafficState, VehicleFrame, max_tracks
from schemas import UNTRACKED, Detections, Event
from schemas.base import frame_seen, with_frame
from schemas.calibration import Homography
from schemas.geometry import box_cover
from schemas.line_counts import LineCounts
from schemas.settings.config import CameraConfig, Config
from schemas.settings.lines import Anchor
from schemas.settings.traffic import PedestrianAreaConfig, SceneConfig

log = logging.getLogger(__name__)

# The detector finds a cyclist or cart among walkers in only some frames: an area's frame-level score is the
# evidence of about the last half second (exponential smoothing, so any frame rate weighs the same time).
AREA_SCORE_SECONDS = 0.5
SAMPLE_SPACING_S = 0.2  # history keeps at most ~5 samples per second whatever the frame rate
HISTORY_SECONDS = 6.0
REACQUIRE_SECONDS = 1.0
REACQUIRE_OVERLAP = 0.7
# A vehicle unseen longer than this many frame intervals (or REACQUIRE_SECONDS, whichever is longer), without the
# background model holding it where it was lost, may not have stood there all along when a box appears there again.
# The interval is the last one, up to LONGEST_FRAME_INTERVAL_S: a gap in the camera's frames is not its frame rate.
MISSED_FRAMES_AT_REST = 2.5
LONGEST_FRAME_INTERVAL_S = 2.0


@dataclass
class TrafficOutput(AnalyticsOutput):
    """What every analyzer returns, plus the current lane figures."""

    lanes: list[LaneTraffic] = field(default_factory=list)
    area_scores: dict[str, float] = field(default_factory=dict)  # pedestrian area id -> vehicle-in-area score


def with_crowd_zones(camera: CameraConfig) -> SceneConfig:
    """The camera's scene with its crowd zones as pedestrian areas too: a vehicle moving into a crowd zone is the
    vehicle-into-crowd risk."""
    scene = camera.scene
    known = {area.id for area in scene.pedestrian_areas}
    zones = [PedestrianAreaConfig(id=zone.id, polygon=zone.polygon) for zone in camera.zones if zone.id not in known]
    return scene.model_copy(update={"pedestrian_areas": [*scene.pedestrian_areas, *zones]}) if zones else scene


def last_sign(track: TrackState) -> float:
    """When the track was last seen, by the detector or, where it lost the vehicle, the background model."""
    return max(track.last_seen, track.held_at or track.last_seen)


class LostVehicles:
    """The vehicle tracks lost at most REACQUIRE_SECONDS before a frame and not found again yet: candidates for the
    frame's new vehicle tracks, each new box compared with all of them in one array operation."""

    def __init__(self, scene: Scene, state: TrafficState, frame_ids: set[int], now: float):
        vehicles = scene.vehicle_classes
        self.tracks = [track for track in state.tracks.values()
                       if track.track_id not in frame_ids and not track.reacquired
                       and track.class_name in vehicles and 0 < now - track.last_seen <= REACQUIRE_SECONDS]
        # Where each was last seen, and where it would be now had it driven on as it went.
        self.boxes = np.asarray([track.box for track in self.tracks] + [scene.box_ahead(track, now)
                                                                         for track in self.tracks],
                                dtype=float).reshape(-1, 4)
        self.areas = (self.boxes[:len(self.tracks), 2:] - self.boxes[:len(self.tracks), :2]).clip(0).prod(axis=1)
        self.free = np.ones(len(self.tracks), dtype=bool)

    def found_again(self, box: tuple) -> TrackState | None:
        """The lost track whose last box, or the box it would have driven on to by now (Scene.box_ahead: a vehicle
        at speed moves most of its length between two frames), this new vehicle box most covers, by at least
        REACQUIRE_OVERLAP of the smaller box, neither box over twice the other's area: the same vehicle found again,
        taken from the candidates. (Nearness alone is not enough: in a jam the next car stands a box length away.)"""
        if not self.free.any():
            return None
        area = box_area(box)
        share = box_cover(self.boxes, [box])[:, 0].reshape(2, -1).max(axis=0)
        fits = (self.free & (np.maximum(self.areas, area) <= 2 * np.minimum(self.areas, area))
                & (share >= REACQUIRE_OVERLAP))
        if not fits.any():
            return None
        best = np.flatnonzero(fits)[np.argmax(share[fits])]
        self.free[best] = False
        return self.tracks[best]


class TrafficAnalyzer:
    def __init__(self, camera_id: str, scene: SceneConfig, state: TrafficState | None = None,
                 homography: Homography | None = None):
        self.camera_id = camera_id
        self.scene = Scene(scene, homography)
        self.thresholds = scene.thresholds
        self.max_tracks = max_tracks(scene)
        self.state = state or TrafficState()

    @classmethod
    def restore(cls, camera: CameraConfig, config: Config, state: bytes | None) -> TrafficAnalyzer:
        if camera.scene is None:
            raise ValueError(f"camera {camera.id} has no traffic scene")
        homography = camera.calibration.to_homography() if camera.calibration else None
        return cls(camera.id, with_crowd_zones(camera), TrafficState.model_validate_json(state) if state else None,
                   homography)

    def state_bytes(self) -> bytes:
        return self.state.model_dump_json().encode()

    def resolve_open(self, at: float, reason: str) -> list[Event]:
        return resolve_all(self.state, self.camera_id, at, reason)

    def update(self, detections: Detections) -> TrafficOutput:
        """One frame; its static blobs come from the inference stage's StaticBlobDetector for this camera.

        A frame whose picture is frozen or blank is taken as no frame at all, as when the camera is down: in a frozen
        picture every vehicle stands still and what was foreground stays, which would read as stopped vehicles and
        obstacles. Open incidents wait for the picture to come back, and resolve then if their condition has gone."""
        if detections.picture_fault is not None or frame_seen(self.state.seen_runs, detections.seq):
            return TrafficOutput()
        now = detections.captured_at
        last_time = self.state.last_time
        # Later is a gap (the camera was away), after which tracks and objects expire as ever; earlier is a clock step.
        stepped = last_time is not None and now < last_time - self.thresholds.count_window_seconds
        if stepped:
            self._step_the_clock(now)
        state = self.state
        state.last_seq = detections.seq
        state.seen_runs = with_frame(state.seen_runs, detections.seq)
        output = TrafficOutput(line_counts=self._close_count_window(now, stepped))

        if detections.view_moved:
            self._forget_the_view(now)
        frame_interval = 0.0 if last_time is None or stepped else min(now - last_time, LONGEST_FRAME_INTERVAL_S)
        known = set(state.tracks)
        seen = self._observe_tracks(detections, now, max(REACQUIRE_SECONDS, MISSED_FRAMES_AT_REST * frame_interval))
        if self._settling(now):
            # The camera is moving: lanes and zones no longer lie where they were drawn and every track's motion
            # is the camera's. No rule runs; open incidents are kept, not resolved, until it keeps still again.
            for incident in state.incidents.values():
                incident.last_true_at = now
            self._evict(now)
            state.last_time = now
            return output
        if self._settling(state.last_time):
            self._keep_what_stayed(now)  # the first frame since the view settled
        tracks = [track for track, _ in seen]
        frames = converging.SampledFrames(state.recent_vehicles, self._vehicle_frame(detections, tracks, now))
        for track, previous_box in seen:
            origin = frames.unconfirmed_origin(track.track_id) \
                if previous_box is None and self.scene.config.counting_lines else None
            for line in self.scene.config.counting_lines:
                direction = counting.observe_line(track, line, previous_box, self.thresholds.crossing_debounce_frames,
                                                  origin)
                if direction is not None:
                    self._count(line.id, line.classes, track.class_name, direction)
        vehicles = [t for t in tracks if t.class_name in self.scene.vehicle_classes]
        people = [t for t in tracks if t.class_name == "person"]
        ground = GroundHistories(self.scene.homography)
        rules.record_contacts(self.scene, state, vehicles, {track.track_id for track in vehicles} - known, now, ground)
        frame_size = (detections.image_width, detections.image_height)
        converging.record_converging(self.scene, state, frames)
        self._remember(frames, frame_size)
        # A collision seen at contact comes before the objects at rest: their standstill, when it joins that
        # incident, carries the later evidence under the same key.
        impacts = rules.impacts(self.scene, state, now, frame_size, ground)
        at_rest, standing_queues = rules.objects_at_rest(self.scene, state, tracks, detections.static_blobs or [], now,
                                                         detections.seq, frame_size, frames)
        output.lanes = observe_lanes(self.scene, state, vehicles, now, standing_queues, frame_size, ground)
        riding = rules.riders(state, people, rules.two_wheeler_boxes(detections), now)
        in_traffic = riding | rules.riding_in_streams(self.scene, people, now)
        conditions = [
            *impacts,
            *at_rest,
            *rules.wrong_way(self.scene, state, vehicles, frame_size),
            *rules.pedestrians_on_roadway(self.scene, state, people, vehicles, in_traffic, standing_queues, now,
                                          detections.image_height, ground),
            *rules.obstacles(self.scene, tracks, now),
            *congestion_conditions(self.scene, output.lanes),
            *rules.vehicles_in_pedestrian_areas(self.scene, state, tracks, riding, now, frame_size),
        ]
        track_ids = detections.track_id if detections.track_id is not None else []
        untracked = [(tuple(box), class_name, confidence) for box, track_id, class_name, confidence
                     in zip(detections.xyxy, track_ids, detections.class_name, detections.confidence, strict=False)
                     if track_id == UNTRACKED]
        output.area_scores = self._smooth_area_scores(
            rules.pedestrian_area_scores(self.scene, tracks, untracked, frame_size), now)
        in_view = {track.track_id for track in tracks}
        output.events = reconcile(state, self.camera_id, conditions, now, detections.seq,
                                  self.thresholds.resolve_seconds, set(state.tracks) - in_view)
        self._evict(now)
        state.last_time = now
        return output

    def _hand_on_incidents(self, lost_id: int, track_id: int) -> None:
        """The open incidents about a lost vehicle's own behaviour (keyed by its track: a wrong-way driver) go on under
        the new track that found it again: its condition, raised again under the new id, continues the same event
        instead of opening a second one for the one driver."""
        suffix = f":{lost_id}"
        for key in [key for key, incident in self.state.incidents.items()
                    if incident.track_bound and key.endswith(suffix)]:
            incident = self.state.incidents.pop(key)
            incident.key = f"{key[:-len(suffix)]}:{track_id}"
            self.state.incidents[incident.key] = incident

    def _settling(self, at: float | None) -> bool:
        """Whether the camera's view was still settling at time `at`, after it last moved."""
        moved_at = self.state.view_moved_at
        return moved_at is not None and at is not None and at - moved_at < self.thresholds.view_settle_seconds

    def _smooth_area_scores(self, scores: dict[str, float], now: float) -> dict[str, float]:
        state = self.state
        elapsed = now - state.last_time if state.last_time is not None else math.inf
        weight = 1.0 - math.exp(-max(elapsed, 0.0) / AREA_SCORE_SECONDS)
        smoothed = {}
        for area, score in scores.items():
            before = state.area_scores.get(area, score)
            smoothed[area] = before + weight * (score - before)
        state.area_scores = smoothed
        return dict(smoothed)

    def _forget_the_view(self, now: float) -> None:
        """The camera's view moved: what was learnt in image coordinates (motion, rest, contacts, objects at rest,
        queues) no longer holds. Tracks keep their ids and start their motion again from here. Vehicles at rest are
        kept until the view has settled: one found back where it stood goes on at rest (`_keep_what_stayed`)."""
        state = self.state
        state.view_moved_at = now
        for track in state.tracks.values():
            point = anchor_point(track.box, Anchor.BOTTOM_CENTER)
            track.history, track.timers, track.first_point = [], {}, point
            track.rest_point, track.rest_since, track.rest_box = point, now, None
        state.static_objects = [obj for obj in state.static_objects if obj.class_name is not None and obj.track_ids]
        state.collisions, state.zone_timers = [], {}
        state.recent_vehicles, state.missed_unconfirmed = [], []

    def _keep_what_stayed(self, now: float) -> None:
        """Once the view has settled after moving, the vehicles at rest before it moved whose track is seen again
        within the stationary tolerance of where it stood keep their object at rest, its time and its incident: the
        camera shook and came back. Any other (the camera panned, the vehicle left) is forgotten."""
        state = self.state

        def stood_still(track_id: int, box: tuple) -> bool:
            track = state.tracks.get(track_id)
            return track is not None and track.last_seen >= state.view_moved_at \
                and edges_moved(track.box, box) <= self.scene.stationary_tolerance(track.box)

        kept = []
        for obj in state.static_objects:
            # Any of its tracks, or any vehicle track seen since the move: the tracker may have given it a new id,
            # and the detector another vehicle class (a car read as a truck).
            if any(stood_still(track_id, obj.box) for track_id in obj.track_ids) or any(
                    stood_still(track_id, obj.box) for track_id, track in state.tracks.items()
                    if track.class_name in self.scene.vehicle_classes and track.first_seen >= state.view_moved_at):
                obj.last_evidence = now
                kept.append(obj)
        state.static_objects = kept

    def _step_the_clock(self, now: float) -> None:
        """The capture time went back by more than a count window (a host clock set back, or the right time again after
        a frame stamped far ahead): every time learnt before belongs to the old timeline. The analyzer starts afresh,
        as a restarted camera's would, but for the ids it hands out, the open count window (its tracks' pending
        crossings counted, as when a track is forgotten) and the open incidents, which go on from now so that they
        resolve once their condition has been gone for resolve_seconds in the new time."""
        log.warning("camera %s: capture time jumped from %.0f to %.0f; tracks and rules start again from there",
                    self.camera_id, self.state.last_time, now)
        self._evict(math.inf)
        old = self.state
        for incident in old.incidents.values():
            incident.last_true_at = min(incident.last_true_at, now)
        self.state = TrafficState(last_seq=old.last_seq, seen_runs=old.seen_runs, fallback_next_id=old.fallback_next_id,
                                  next_unconfirmed_id=old.next_unconfirmed_id, incidents=old.incidents,
                                  count_window_start=old.count_window_start, counts=old.counts)

    def _observe_tracks(self, detections: Detections, now: float,
                        longest_unseen_at_rest: float) -> list[tuple[TrackState, tuple | None]]:
        """Updates each detected track; returns (track, its box in the previous sighting). A track unseen longer than
        `longest_unseen_at_rest` (and not held by the background model) starts its rest again where it is seen."""
        boxes = [tuple(map(float, box)) for box in detections.xyxy]
        track_ids = detections.track_id
        if track_ids is None:
            track_ids = assign_track_ids(self.state, boxes, detections.class_name, now)
        lost = LostVehicles(self.scene, self.state, set(track_ids), now)
        seen = []
        for box, track_id, class_name, confidence in zip(boxes, track_ids, detections.class_name,
                                                          detections.confidence, strict=True):
            if track_id == UNTRACKED:
                continue
            track = self.state.tracks.get(track_id)
            point = anchor_point(box, Anchor.BOTTOM_CENTER)
            if track is None:
                track = self.state.tracks[track_id] = TrackState(
                    track_id=track_id, class_name=class_name, box=box, first_seen=now, last_seen=now,
                    confidence=confidence, rest_point=point, rest_since=now,
                    vehicle_since=now if class_name in self.scene.vehicle_classes else None)
                found = lost.found_again(box) if class_name in self.scene.vehicle_classes else None
                if found is not None:
                    # The tracker gave a vehicle it lost for a moment a new id: it goes on with its own motion (a
                    # car that skidded to a stop hidden in dust comes back at rest, not first seen there).
                    found.reacquired = True
                    track.history, track.first_seen, track.first_point = list(found.history), found.first_seen, \
                        found.first_point
                    track.moved_away, track.vehicle_since = found.moved_away, found.vehicle_since
                    track.rest_point, track.rest_since, track.rest_box = found.rest_point, found.rest_since, \
                        found.rest_box
                    for obj in self.state.static_objects:  # and its incident at rest, if it had one
                        if found.track_id in obj.track_ids:
                            obj.track_ids.append(track_id)
                    self._hand_on_incidents(found.track_id, track_id)
                    # and its sides of the counting lines, so a crossing between its last box and this one counts,
                    # once: the old track has none left to count when it is forgotten.
                    track.lines, found.lines = found.lines, {}
                previous_box = found.box if found is not None else None
            else:
                previous_box = track.box
                if (now - last_sign(track) > longest_unseen_at_rest and self.scene.speed_before_rest(track)
                        < self.thresholds.crash_stop_speed_box_per_s):
                    # Where the detector finds a vehicle only now and then, the tracker may match the next one
                    # passing the spot to a lost track: a box found there again is not evidence that anything
                    # stood there in between. (One that stopped dead before it was lost, hidden in its own dust,
                    # keeps how it came to rest.)
                    track.rest_point, track.rest_since, track.rest_box = point, now, None
                if class_name in self.scene.vehicle_classes and track.vehicle_since is None:
                    track.vehicle_since = now
                    if track.class_name not in self.scene.road_classes:
                        # Read until now as no road user at all (a logo on a title card as a clock): as a vehicle
                        # it has only just appeared, and its time at rest starts now. (A vehicle misread for a
                        # moment, a crashed car as a boat, keeps its time.)
                        track.rest_point, track.rest_since, track.rest_box = point, now, None
                track.box, track.last_seen, track.class_name = box, now, class_name
                track.confidence += (confidence - track.confidence) * 0.2
            self._record_motion(track, point, now)
            seen.append((track, previous_box))
        return seen

    def _vehicle_frame(self, detections: Detections, tracks: list[TrackState], now: float) -> VehicleFrame:
        """This frame's vehicle detections, the tracker's unconfirmed ones included."""
        vehicle_classes = self.scene.vehicle_classes
        if detections.track_id is None:
            # Tracked here by the fallback tracker, which confirms every detection.
            found = [(track.box, track.track_id, track.class_name, track.confidence) for track in tracks]
        else:
            found = list(zip(map(tuple, detections.xyxy), detections.track_id, detections.class_name,
                             detections.confidence, strict=True))
        found = [detection for detection in found if detection[2] in vehicle_classes]
        boxes, track_ids, class_names, confidences = (list(column) for column in zip(*found, strict=True)) if found \
            else ([], [], [], [])
        return VehicleFrame(time=now, boxes=boxes, track_ids=track_ids, class_names=class_names,
                            confidences=confidences)

    def _remember(self, frames: converging.SampledFrames, frame_size: tuple[int, int]) -> None:
        """Keeps the last two frames at least SAMPLE_SPACING_S apart (motion between them is comparable at any frame
        rate); a sampled frame also tells which unconfirmed vehicles were lost."""
        recent, frame = self.state.recent_vehicles, frames.frame
        if not recent or frame.time - recent[-1].time >= SAMPLE_SPACING_S - 1e-6:
            unconfirmed.keep_lost(self.scene, self.state, frames, frame_size)
            self.state.recent_vehicles = [*recent, frame][-2:]

    def _record_motion(self, track: TrackState, point: tuple[float, float], now: float) -> None:
        x1, y1, x2, y2 = track.box
        tolerance = self.scene.stationary_tolerance(track.box)
        if track.first_point is None:
            track.first_point = point
        elif not track.moved_away and math.dist(point, track.first_point) >= 0.5 * (y2 - y1):
            track.moved_away = True
        if math.dist(point, track.rest_point) > tolerance or edges_moved(track.box, track.rest_box or track.box) \
                > tolerance:
            track.rest_point, track.rest_since, track.rest_box = point, now, track.box
        elif track.rest_box is None:
            track.rest_box = track.box
        sample = (now, point[0], point[1], y2 - y1)
        history = track.history
        # The newest sample is always the current position; older ones stay SAMPLE_SPACING_S apart.
        if len(history) >= 2 and history[-1][0] - history[-2][0] < SAMPLE_SPACING_S:
            history[-1] = sample
        else:
            history.append(sample)
        while history and history[0][0] < now - HISTORY_SECONDS:
            history.pop(0)

    def _count(self, line_id: str, classes: list[str] | None, class_name: str, direction: str) -> None:
        if classes is not None and class_name not in classes:
            return
        line_counts = self.state.counts.setdefault(line_id, {})
        key = f"{class_name}|{direction}"
        line_counts[key] = line_counts.get(key, 0) + 1

    def _close_count_window(self, now: float, clock_stepped: bool) -> list[LineCounts]:
        """Per-window line counts: a window closes when the first frame of a later window arrives, or of any other
        window once the clock stepped."""
        window = self.thresholds.count_window_seconds
        start = math.floor(now / window) * window
        state = self.state
        if state.count_window_start is None:
            state.count_window_start = start
        if start == state.count_window_start or (start < state.count_window_start and not clock_stepped):
            return []  # the open window's frame, or a late one
        closed = self._window_counts(state.count_window_start + window)
        state.count_window_start, state.counts = start, {}
        return closed

    def end_of_footage_counts(self, until: float) -> list[LineCounts]:
        """The window still open when recorded footage ends, cut at `until` (the end of its latest frame): every
        track leaves with the footage, so a crossing still waiting for its debounce frames counts, as when a track
        is forgotten. For a replay's last word; the analyzer keeps no tracks after it."""
        start = self.state.count_window_start
        if start is None:
            return []
        self._evict(math.inf)
        return self._window_counts(min(until, start + self.thresholds.count_window_seconds))

    def _window_counts(self, window_end: float) -> list[LineCounts]:
        """Every counting line's crossings in the current window, which ends at window_end."""
        state = self.state
        windows = []
        for line in self.scene.config.counting_lines:
            counts = state.counts.get(line.id, {})
            keys = sorted(counts)
            windows.append(LineCounts(
                camera_id=self.camera_id, line_id=line.id, lane_id=line.lane, window_start=state.count_window_start,
                window_end=window_end, class_name=[k.split("|")[0] for k in keys],
                direction=[k.split("|")[1] for k in keys], count=[counts[k] for k in keys]))
        return windows

    def _evict(self, now: float) -> None:
        """Forgets the tracks unseen for track_ttl_seconds, then the longest unseen ones over max_tracks (of those
        seen last at the same time, the newest: an established track keeps its motion)."""
        ttl = self.thresholds.track_ttl_seconds
        kept = [track for track in self.state.tracks.values() if now - last_sign(track) <= ttl]
        if len(kept) > self.max_tracks:
            kept = sorted(kept, key=lambda track: (last_sign(track), -track.first_seen))[-self.max_tracks:]
        kept_ids = {track.track_id for track in kept}
        for track_id in [i for i in self.state.tracks if i not in kept_ids]:
            track = self.state.tracks.pop(track_id)
            for line in self.scene.config.counting_lines:
                direction = counting.flush_pending(track, line)
                if direction is not None:
                    self._count(line.id, line.classes, track.class_name, direction)

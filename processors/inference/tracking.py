"""Per-camera multi-object tracking (ByteTrack from ultralytics), driven by frame timestamps.

One tracker per camera, never shared, so ids from two streams can never mix. Track ids start at a base taken from
the clock when the tracker is created, so a tracker rebuilt after a rebalance or restart starts a new id range and
never reissues an id. Dropped frames are bridged by advancing the Kalman prediction once per missing frame interval,
and a gap longer than the track buffer starts a fresh tracker.
"""
from __future__ import annotations

import itertools
import time
from argparse import Namespace
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from ultralytics.trackers.basetrack import TrackState
from ultralytics.trackers.byte_tracker import BYTETracker

from infra.keyed_pool import KeyedPool
from schemas import UNTRACKED, Detections
from schemas.base import frame_seen, with_frame
from schemas.geometry import box_iou
from schemas.settings.config import TrackingConfig

RECENT_FRAMES = 256  # per camera: frames whose track ids a redelivery gets again (a rewound batch is far fewer)
REDELIVERED_MIN_IOU = 0.5  # a box of a frame tracked again takes an id only from a box it is plainly the same as


@dataclass(frozen=True)
class _TrackerInput:
    """The Results-like view BYTETracker reads: conf, cls, xywh, boolean indexing."""

    conf: np.ndarray
    cls: np.ndarray
    xywh: np.ndarray

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, mask) -> "_TrackerInput":
        return _TrackerInput(self.conf[mask], self.cls[mask], self.xywh[mask])

    @classmethod
    def from_detections(cls, detections: Detections | None) -> "_TrackerInput":
        if detections is None or len(detections) == 0:
            return cls(np.zeros(0), np.zeros(0), np.zeros((0, 4)))
        boxes = detections.boxes()
        xywh = np.column_stack(((boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                                boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]))
        return cls(np.asarray(detections.confidence, dtype=float), np.asarray(detections.class_id, dtype=float), xywh)


class _ByteTracker(BYTETracker):
    """BYTETracker whose ids start at a given base instead of 1, and whose matched tracks are corrected as one batch.

    Per track, the Kalman correction is a dozen numpy calls on 4x4 and 8x8 matrices whose overhead dwarfs their
    arithmetic: with a dozen objects a frame it was a third of the inference stage's CPU. The batch does the same
    algebra (KalmanFilterXYAH.update without the detection-confidence scaling, as ByteTrack calls it)."""

    def __init__(self, args: Namespace, id_base: int):
        self.id_base = id_base
        super().__init__(args)

    def reset_id(self) -> None:
        self._ids = itertools.count(self.id_base)

    def _apply_matches(self, matches, pool, detections, activated, refind) -> None:
        corrected = []
        for itracked, idet in matches:
            track, detection = pool[itracked], detections[idet]
            if track.state == TrackState.Tracked:
                corrected.append((track, detection))
                activated.append(track)
            else:
                track.re_activate(detection, self.frame_id, new_id=False)
                refind.append(track)
        if not corrected:
            return
        kalman = self.kalman_filter
        mean = np.array([track.mean for track, _ in corrected])
        covariance = np.array([track.covariance for track, _ in corrected])
        measured = np.array([track.convert_coords(detection.tlwh) for track, detection in corrected])
        position = kalman._std_weight_position * mean[:, 3]  # KalmanFilterXYAH.project's measurement noise
        noise = np.square(np.column_stack([position, position, np.full(len(mean), 1e-1), position]))
        projected = covariance[:, :4, :4] + noise[:, :, None] * np.eye(4)
        gain = np.linalg.solve(projected, covariance[:, :, :4].transpose(0, 2, 1)).transpose(0, 2, 1)
        mean = mean + np.einsum("nj,nij->ni", measured - mean[:, :4], gain)
        covariance = covariance - gain @ (projected @ gain.transpose(0, 2, 1))
        for (track, detection), track_mean, track_covariance in zip(corrected, mean, covariance, strict=True):
            # What STrack.update of the pinned ultralytics sets besides the state estimate (no angle: ByteTrack's
            # boxes are upright); an upgrade is checked against it by tests/test_tracking.py.
            track.frame_id = self.frame_id
            track.tracklet_len += 1
            track.mean, track.covariance = track_mean, track_covariance
            track.state = TrackState.Tracked
            track.is_activated = True
            track.score, track.cls, track.idx = detection.score, detection.cls, detection.idx


class CameraTracker:
    """Tracks one camera's objects; `update` returns the detections with track_id filled in."""

    def __init__(self, camera_id: str, fps: float, config: TrackingConfig):
        self.camera_id = camera_id
        self.frame_interval_s = 1.0 / fps
        self.config = config
        self.buffer_frames = max(1, round(config.lost_track_seconds * fps))
        self.last_captured_at: float | None = None
        self._tracker = self._new_tracker()
        self.runs: list[tuple[int, int]] = []  # the frame numbers tracked (schemas.base.frame_seen)
        self._recent: dict[int, tuple[np.ndarray, list[int]]] = {}  # seq -> its boxes and the track ids they got

    def _new_tracker(self) -> _ByteTracker:
        args = Namespace(track_high_thresh=self.config.high_confidence, track_low_thresh=self.config.low_confidence,
                         new_track_thresh=self.config.new_track_confidence, track_buffer=self.buffer_frames,
                         match_thresh=self.config.match_iou, fuse_score=True)
        # Microseconds since the epoch: later trackers for this camera always start above earlier ids.
        return _ByteTracker(args, id_base=time.time_ns() // 1000)

    def _advance_clock(self, captured_at: float) -> None:
        """Bridges the frames missing before a new one. A long gap, or time running back further than the tracker
        keeps lost tracks (a clock step), restarts the tracker with a new id range; a frame a little before the last
        (a clock set back a moment) follows it directly."""
        if self.last_captured_at is None:
            return
        lost_after_s = self.buffer_frames * self.frame_interval_s
        elapsed_frames = round((captured_at - self.last_captured_at) / self.frame_interval_s)
        if elapsed_frames > self.buffer_frames or captured_at < self.last_captured_at - lost_after_s:
            self._tracker = self._new_tracker()
            return
        empty = _TrackerInput.from_detections(None)
        for _ in range(elapsed_frames - 1):
            self._tracker.update(empty)

    def update(self, detections: Detections) -> Detections:
        if frame_seen(self.runs, detections.seq):
            # Already tracked once (a rewound batch, a partition read again); tracking it again would move the
            # tracker back and renumber every object. A recent frame's boxes get their ids again, matched by box, as
            # the analytics must see the tracks; a box matching none stays untracked.
            return detections.model_copy(update={"track_id": self._given(detections)})
        self.runs = with_frame(self.runs, detections.seq)
        self._advance_clock(detections.captured_at)
        self.last_captured_at = detections.captured_at
        self._tracker.update(_TrackerInput.from_detections(detections))
        track_ids = [UNTRACKED] * len(detections)
        # Read ids from the tracks, not from update()'s float32 array, which cannot hold 16-digit ids exactly.
        for track in self._tracker.tracked_stracks:
            if track.is_activated and track.frame_id == self._tracker.frame_id:
                track_ids[int(track.idx)] = int(track.track_id)
        self._recent[detections.seq] = (detections.boxes(), track_ids)
        if len(self._recent) > RECENT_FRAMES:
            del self._recent[next(iter(self._recent))]
        return detections.model_copy(update={"track_id": list(track_ids)})

    def _given(self, detections: Detections) -> list[int]:
        """The ids a frame tracked before gave its boxes, each box taking the id of the box it overlaps most (at
        least REDELIVERED_MIN_IOU): a model swapped in between may find the objects in another order, or others."""
        track_ids = [UNTRACKED] * len(detections)
        if detections.seq not in self._recent:
            return track_ids
        boxes, given = self._recent[detections.seq]
        overlap = box_iou(detections.boxes(), boxes)
        while overlap.size and overlap.max() >= REDELIVERED_MIN_IOU:
            box, earlier = np.unravel_index(int(overlap.argmax()), overlap.shape)
            track_ids[box] = given[earlier]
            overlap[box, :] = overlap[:, earlier] = 0
        return track_ids


class TrackerPool:
    """One CameraTracker per camera, created on first sight and dropped after the camera falls silent."""

    def __init__(self, config: TrackingConfig, fps_by_camera: dict[str, float], default_fps: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.fps_by_camera = fps_by_camera
        self.default_fps = default_fps
        self._trackers = KeyedPool(self._new_tracker, config.idle_camera_seconds, clock)

    def _new_tracker(self, camera_id: str) -> CameraTracker:
        return CameraTracker(camera_id, self.fps_by_camera.get(camera_id, self.default_fps), self.config)

    def update(self, detections: Detections) -> Detections:
        return self._trackers.get(detections.camera_id).update(detections)

    def __len__(self) -> int:
        return len(self._trackers)

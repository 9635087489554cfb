"""Synthetic intersection: objects on keyframed paths become Detections with jitter and missed frames, plus the
ground-truth incidents each scenario was built to contain. Like the crowd simulator: generated, never recorded.

Layout (1280x720, y down): a two-lane road, eastbound lane y 380-460 (direction +x), westbound lane y 300-380;
sidewalks above and below; a crosswalk at x 480-540; the intersection box at x 560-720; the eastbound stop line at
x 470 with its queue area x 250-470 (a keep-clear zone excused by that queue); a bus stop (no stopping) in the
westbound lane at x 900-1100; a counting segment across the eastbound lane only at x 900.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from schemas import Detections, StaticBlob
from schemas.settings.crowd import CalibrationConfig
from schemas.settings.traffic import SceneConfig

FPS = 5.0
T0 = 1_700_000_000.0
EB_Y, WB_Y = 430.0, 350.0  # foot (bottom-centre) y of cars in each lane
CAR = (80.0, 40.0)
PERSON = (20.0, 50.0)
SUITCASE = (30.0, 30.0)

SCENE = SceneConfig.model_validate({
    "lanes": [
        {"id": "eb", "polygon": [[0, 380], [1280, 380], [1280, 460], [0, 460]], "direction": [1, 0]},
        {"id": "wb", "polygon": [[0, 300], [1280, 300], [1280, 380], [0, 380]], "direction": [-1, 0]},
    ],
    "intersection": {"id": "box", "polygon": [[560, 300], [720, 300], [720, 460], [560, 460]]},
    "crosswalks": [{"id": "xwalk", "polygon": [[480, 300], [540, 300], [540, 460], [480, 460]]}],
    "sidewalks": [{"id": "north-walk", "polygon": [[0, 240], [1280, 240], [1280, 300], [0, 300]]},
                  {"id": "south-walk", "polygon": [[0, 460], [1280, 460], [1280, 520], [0, 520]]}],
    "stop_lines": [{"id": "eb-stop", "start": [470, 380], "end": [470, 460],
                    "queue_area": [[250, 380], [470, 380], [470, 460], [250, 460]]}],
    "no_stopping_zones": [
        {"id": "eb-keep-clear", "polygon": [[250, 380], [470, 380], [470, 460], [250, 460]],
         "queue_stop_lines": ["eb-stop"]},
        {"id": "bus-stop", "polygon": [[900, 300], [1100, 300], [1100, 380], [900, 380]], "allowed_classes": ["bus"],
         "allowed_seconds": 60},
    ],
    "counting_lines": [{"id": "eb-count", "start": [900, 380], "end": [900, 460], "forward": "west",
                        "backward": "east", "lane": "eb"}],
    # The scenarios time their stops against a 10 s limit (a stop just under it, a dwell just over it), many of
    # them with vehicles standing from the first frame.
    "thresholds": {"stopped_seconds": 10, "unseen_stop_seconds": 10},
})
# 10 px per metre, ground plane = image plane (a top-down camera): lets the calibrated paths run.
CALIBRATION = CalibrationConfig(image_points=[(0, 0), (1000, 0), (1000, 1000), (0, 1000)],
                                ground_points=[(0, 0), (100, 0), (100, 100), (0, 100)])


@dataclass
class SimObject:
    track_id: int
    class_name: str
    size: tuple[float, float]
    keyframes: list[tuple[float, float, float]]  # (seconds, foot x, foot y), linear in between

    def foot(self, t: float) -> tuple[float, float] | None:
        times = [k[0] for k in self.keyframes]
        if t < times[0] or t > times[-1]:
            return None
        return (float(np.interp(t, times, [k[1] for k in self.keyframes])),
                float(np.interp(t, times, [k[2] for k in self.keyframes])))


@dataclass
class Truth:
    type: str
    onset: float  # seconds from the start, when the incident physically began
    end: float
    track_ids: frozenset[int] = frozenset()
    zone_id: str | None = None


@dataclass
class Scenario:
    name: str
    duration: float
    objects: list[SimObject] = field(default_factory=list)
    truths: list[Truth] = field(default_factory=list)
    blobs: list[tuple[tuple[float, float, float, float], float, float]] = field(default_factory=list)  # box, from, to
    with_track_ids: bool = True


def drive(track_id: int, y: float, stops: list[tuple[float, float]], speed: float, start_x: float, start_t: float,
          end_x: float, size=CAR, class_name="car") -> SimObject:
    """A vehicle along y from start_x to end_x at `speed` (px/s, signed), pausing at each (x, seconds) in stops."""
    keyframes = [(start_t, start_x, y)]
    t, x = start_t, start_x
    for stop_x, seconds in stops:
        t += abs(stop_x - x) / abs(speed)
        keyframes.append((t, stop_x, y))
        t += seconds
        keyframes.append((t, stop_x, y))
        x = stop_x
    keyframes.append((t + abs(end_x - x) / abs(speed), end_x, y))
    return SimObject(track_id, class_name, size, keyframes)


def arrival_time(obj: SimObject, x: float) -> float:
    """When the object first reaches foot x (keyframes are monotone in x for vehicles)."""
    for (t1, x1, _), (t2, x2, _) in pairwise(obj.keyframes):
        if min(x1, x2) <= x <= max(x1, x2) and x1 != x2:
            return t1 + (x - x1) / (x2 - x1) * (t2 - t1)
    raise ValueError("never reaches x")


def frames(scenario: Scenario, rng: np.random.Generator, camera_id: str = "sim", drop_rate: float = 0.04,
           jitter_px: float = 1.5):
    """(Detections, static blobs) per frame."""
    for seq in range(int(scenario.duration * FPS)):
        t = seq / FPS
        boxes, names, confidences, ids = [], [], [], []
        for obj in scenario.objects:
            foot = obj.foot(t)
            if foot is None or rng.random() < drop_rate:
                continue
            w, h = obj.size
            box = np.array([foot[0] - w / 2, foot[1] - h, foot[0] + w / 2, foot[1]])
            x1, y1, x2, y2 = box + rng.normal(0, jitter_px, 4)
            boxes.append((float(x1), float(y1), float(x2), float(y2)))
            names.append(obj.class_name)
            confidences.append(float(rng.uniform(0.5, 0.9)))
            ids.append(obj.track_id)
        detections = Detections(
            camera_id=camera_id, seq=seq, captured_at=T0 + t, image_width=1280, image_height=720, model="sim",
            inference_ms=0, xyxy=boxes, confidence=confidences, class_id=[0] * len(boxes), class_name=names,
            track_id=ids if scenario.with_track_ids else None)
        # the detector needs ~3 s to call a blob static
        blobs = [StaticBlob(xyxy=box, static_since=T0 + start, fill_ratio=0.8)
                 for box, start, end in scenario.blobs if start + 3 <= t <= end]
        yield detections, blobs

"""A small crowd simulator: agents walking on a metric ground plane, seen by a camera through a homography.

Agents enter a walking area through its entrance edge (y = 0), walk towards the exit edge (y = length) at a speed
that falls with density (Weidmann's fundamental diagram), and leave. New agents are seen once outside the
entrance before they step in, so counting lines see a real crossing. Population follows either a target density
inside the zone (build-ups) or an inflow rate (surges). Each frame becomes a schemas.Detections message with
image boxes and track ids, optionally with missed detections, pixel jitter and a perfect density map (each person
on the head, as a model trained on head annotations puts them).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from processors.analytics.crowd.feet_map import HEAD_HEIGHT_M
from schemas import Detections
from schemas.calibration import Homography, fit_homography

BODY_WIDTH_M = 0.5
BODY_HEIGHT_M = 1.7
FREE_SPEED_M_S = 1.34
JAM_DENSITY = 5.4


def weidmann_speed(density: float) -> float:
    """Walking speed at a density (Weidmann 1993), with a creeping floor where the diagram reaches zero."""
    if density <= 0.1:
        return FREE_SPEED_M_S
    return max(0.05, FREE_SPEED_M_S * (1 - math.exp(-1.913 * (1 / density - 1 / JAM_DENSITY))))


@dataclass
class SimCamera:
    """A camera over a rectangular walking area width x length metres (x across, y along the walk)."""

    width_m: float
    length_m: float
    image_corners: tuple  # image pixels of ground (0,0), (width,0), (width,length), (0,length)
    image_size: tuple[int, int] = (1280, 720)

    @property
    def ground_corners(self) -> list[tuple[float, float]]:
        return [(0, 0), (self.width_m, 0), (self.width_m, self.length_m), (0, self.length_m)]

    @cached_property
    def homography(self) -> Homography:
        return fit_homography(list(self.image_corners), self.ground_corners)

    @property
    def area_m2(self) -> float:
        return self.width_m * self.length_m

    def zone_polygon(self) -> list[list[float]]:
        return [list(map(float, point)) for point in self.image_corners]

    def line(self, ground_y: float) -> tuple[list[float], list[float]]:
        """A counting segment across the area at ground_y, a little wider than the area, in image pixels."""
        ends = self.homography.to_image(np.array([[-0.3, ground_y], [self.width_m + 0.3, ground_y]]))
        return [float(v) for v in ends[0]], [float(v) for v in ends[1]]

    def calibration(self) -> dict:
        return {"image_points": [list(map(float, p)) for p in self.image_corners],
                "ground_points": [list(map(float, p)) for p in self.ground_corners]}


# A narrow alley seen along its length (Itaewon: about 3.2 m x 40 m) and an open square seen from high up.
ALLEY = SimCamera(3.2, 40.0, ((340, 650), (940, 650), (700, 130), (580, 130)))
SQUARE = SimCamera(16.0, 8.0, ((200, 660), (1080, 660), (900, 200), (380, 200)))


class CrowdSimulator:
    def __init__(self, camera: SimCamera, fps: float, seed: int = 1, start_at: float = 1_700_000_000.0,
                 target_density: Callable[[float], float] | None = None,
                 inflow_per_s: Callable[[float], float] | None = None, speed_noise_m_s: float = 0.05):
        if (target_density is None) == (inflow_per_s is None):
            raise ValueError("give exactly one of target_density and inflow_per_s")
        self.camera = camera
        self.dt = 1 / fps
        self.rng = np.random.default_rng(seed)
        self.start_at = start_at
        self.elapsed = 0.0
        self.seq = 0
        self.target_density = target_density
        self.inflow_per_s = inflow_per_s
        self.speed_noise = speed_noise_m_s
        self.next_id = 1
        initial = round(target_density(0) * camera.area_m2) if target_density else 0
        self.ids = np.arange(self.next_id, self.next_id + initial)
        self.next_id += initial
        self.xy = np.column_stack((self.rng.uniform(0.2, camera.width_m - 0.2, initial),
                                   self.rng.uniform(0.0, camera.length_m, initial)))

    def inside(self) -> np.ndarray:
        y = self.xy[:, 1]
        return (y >= 0) & (y <= self.camera.length_m)

    def true_density(self) -> float:
        return float(self.inside().sum() / self.camera.area_m2)

    def step(self) -> None:
        """Advances one frame interval: walk, leave, enter, queue new arrivals outside the entrance."""
        camera, dt = self.camera, self.dt
        waiting = self.xy[:, 1] < 0
        inside = self.inside()
        speed = weidmann_speed(self.true_density())
        forward = np.where(inside, speed, FREE_SPEED_M_S) * dt
        forward = forward + self.rng.normal(0, self.speed_noise * dt, len(forward))
        self.xy[:, 1] += np.maximum(forward, 0)
        # Arrivals queued last frame step in now, whatever the crowd's speed: they were pushed in.
        self.xy[waiting, 1] = self.rng.uniform(0.05, 0.4, int(waiting.sum()))
        self.xy[:, 0] = np.clip(self.xy[:, 0] + self.rng.normal(0, 0.05, len(self.xy)), 0.1, camera.width_m - 0.1)
        gone = self.xy[:, 1] > camera.length_m + 4.0  # seen walking away for a few frames
        self.xy, self.ids = self.xy[~gone], self.ids[~gone]
        self.elapsed += dt
        if self.target_density is not None:
            # Arrivals step in next frame; make up for those who will have walked out by then.
            wanted = self.target_density(self.elapsed + dt) * camera.area_m2
            leaving = self.inside() & (self.xy[:, 1] + weidmann_speed(self.true_density()) * dt > camera.length_m)
            arrivals = max(0, round(wanted - self.inside().sum() + leaving.sum()))
        else:
            arrivals = int(self.rng.poisson(self.inflow_per_s(self.elapsed) * dt))
        new = np.column_stack((self.rng.uniform(0.2, camera.width_m - 0.2, arrivals),
                               self.rng.uniform(-0.6, -0.15, arrivals)))
        self.xy = np.concatenate((self.xy, new))
        self.ids = np.concatenate((self.ids, np.arange(self.next_id, self.next_id + arrivals)))
        self.next_id += arrivals

    def detections(self, camera_id: str, miss_rate: float = 0.0, jitter_px: float = 0.0,
                   with_density_map: bool = False) -> Detections:
        """The current frame as the inference stage would publish it (perfect detector unless told otherwise)."""
        homography = self.camera.homography
        width, height = self.camera.image_size
        feet = homography.to_image(self.xy)
        sideways = homography.to_image(self.xy + np.array([BODY_WIDTH_M, 0.0]))
        pixels_per_m = np.hypot(*(sideways - feet).T) / BODY_WIDTH_M
        seen = (feet[:, 0] >= 0) & (feet[:, 0] < width) & (feet[:, 1] >= 0) & (feet[:, 1] < height)
        found = seen & (self.rng.random(len(feet)) >= miss_rate)
        foot = feet[found] + self.rng.normal(0, jitter_px, (int(found.sum()), 2)) if jitter_px else feet[found]
        half_w = pixels_per_m[found] * BODY_WIDTH_M / 2
        tall = pixels_per_m[found] * BODY_HEIGHT_M
        boxes = np.column_stack((foot[:, 0] - half_w, foot[:, 1] - tall, foot[:, 0] + half_w, foot[:, 1]))
        count = len(boxes)
        density_map = shape = None
        if with_density_map:
            rows, cols = height // 8, width // 8
            heads = feet[seen] - np.column_stack((np.zeros(int(seen.sum())),
                                                  homography.standing_height_px(feet[seen], HEAD_HEIGHT_M)))
            heads = heads[heads[:, 1] >= 0]  # the model counts the heads it sees: none above the picture
            cells = np.zeros((rows, cols), dtype=np.float32)
            np.add.at(cells, ((heads[:, 1] // 8).astype(int), (heads[:, 0] // 8).astype(int)), 1.0)
            density_map, shape = cells.tobytes(), (rows, cols)
        message = Detections(
            camera_id=camera_id, seq=self.seq, captured_at=self.start_at + self.elapsed, image_width=width,
            image_height=height, model="simulator", inference_ms=0.0, xyxy=[tuple(b) for b in boxes.tolist()],
            confidence=[0.9] * count, class_id=[0] * count, class_name=["person"] * count,
            track_id=self.ids[found].tolist(), density_map=density_map, density_map_shape=shape,
        )
        self.seq += 1
        return message

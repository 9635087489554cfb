"""Congestion per lane: occupancy, queue and (where calibrated) mean speed over a sliding window, with a level.

Occupancy is the share of the lane's area covered by the boxes of vehicles standing or crawling (sampled on a grid of
points inside the lane); the queue is the number of stopped vehicles in the lane. Speeds are metres per second from
the homography only, and a speed above the physical sanity bound is discarded rather than averaged in. The window
keeps one bucket per second, so its state stays small at any frame rate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from processors.analytics.traffic.incidents import Condition
from processors.analytics.traffic.rules import cut_by_the_edge, foot
from processors.analytics.traffic.scene import GroundHistories, Scene
from processors.analytics.traffic.state import TrackState, TrafficState
from schemas import Severity


class CongestionLevel(IntEnum):
    FREE = 0
    MODERATE = 1
    HEAVY = 2
    JAMMED = 3


@dataclass(frozen=True)
class LaneTraffic:
    lane_id: str
    occupancy: float  # 0..1, window mean
    queued_vehicles: float  # window mean
    mean_speed_mps: float | None  # None when uncalibrated or no plausible measurement
    level: CongestionLevel
    window_covered_seconds: float


def level_of(occupancy: float, queued: float, scene: Scene) -> CongestionLevel:
    thresholds = scene.thresholds
    by_occupancy = sum(occupancy >= bound for bound in thresholds.congestion_occupancy_levels)
    by_queue = sum(queued >= bound for bound in thresholds.congestion_queue_levels)
    return CongestionLevel(max(by_occupancy, by_queue))


def observe_lanes(scene: Scene, state: TrafficState, vehicles: list[TrackState], now: float,
                  standing_queues: set[str], frame_size: tuple[int, int], ground: GroundHistories) -> list[LaneTraffic]:
    """Adds this frame to every lane's window; returns each lane's window figures.

    Vehicles waiting in a red-light queue (the queue area of a stop line in `standing_queues`) are left out: a queue
    at a signal is the junction working, not congestion. A queue that stands longer than a red light can
    (`max_red_light_seconds`) is no longer in `standing_queues`, and counts. So are vehicles whose box the frame edge
    is cutting as they leave or enter the view (rules.cut_by_the_edge): the box moves with the cut, so a large
    vehicle driving out of the picture reads as one standing over much of the lane. `ground`: this frame's ground
    points of the tracks' histories."""
    window = scene.thresholds.congestion_window_seconds
    second = math.floor(now)
    by_lane: dict[str, list[TrackState]] = {lane_id: [] for lane_id in scene.lanes}
    for vehicle in vehicles:
        if scene.in_queue_area(foot(vehicle), standing_queues) or cut_by_the_edge(vehicle, frame_size):
            continue
        lane_id = scene.lane_of(foot(vehicle))
        if lane_id is not None:
            by_lane[lane_id].append(vehicle)
    results = []
    for lane_id, lane_vehicles in by_lane.items():
        grid = scene.lane_grids[lane_id]
        covered = np.zeros(len(grid), dtype=bool)
        for vehicle in lane_vehicles:
            # Flowing traffic fills no lane, however much of it a vehicle close to the camera covers.
            if scene.speed_box_per_s(vehicle) >= scene.thresholds.congestion_moving_speed_box_per_s:
                continue
            x1, y1, x2, y2 = vehicle.box
            covered |= (grid[:, 0] >= x1) & (grid[:, 0] <= x2) & (grid[:, 1] >= y1) & (grid[:, 1] <= y2)
        occupancy = float(covered.mean()) if len(grid) else 0.0
        queued = sum(scene.is_stopped(vehicle) for vehicle in lane_vehicles)
        speeds = [s for v in lane_vehicles
                  if not scene.is_stopped(v) and (s := scene.ground_speed_mps(v, ground)) is not None]
        buckets = [b for b in state.congestion.get(lane_id, []) if b[0] > second - window]
        if not buckets or buckets[-1][0] != second:
            buckets.append([second, 0.0, 0.0, 0, 0.0, 0])
        bucket = buckets[-1]
        bucket[1] += occupancy
        bucket[2] += queued
        bucket[3] += 1
        bucket[4] += sum(speeds)
        bucket[5] += len(speeds)
        state.congestion[lane_id] = buckets
        samples = sum(b[3] for b in buckets)
        speed_samples = sum(b[5] for b in buckets)
        mean_occupancy = sum(b[1] for b in buckets) / samples
        mean_queue = sum(b[2] for b in buckets) / samples
        results.append(LaneTraffic(
            lane_id=lane_id, occupancy=mean_occupancy, queued_vehicles=mean_queue,
            mean_speed_mps=sum(b[4] for b in buckets) / speed_samples if speed_samples else None,
            level=level_of(mean_occupancy, mean_queue, scene), window_covered_seconds=float(len(buckets))))
    return results


def congestion_conditions(scene: Scene, lanes: list[LaneTraffic]) -> list[Condition]:
    thresholds = scene.thresholds
    conditions = []
    for lane in lanes:
        # Half a window of evidence at least: a single dense frame is not congestion.
        half_window = thresholds.congestion_window_seconds / 2
        if lane.level < thresholds.congestion_event_level or lane.window_covered_seconds < half_window:
            continue
        details: dict[str, float | int | str] = {"level": lane.level.name.lower(),
                                                 "occupancy": round(lane.occupancy, 3),
                                                 "queued_vehicles": round(lane.queued_vehicles, 1)}
        if lane.mean_speed_mps is not None:
            details["mean_speed_mps"] = round(lane.mean_speed_mps, 2)
        conditions.append(Condition(
            key=f"congestion:{lane.lane_id}", type="congestion",
            severity=Severity.WARNING if lane.level == CongestionLevel.JAMMED else Severity.INFO,
            reason=f"lane {lane.lane_id} {lane.level.name.lower()}: occupancy {lane.occupancy:.0%}, "
                   f"{lane.queued_vehicles:.1f} vehicles queued",
            confidence=min(1.0, lane.window_covered_seconds / thresholds.congestion_window_seconds),
            zone_id=lane.lane_id, level=int(lane.level), details=details))
    return conditions

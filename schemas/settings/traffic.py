"""Traffic scene configuration of one camera: lanes, intersection box, crosswalks, lines, no-stopping zones.

All geometry is in image pixels of the camera's own picture (x right, y down), the stream's full-size frame, whatever
size capture scales frames to (`max_width`). Metres come only from the camera's
`calibration`; without one the traffic rules work in pixels and report no speeds.
"""
from __future__ import annotations

import difflib
from typing import Annotated

import numpy as np
from pydantic import Field, field_validator, model_validator

from schemas.settings.base import Frozen, Identifier, Point, refuse_retired, require_unique, verify_simple_polygon
from schemas.settings.lines import CountingLineConfig

Share = Annotated[float, Field(le=1)]  # of a whole: a level above 1 would never be reached


class LaneConfig(Frozen):
    id: Identifier
    polygon: list[Point] = Field(min_length=3, description="lane outline in image pixels")
    direction: Point = Field(description="allowed direction of travel as an image vector (dx, dy), y pointing down")

    _polygon = field_validator("polygon")(verify_simple_polygon)

    @field_validator("direction")
    @classmethod
    def verify_direction_non_zero(cls, direction: Point) -> Point:
        if np.hypot(*direction) < 1e-9:
            raise ValueError("direction vector must not be zero")
        return direction


class RegionConfig(Frozen):
    """A named area: crosswalk or sidewalk."""

    id: Identifier
    polygon: list[Point] = Field(min_length=3)

    _polygon = field_validator("polygon")(verify_simple_polygon)


class PedestrianAreaConfig(Frozen):
    """A plaza, walkway or crowd zone where vehicles and cyclists must not move."""

    id: Identifier
    polygon: list[Point] = Field(min_length=3, description="area outline in image pixels")
    crowded_people: int = Field(
        default=10, ge=1, le=10000, description="people detected in the area at or above which a vehicle moving in "
        "it is critical (the vehicle-into-crowd risk)")

    _polygon = field_validator("polygon")(verify_simple_polygon)


class StoppingZoneConfig(Frozen):
    """Intersection box or no-stopping zone: a vehicle stopped here longer than allowed is an event."""

    id: Identifier
    polygon: list[Point] = Field(min_length=3)
    queue_stop_lines: list[str] = Field(
        default_factory=list,
        description="stop lines whose red-light queue excuses vehicles stopped here; empty: never excused",
    )
    allowed_classes: list[str] = Field(
        default_factory=list, description="vehicle classes that may stand here for allowed_seconds (a bus stop: "
        "['bus']); any other vehicle is flagged after stopped_seconds")
    allowed_seconds: float = Field(default=60.0, gt=0, le=3600, description="how long a vehicle of allowed_classes "
                                   "may stand here (a bus at its stop)")

    _polygon = field_validator("polygon")(verify_simple_polygon)


class StopLineConfig(Frozen):
    id: Identifier
    start: Point
    end: Point
    queue_area: list[Point] = Field(min_length=3, description="approach area behind the line where a queue stands")

    _polygon = field_validator("queue_area")(verify_simple_polygon)

    @model_validator(mode="after")
    def verify_endpoints_distinct(self) -> "StopLineConfig":
        if self.start == self.end:
            raise ValueError("start and end must differ")
        return self


class TrafficThresholds(Frozen):
    """Rule thresholds; times in seconds of capture time, distances in image pixels unless the name says metres."""

    # Flagged within 10 s of its standstill: on real footage its time at rest starts up to a fraction of a second
    # after the standstill (box jitter as it settles, frames a second apart at low rates).
    stopped_seconds: float = Field(
        default=9, gt=0, le=3600, description="a vehicle at rest this long where it should not be (lane outside a "
        "queue, intersection box, no-stopping zone, sidewalk, pedestrian area): event")
    stationary_box_fraction: float = Field(
        default=0.15, gt=0, le=1, description="a track is stationary while its anchor stays within this fraction "
        "of its box diagonal (scale-free, absorbs box jitter)")
    # A vehicle seen only standing (parked before the camera's view began, or in a loosely drawn lane's edge) has
    # stood there for an unknown time: its stop is no news at the moment it is first seen.
    unseen_stop_seconds: float = Field(
        default=30, gt=0, le=3600, description="a vehicle standing where it was first seen (its stop not seen) is "
        "flagged after this long at rest instead of stopped_seconds, where it may not stand")
    min_stationary_seconds: float = Field(default=1.0, gt=0, le=60,
                                          description="stationary this long counts as stopped")
    queue_head_distance_boxes: float = Field(
        default=1.5, gt=0, le=20, description="a queue's head waits at a stop line (a red-light queue stands), the "
        "intersection, a crosswalk, its lane's end or the frame edge when its box is this close to it, in heights of "
        "its box (the gap in front of a vehicle scales with its box, at any resolution and in perspective)")
    max_red_light_seconds: float = Field(
        default=180, gt=0, le=3600, description="a red-light queue standing longer, or a lone vehicle "
        "waiting longer at the junction, excuses nobody")
    wrong_way_min_distance_diagonals: float = Field(
        default=0.115, gt=0, le=1, description="distance against the lane direction, in diagonals of the picture "
        "(the same view at any resolution: 92 px at 640x480, 253 px at 1920x1080)")
    wrong_way_min_seconds: float = Field(default=1.5, gt=0, le=10, description="time spent moving against it")
    # Someone crossing a single lane on foot is on it about 2.5 s (3.5 m at 1.4 m/s); a rider whose two-wheeler the
    # detector misses for a moment in a waiting queue reads as a person on the roadway for under 1.5 s.
    pedestrian_min_seconds: float = Field(default=2.0, ge=0, le=60, description="on the roadway this long: event")
    # The background model's passing blobs on real footage (distant traffic at the horizon, a slowly drifting view
    # over lane markings, shadows) were shown standing for up to 12.6 s; fallen cargo stays until someone clears it.
    obstacle_min_seconds: float = Field(default=15.0, ge=0, le=600,
                                        description="obstacle in a lane this long: event")
    crossing_debounce_frames: int = Field(
        default=2, ge=1, le=30, description="frames on the new side before a crossing counts")
    count_window_seconds: float = Field(default=60, ge=1, le=3600, description="line counts are reported per window")
    congestion_window_seconds: float = Field(default=30, ge=1, le=600)
    congestion_occupancy_levels: tuple[Share, Share, Share] = Field(
        default=(0.25, 0.45, 0.65),
        description="lane occupancy (share of the lane covered, at most 1) for moderate, heavy, jammed")
    congestion_queue_levels: tuple[int, int, int] = Field(
        default=(3, 6, 10), description="stopped vehicles in the lane for moderate, heavy, jammed")
    congestion_moving_speed_box_per_s: float = Field(
        default=1.0, gt=0, description="a vehicle moving at least this fast (box heights per second; a car at about "
        "5 km/h) is flowing traffic and adds nothing to its lane's occupancy: one passing close to the camera covers "
        "much of its lane")
    congestion_event_level: int = Field(default=2, ge=1, le=3, description="1 moderate, 2 heavy, 3 jammed")
    max_plausible_speed_mps: float = Field(
        default=70, gt=0, le=150, description="speeds above this are measurement errors and are discarded")
    crosswalk_vehicle_speed_mps: float = Field(
        default=4.0, gt=0, description="a vehicle this fast on an occupied crosswalk is an event (calibrated only)")
    collision_min_iou: float = Field(
        default=0.03, gt=0, le=1, description="box overlap that counts as contact (low: at 5 frames per second a "
        "fast vehicle's first sampled contact may be a sliver)")
    collision_min_speed_box_per_s: float = Field(
        default=0.8, gt=0, description="speed before contact, in box heights per second (scale-free)")
    collision_stop_within_seconds: float = Field(
        default=4.0, gt=0, le=30, description="a vehicle that comes to rest this soon after a contact collided")
    collision_stopped_seconds: float = Field(
        default=3.0, gt=0, le=300, description="a collided (or abruptly stopped) vehicle at rest this long: event")
    impact_min_seconds: float = Field(
        default=0.6, gt=0, le=10, description="motion watched after a contact before judging whether it broke off "
        "(a collision flagged at contact needs both vehicles to stop dead, swerve or vanish)")
    impact_window_seconds: float = Field(
        default=2.0, gt=0, le=30, description="a contact can be confirmed as a collision this long after it")
    impact_turn_degrees: float = Field(
        default=45.0, gt=0, le=180, description="heading change across a contact, within impact_min_seconds of it "
        "and beyond the turn the vehicle was already making (on the ground where calibrated), that counts as swerving")
    converging_min_closing_box_per_s: float = Field(
        default=4.0, gt=0, description="two separate vehicles closing on each other at least this fast (in mean box "
        "heights per second), then seen as one box where both were heading, collided: at a few frames per second a "
        "crash at speed may never show two touching boxes. Vehicles passing in perspective close far slower")
    converging_min_growth: float = Field(
        default=1.3, gt=1, description="that one box is at least this many times the area of the larger vehicle's: "
        "two vehicles locked together, not the nearer one hiding the farther behind a box of its own size")
    crash_stop_speed_box_per_s: float = Field(
        default=0.8, gt=0, description="speed over the second before coming to rest, in box heights per second, "
        "above which a stop was abrupt: off the roadway or after a contact, a crash (not a vehicle pulling over or a "
        "queue braking); after a contact, its speed over the half second before the contact must be as high")
    crash_into_standing_speed_box_per_s: float = Field(
        default=1.6, gt=0, description="the same for a vehicle coming to rest against one that stood there before "
        "(parked, waiting): a crash into it only above this speed, since a queue's vehicles close up on each other in "
        "perspective and two-wheelers filtering past cars stop short beside them")
    crash_moving_back_speed_box_per_s: float = Field(
        default=1.2, gt=0, description="the same for a vehicle coming to rest while moving back along its lane "
        "(within 45 degrees of the reverse of the lane direction): knocked back or spun round by a crash above this "
        "speed, reversing (into a parking space) below it")
    static_object_grace_seconds: float = Field(
        default=5.0, ge=0, le=600, description="evidence of an object at rest may vanish this long (dust, "
        "occlusion, a blob that splits and re-forms) and it is still the same object")
    reported_object_grace_seconds: float = Field(
        default=15.0, ge=0, le=600, description="the same for an object at rest already reported: hidden this long (a "
        "wreck in smoke, a stalled car behind a bus stopped beside it, debris under passing traffic) and found again "
        "where it was, it is the same incident; an unknown object's event ends once its place is seen clear (a road "
        "user stood over it since its blob went, and it is not shown again 3 s after that one moved off)")
    pedestrian_area_min_seconds: float = Field(
        default=0.6, ge=0, le=60, description="a vehicle or cyclist moving in a pedestrian area this long: event")
    pedestrian_area_moving_box_per_s: float = Field(
        default=0.5, gt=0, description="speed (box heights per second) from which a vehicle counts as fully moving")
    pedestrian_area_walking_box_per_s: float = Field(
        default=0.4, gt=0, description="speed (box heights per second) up to which a person in a pedestrian area is "
        "walking")
    pedestrian_area_fast_person_box_per_s: float = Field(
        default=2.0, gt=0, description="speed (box heights per second; about 12 km/h) from which a person in a "
        "pedestrian area is on wheels (a bicycle, skateboard or cart the detector does not see) and raises the event "
        "like a vehicle; between walking and this speed a person's share of the area's score grows")
    pedestrian_area_min_score: float = Field(
        default=0.3, gt=0, le=1, description="confidence x speed factor above which a vehicle in a pedestrian area "
        "raises the event")
    view_settle_seconds: float = Field(
        default=2.0, ge=0, le=600, description="after the camera's view moved (pan, tilt, strong shake) no rule "
        "runs until it has kept still this long; tracks and objects at rest are learnt again from the new view")
    resolve_seconds: float = Field(default=2.0, ge=0, le=600, description="a condition gone this long ends its event")
    track_ttl_seconds: float = Field(
        default=5.0, gt=0, le=600, description="state of an unseen track is dropped after this")

    @model_validator(mode="after")
    def verify_impact_window(self) -> "TrafficThresholds":
        if not self.impact_min_seconds < self.impact_window_seconds:
            raise ValueError("impact_min_seconds must be shorter than impact_window_seconds")
        if self.impact_window_seconds > self.collision_stop_within_seconds + self.collision_stopped_seconds:
            raise ValueError("impact_window_seconds must not exceed collision_stop_within_seconds + "
                             "collision_stopped_seconds (how long a contact is remembered)")
        if self.reported_object_grace_seconds < self.static_object_grace_seconds:
            raise ValueError("reported_object_grace_seconds must not be shorter than static_object_grace_seconds")
        if self.unseen_stop_seconds < self.stopped_seconds:
            raise ValueError("unseen_stop_seconds must not be below stopped_seconds")
        if not self.pedestrian_area_walking_box_per_s < self.pedestrian_area_fast_person_box_per_s:
            raise ValueError("pedestrian_area_walking_box_per_s must be below pedestrian_area_fast_person_box_per_s")
        return self

    @field_validator("congestion_occupancy_levels", "congestion_queue_levels")
    @classmethod
    def verify_levels_increasing(cls, levels: tuple) -> tuple:
        if not levels[0] < levels[1] < levels[2]:
            raise ValueError("levels must increase: moderate < heavy < jammed")
        if levels[0] <= 0:
            raise ValueError("levels must be positive")
        return levels

    @model_validator(mode="before")
    @classmethod
    def verify_no_pixel_wrong_way_distance(cls, data: object) -> object:
        return refuse_retired(data, {"wrong_way_min_distance_px": "give wrong_way_min_distance_diagonals, in "
                                     "diagonals of the picture (80 px in a 640x480 picture is 0.1)"})


VEHICLE_CLASSES = ["bicycle", "car", "motorcycle", "bus", "truck"]
# Classes that belong on or beside a road; any other COCO class inside a lane is an obstacle.
ROAD_CLASSES = ["person", *VEHICLE_CLASSES, "train", "traffic light", "fire hydrant", "stop sign", "parking meter"]


class SceneConfig(Frozen):
    """The traffic scene seen by one camera."""

    lanes: list[LaneConfig] = Field(default_factory=list)
    intersection: StoppingZoneConfig | None = Field(default=None, description="the box that must be kept clear")
    crosswalks: list[RegionConfig] = Field(default_factory=list)
    sidewalks: list[RegionConfig] = Field(default_factory=list)
    stop_lines: list[StopLineConfig] = Field(default_factory=list)
    counting_lines: list[CountingLineConfig] = Field(default_factory=list)
    no_stopping_zones: list[StoppingZoneConfig] = Field(default_factory=list)
    pedestrian_areas: list[PedestrianAreaConfig] = Field(default_factory=list)
    vehicle_classes: list[str] = Field(default_factory=lambda: list(VEHICLE_CLASSES), min_length=1)
    road_classes: list[str] = Field(default_factory=lambda: list(ROAD_CLASSES),
                                    description="classes that are not obstacles when seen in a lane")
    thresholds: TrafficThresholds = TrafficThresholds()

    @model_validator(mode="before")
    @classmethod
    def verify_no_own_calibration(cls, data: object) -> object:
        return refuse_retired(data, {"image_to_ground": "give the camera a `calibration` (image_points and "
                                     "ground_points, optionally the fitted 3x3 homography), which crowd and traffic "
                                     "share"})

    @model_validator(mode="after")
    def verify_unique_ids(self) -> "SceneConfig":
        named = [*self.lanes, *self.crosswalks, *self.sidewalks, *self.stop_lines, *self.counting_lines,
                 *self.no_stopping_zones, *self.pedestrian_areas, *([self.intersection] if self.intersection else [])]
        require_unique([item.id for item in named], "scene id")
        return self

    @model_validator(mode="after")
    def verify_references(self) -> "SceneConfig":
        lanes = {lane.id for lane in self.lanes}
        for line in self.counting_lines:
            if line.lane is not None and line.lane not in lanes:
                raise ValueError(f"counting line {line.id}: unknown lane {line.lane!r}")
        stop_lines = {line.id for line in self.stop_lines}
        for zone in [*self.no_stopping_zones, *([self.intersection] if self.intersection else [])]:
            unknown = sorted(set(zone.queue_stop_lines) - stop_lines)
            if unknown:
                raise ValueError(f"zone {zone.id}: unknown stop line(s) {', '.join(unknown)}")
            not_vehicles = sorted(set(zone.allowed_classes) - set(self.vehicle_classes))
            if not_vehicles:
                raise ValueError(f"zone {zone.id}: allowed_classes not in vehicle_classes: {', '.join(not_vehicles)}")
        return self

    def classes_outside(self, names: set[str]) -> list[tuple[str, str]]:
        """(field, classes) for each list of classes the scene gives that names classes outside `names` (a model's):
        a typo, or a model retrained on other classes, whose vehicles would never be vehicles. The lists left to
        their defaults (COCO's names) are not named: a class a model lacks there is one it never reports."""
        given = [(field, getattr(self, field)) for field in ("vehicle_classes", "road_classes")
                 if field in self.model_fields_set]
        given += [(f"counting_lines[{line.id}].classes", line.classes) for line in self.counting_lines if line.classes]
        outside = []
        for field, classes in given:
            unknown = []
            for name in dict.fromkeys(name for name in classes if name not in names):
                closest = difflib.get_close_matches(name, names, n=1)
                unknown.append(f"{name} (did you mean {closest[0]}?)" if closest else name)
            if unknown:
                outside.append((field, ", ".join(unknown)))
        return outside

    @model_validator(mode="after")
    def verify_vehicles_are_road_classes(self) -> "SceneConfig":
        missing = sorted(set(self.vehicle_classes) - set(self.road_classes))
        if missing:
            raise ValueError("vehicle classes missing from road_classes (they would be obstacles): "
                             f"{', '.join(missing)}")
        return self

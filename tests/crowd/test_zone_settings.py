"""Zone settings that would misbehave later: non-finite numbers, the calibration's horizon, the local-density grid,
and bounds checked together. Each is refused when the configuration is loaded, naming the field."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from cityguard.cli import main
from processors.analytics.crowd.analyzer import CrowdAnalyzer
from processors.analytics.crowd.local_density import GroundGrid
from schemas import RiskLevel
from schemas.calibration import fit_homography
from schemas.settings.config import CameraConfig, ConfigError, load_config, parse_config
from schemas.settings.crowd import (
    MAX_GRID_CELL_RADII,
    MAX_GRID_SIDE_CELLS,
    CalibrationConfig,
    ZoneConfig,
    area_disagreements,
    stray_entrances,
    verify_zone_areas,
)
from tests.crowd.simulator import ALLEY, CrowdSimulator
from tests.crowd.simulator import SQUARE as SIMULATED

SQUARE = [[0, 0], [100, 0], [100, 100], [0, 100]]


def camera(**fields) -> dict:
    return {"id": "cam1", "source": "video.mp4", "zones": [{"id": "z1", "polygon": SQUARE, "area_m2": 50}], **fields}


def load_yaml(tmp_path: Path, text: str):
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return load_config(path)


# --- non-finite numbers --------------------------------------------------------------------------------------------

SITE_WITH_A_LINE = """
cameras:
  - id: cam1
    source: video.mp4
    zones:
      - id: z1
        polygon: [[0, 0], [100, 0], [100, 100], [0, 100]]
        area_m2: 50
        entrances: [{id: gate, start: [0, 50], end: [100, 50]}]
"""


@pytest.mark.parametrize("old, new, field", [
    ("[100, 100], [0, 100]]", "[.nan, 100], [0, 100]]", "cameras.0.zones.0.polygon.2.0"),
    ("end: [100, 50]", "end: [.nan, 50]", "cameras.0.zones.0.entrances.0.end.0"),
    ("area_m2: 50", "area_m2: .inf", "cameras.0.zones.0.area_m2"),
    ("cameras:", "analytics: {thresholds: {critical: .inf}}\ncameras:", "analytics.thresholds.critical"),
    ("cameras:", "analytics: {movement: {max_speed_m_s: .inf}}\ncameras:", "analytics.movement.max_speed_m_s"),
    ("cameras:", "model: {class_confidence: {0: .nan}}\ncameras:", "model.class_confidence.0"),
])
def test_a_non_finite_number_is_refused_naming_the_field(tmp_path, old, new, field):
    with pytest.raises(ConfigError) as error:
        load_yaml(tmp_path, SITE_WITH_A_LINE.replace(old, new))
    assert f"{field}: Input should be a finite number" in str(error.value)


def test_a_non_finite_calibration_is_refused(tmp_path):
    good = {"image_points": [[100, 400], [500, 400], [420, 100], [180, 100]],
            "ground_points": [[0, 0], [10, 0], [10, 20], [0, 20]]}
    for field, value in (("ground_points", [[0, 0], [10, math.inf], [10, 20], [0, 20]]),
                         ("homography", [[1, 0, 0], [0, math.nan, 0], [0, 0, 1]])):
        with pytest.raises(ConfigError, match=rf"cameras\.0\.calibration\.{field}\.1\.1: Input should be a finite"):
            parse_config({"cameras": [camera(calibration={**good, field: value})]}, Path("."))


# --- the calibration's horizon -------------------------------------------------------------------------------------

FOCAL_PX, CENTRE_PX, HEIGHT_M, PITCH = 800.0, (640.0, 360.0), 6.0, math.radians(20)
HORIZON_Y_PX = CENTRE_PX[1] - FOCAL_PX * math.tan(PITCH)  # 69 px from the top


def pinhole_image(world_xy: np.ndarray) -> np.ndarray:
    """Image pixels of ground points (world metres) for a camera 6 m up at the world origin, looking along +y
    pitched 20° down."""
    right, down = np.array([1.0, 0, 0]), np.array([0, -math.sin(PITCH), -math.cos(PITCH)])
    forward = np.array([0, math.cos(PITCH), -math.sin(PITCH)])
    relative = np.column_stack((world_xy, np.zeros(len(world_xy)))) - [0, 0, HEIGHT_M]
    depth = relative @ forward
    return np.column_stack((CENTRE_PX[0] + FOCAL_PX * (relative @ right) / depth,
                            CENTRE_PX[1] + FOCAL_PX * (relative @ down) / depth))


WORLD_MARKS = np.array([[-4.0, 8.0], [4.0, 8.0], [4.0, 30.0], [-4.0, 30.0], [0.0, 15.0]])
ZONE_ON_THE_GROUND = pinhole_image(np.array([[-2.0, 10.0], [2.0, 10.0], [2.0, 20.0], [-2.0, 20.0]])).tolist()
ZONE_ABOVE_THE_HORIZON = [[500.0, 10.0], [700.0, 10.0], [700.0, 50.0], [500.0, 50.0]]
ZONE_ACROSS_THE_HORIZON = [[500.0, 40.0], [700.0, 40.0], [700.0, 300.0], [500.0, 300.0]]


def pinhole_calibration(landmark: tuple[float, float], fitted: bool) -> CalibrationConfig:
    """The camera's calibration with ground coordinates measured from a landmark (world metres)."""
    image_points = pinhole_image(WORLD_MARKS).tolist()
    ground_points = (WORLD_MARKS - landmark).tolist()
    matrix = None if fitted else fit_homography(image_points, ground_points).as_lists()
    return CalibrationConfig(image_points=image_points, ground_points=ground_points, homography=matrix)


@pytest.mark.parametrize("fitted", [True, False], ids=["fitted", "matrix given"])
@pytest.mark.parametrize("landmark", [(0.0, 12.0), (0.0, -30.0), (25.0, -5.0)],
                         ids=["origin in front", "origin behind the camera", "origin behind, to the side"])
def test_the_horizon_does_not_depend_on_where_ground_coordinates_start(landmark, fitted):
    calibration = pinhole_calibration(landmark, fitted)
    homography = calibration.to_homography()
    assert homography.on_ground(np.array(ZONE_ON_THE_GROUND)).all()
    assert not homography.on_ground(np.array(ZONE_ABOVE_THE_HORIZON)).any()
    assert homography.on_ground(np.array(ZONE_ACROSS_THE_HORIZON)).tolist() == [False, False, True, True]

    verify_zone_areas([ZoneConfig(id="walk", polygon=ZONE_ON_THE_GROUND)], calibration)
    for polygon in (ZONE_ABOVE_THE_HORIZON, ZONE_ACROSS_THE_HORIZON):
        with pytest.raises(ValueError, match="zone sky: polygon reaches above the calibrated ground plane's horizon"):
            verify_zone_areas([ZoneConfig(id="sky", polygon=polygon)], calibration)


# --- the local-density grid ----------------------------------------------------------------------------------------

def uniform_crowd(width_m: float, length_m: float, density: float) -> np.ndarray:
    """People on a square lattice at `density` per m² over a width x length rectangle from (0, 0)."""
    spacing = 1 / math.sqrt(density)
    xs = np.arange(spacing / 2, width_m, spacing)
    ys = np.arange(spacing / 2, length_m, spacing)
    return np.array(np.meshgrid(xs, ys)).reshape(2, -1).T


def largest_side_m(radius_m: float) -> float:
    """The longest zone side a grid covers in cells of R / 2, less its margin of 2 R each side."""
    return MAX_GRID_SIDE_CELLS * MAX_GRID_CELL_RADII * radius_m - 4 * radius_m


@pytest.mark.parametrize("radius_m, width_m, length_m", [
    (1.0, 10, 10), (1.0, 40, 25), (1.0, 120, 12), (1.0, largest_side_m(1.0), 8),
    (1.0, largest_side_m(1.0), largest_side_m(1.0) / 4), (0.5, 30, 20), (0.5, largest_side_m(0.5), 10),
    (2.0, largest_side_m(2.0), 30),
])
def test_a_uniform_crowd_reads_its_density_in_any_zone_the_grid_covers(radius_m, width_m, length_m):
    ground = np.array([[0, 0], [width_m, 0], [width_m, length_m], [0, length_m]], dtype=float)
    grid = GroundGrid(ground, radius_m, 0.25)
    peak = grid.fields(uniform_crowd(width_m, length_m, 3.0)).peak_density_per_m2
    assert peak == pytest.approx(3.0, rel=0.15)
    assert max(grid.shape) <= MAX_GRID_SIDE_CELLS and grid.cell_m <= radius_m / 2  # memory and work bounded


@pytest.mark.parametrize("radius_m, width_m, length_m", [(1.0, 300, 300), (1.0, 1000, 1000), (0.5, 200, 10)])
def test_a_zone_beyond_the_grids_bound_is_refused(radius_m, width_m, length_m):
    ground = np.array([[0, 0], [width_m, 0], [width_m, length_m], [0, length_m]], dtype=float)
    assert max(width_m, length_m) > largest_side_m(radius_m)
    with pytest.raises(ValueError, match="split the zone"):
        GroundGrid(ground, radius_m, 0.25)


@pytest.mark.parametrize(("unit", "per_m", "box"), [("centimetres", 100, "320 x 4000"),
                                                   ("millimetres", 1000, "3200 x 40000")])
def test_a_zone_calibrated_in_another_unit_is_refused_at_start_naming_the_unit(unit, per_m, box):
    calibration = ALLEY.calibration()
    calibration["ground_points"] = [[x * per_m, y * per_m] for x, y in calibration["ground_points"]]
    with pytest.raises(ConfigError, match=rf"camera cam: zone zone: its ground box of {box} m is no crowd zone: "
                       rf"are the calibration's ground_points in metres\? \(in {unit} it is 3.2 x 40 m\)"):
        parse_config({"site": "sim", "cameras": [{"id": "cam", "source": "0", "calibration": calibration,
                                                  "zones": [{"id": "zone", "polygon": ALLEY.zone_polygon()}]}]},
                     Path("."))


@pytest.mark.parametrize("latitude_first", [False, True])
def test_ground_points_copied_from_a_map_in_degrees_are_refused_at_start_saying_so(latitude_first):
    """Longitude and latitude fit a homography as well as metres do: a camera without zones took them, and one with a
    zone was refused for the speck of 1e-8 m² its zone became."""
    calibration = ALLEY.calibration()
    degrees = [[126.978 + x / 88_000, 37.5665 + y / 111_000] for x, y in calibration["ground_points"]]
    calibration["ground_points"] = [point[::-1] for point in degrees] if latitude_first else degrees
    with pytest.raises(ConfigError) as error:
        parse_config({"site": "sim", "cameras": [{"id": "cam", "source": "0", "calibration": calibration}]}, Path("."))
    message = str(error.value).splitlines()[1:]
    assert len(message) == 1 and message[0].startswith("  cameras.0.calibration: ground_points lie within 0.05 of "
                                                       "each other")
    assert "longitude and latitude in degrees?" in message[0]


def test_a_zone_too_large_for_its_grid_is_refused_at_start_naming_it():
    """A calibrated 300 m square (10 px a metre): its grid at R = 1 m would need cells of 0.6 m."""
    image = [[0, 0], [3000, 0], [3000, 3000], [0, 3000]]
    calibration = {"image_points": image, "ground_points": [[x / 10, y / 10] for x, y in image]}
    site = {"cameras": [{"id": "cam1", "source": "0", "calibration": calibration,
                         "zones": [{"id": "square", "polygon": image}]}]}
    with pytest.raises(ConfigError) as error:
        parse_config(site, Path("."))
    message = str(error.value).splitlines()[1:]
    assert len(message) == 1 and "camera cam1: zone square: its ground box of 304 x 304 m" in message[0]
    assert "analytics.movement.local_density_radius_m" in message[0]
    parse_config({**site, "analytics": {"movement": {"local_density_radius_m": 2.0}}}, Path("."))


# --- bounds, alone and together ------------------------------------------------------------------------------------

@pytest.mark.parametrize("analytics, zone, field", [
    ({"surge": {"min_inflow_per_minute": 0}}, {}, "analytics.surge.min_inflow_per_minute"),
    ({}, {"area_m2": 1e-310}, "cameras.0.zones.0.area_m2"),
    ({}, {"area_m2": 0.5}, "cameras.0.zones.0.area_m2"),
    ({"movement": {"local_density_radius_m": 0.25}}, {}, "analytics.movement.local_density_radius_m"),
    ({"movement": {"local_density_radius_m": 0.6, "grid_cell_m": 0.4}}, {},
     "analytics.movement: grid_cell_m (0.4) must be at most half of local_density_radius_m (0.6)"),
    ({"risk": {"early_warning_seconds": 1200}}, {},
     "analytics.risk.early_warning_seconds (1200) must be at most analytics.forecast.max_horizon_minutes x 60 (900)"),
    ({"window_seconds": 600, "hop_seconds": 0.5}, {}, "camera cam1: its crowd state could reach"),
])
def test_a_setting_that_would_misbehave_later_is_refused_in_one_line(analytics, zone, field):
    site = camera()
    site["zones"][0].update(zone)
    with pytest.raises(ConfigError) as error:
        parse_config({"analytics": analytics, "cameras": [site]}, Path("."))
    problems = str(error.value).splitlines()[1:]
    assert len(problems) == 1 and field in problems[0]


def test_settings_checked_together_accept_what_fits():
    analytics = {"risk": {"early_warning_seconds": 1200}, "forecast": {"max_horizon_minutes": 20},
                 "movement": {"local_density_radius_m": 0.5, "grid_cell_m": 0.25},
                 "surge": {"min_inflow_per_minute": 0.5}}
    parse_config({"analytics": analytics, "cameras": [camera()]}, Path("."))


def test_a_calibrated_zone_under_a_square_metre_is_refused_naming_it():
    """A camera 100 px a metre: a 50 px square zone covers 0.25 m²."""
    image = [[0, 0], [1000, 0], [1000, 1000], [0, 1000]]
    calibration = {"image_points": image, "ground_points": [[x / 100, y / 100] for x, y in image]}
    site = {"id": "cam1", "source": "0", "calibration": calibration,
            "zones": [{"id": "kiosk", "polygon": [[0, 0], [50, 0], [50, 50], [0, 50]]}]}
    with pytest.raises(ConfigError, match=r"zone kiosk: the calibration gives it 0\.25 m², under the 1 m²"):
        parse_config({"cameras": [site]}, Path("."))
    site["zones"][0]["polygon"] = [[0, 0], [200, 0], [200, 200], [0, 200]]
    assert parse_config({"cameras": [site]}, Path(".")).cameras[0].zones[0].area_m2 is None


def test_shipped_configurations_load(tmp_path):
    root = Path(__file__).resolve().parents[2]
    for path in [*sorted((root / "configs").glob("*.yaml")), root / "infra/compose/cityguard.yaml"]:
        load_config(path)
    config_map = next(document for document in yaml.safe_load_all((root / "infra/k8s/cityguard.yaml").read_text())
                      if document["kind"] == "ConfigMap" and document["metadata"]["name"] == "cityguard-config")
    load_yaml(tmp_path, config_map["data"]["cityguard.yaml"])


def test_a_measured_area_the_calibration_contradicts_is_named(tmp_path, capsys):
    def camera_with(area_m2: float) -> dict:
        return {"id": "plaza", "source": "0", "calibration": SIMULATED.calibration(),
                "zones": [{"id": "square", "polygon": SIMULATED.zone_polygon(), "area_m2": area_m2}]}

    close = CameraConfig.model_validate(camera_with(SIMULATED.area_m2 * 1.1))
    assert area_disagreements(close.zones, close.calibration) == []  # within what a calibration is off by
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"cameras": [camera_with(SIMULATED.area_m2 / 3)]}))
    assert main(["check-config", "--config", str(site)]) == 0
    warning = capsys.readouterr().err
    assert (f"camera plaza: zone square: area_m2 is {SIMULATED.area_m2 / 3:g} m² but the calibration gives it"
            in warning)


def test_a_measured_area_larger_than_the_calibrations_leaves_the_zone_unknown_never_calm():
    """area_m2 in square feet makes a crowd 10.8 times sparser than it is (4 p/m² read at warning, by its packed spots
    alone); a measured area the smaller of the two only reads it denser."""
    def last_window(area_m2: float):
        config = parse_config({"site": "sim", "analytics": {"window_seconds": 10}, "cameras": [
            {"id": "plaza", "source": "0", "fps": 5.0, "calibration": SIMULATED.calibration(),
             "zones": [{"id": "square", "polygon": SIMULATED.zone_polygon(), "area_m2": area_m2}]}]}, Path("."))
        simulator = CrowdSimulator(SIMULATED, 5.0, seed=2, target_density=lambda _: 4.0)
        analyzer = CrowdAnalyzer(config.cameras[0], config.analytics)
        metrics = []
        for _ in range(100):
            simulator.step()
            metrics += analyzer.update(simulator.detections("plaza", with_density_map=True)).zone_metrics
        return metrics[-1]

    in_square_feet = last_window(SIMULATED.area_m2 / 0.3048 ** 2)
    assert in_square_feet.risk_level == RiskLevel.UNKNOWN and not in_square_feet.count_reliable
    assert in_square_feet.risk_reason == (f"count unreliable: area_m2 is {SIMULATED.area_m2 / 0.3048 ** 2:g} m² but "
                                          f"the calibration gives the zone {SIMULATED.area_m2:.3g} m²")
    smaller = last_window(SIMULATED.area_m2 / 1.6)
    assert smaller.count_reliable and smaller.risk_level == RiskLevel.DANGER


def test_an_entrance_drawn_away_from_its_zone_is_named(tmp_path, capsys):
    def zone(*entrances: tuple[list[int], list[int]]) -> ZoneConfig:
        return ZoneConfig(id="square", polygon=[[200, 200], [400, 200], [400, 400], [200, 400]], area_m2=50,
                          entrances=[{"id": f"gate{n}", "start": start, "end": end}
                                     for n, (start, end) in enumerate(entrances, 1)])

    # across the outline, from on it, and stopping a few pixels short of it (within 5 % of the zone's 283 px size)
    assert stray_entrances([zone(([300, 150], [300, 250]), ([400, 300], [450, 300]), ([190, 250], [190, 350]))]) == []
    assert stray_entrances([zone(([10, 10], [50, 10]), ([250, 300], [350, 300]))]) == [
        "zone square: entrance gate1 from [10, 10] to [50, 10] is 242 px from the zone's outline: an entrance is drawn "
        "across it, or what crosses it neither enters nor leaves the zone",
        "zone square: entrance gate2 from [250, 300] to [350, 300] is 50 px from the zone's outline: an entrance is "
        "drawn across it, or what crosses it neither enters nor leaves the zone"]
    site = tmp_path / "site.yaml"
    site.write_text(SITE_WITH_A_LINE.replace("start: [0, 50], end: [100, 50]", "start: [150, 10], end: [190, 10]"))
    assert main(["check-config", "--config", str(site)]) == 0
    printed = capsys.readouterr()
    assert ("cityguard: warning: camera cam1: zone z1: entrance gate from [150, 10] to [190, 10] is 50 px from the "
            "zone's outline") in printed.err
    assert printed.out.endswith(", 1 camera, 1 zone: OK\n")

"""Density maps moved from the heads, where a model trained on head annotations puts people, to the feet, where zones
and the detector's people are: the standing height a calibration gives, and the counts of a crowd in a ground zone."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from processors.analytics.crowd.analyzer import CrowdAnalyzer, CrowdState, ZoneGeometry
from processors.analytics.crowd.feet_map import (
    HEAD_HEIGHT_M,
    HEAD_SHARE,
    FeetMap,
    PersonHeights,
    PictureHeights,
    calibrated_head_height,
)
from schemas import RiskLevel
from schemas.calibration import fit_homography
from schemas.settings.config import parse_config
from tests.crowd.scenarios import CAMERA_ID, ZONE_ID, site_config
from tests.crowd.simulator import ALLEY, SQUARE, CrowdSimulator


def pinhole(height_m: float, depression_deg: float, focal_px: float = 1000.0, size=(1280, 720)):
    """A level camera `height_m` above the ground looking down by `depression_deg`: world point (x, y, z) -> pixel."""
    tilt = np.radians(depression_deg)
    forward = np.array([0.0, np.cos(tilt), -np.sin(tilt)])
    right = np.array([1.0, 0.0, 0.0])
    rotation = np.vstack((right, np.cross(forward, right), forward))
    intrinsics = np.array([[focal_px, 0, size[0] / 2], [0, focal_px, size[1] / 2], [0, 0, 1]])

    def project(points):
        image = intrinsics @ (rotation @ (np.atleast_2d(points) - [0.0, 0.0, height_m]).T)
        return (image[:2] / image[2]).T
    return project


@pytest.mark.parametrize(("height_m", "depression_deg"), [(4, 10), (6, 30), (10, 45), (20, 60)])
def test_a_standing_height_from_a_ground_calibration_is_the_pinhole_cameras_within_a_fifth(height_m, depression_deg):
    project = pinhole(height_m, depression_deg)
    ground = np.array([[-3, 5, 0], [3, 5, 0], [3, 30, 0], [-3, 30, 0], [0, 12, 0], [1, 20, 0]], dtype=float)
    homography = fit_homography(project(ground).tolist(), ground[:, :2].tolist())
    feet = np.array([[0, 8, 0], [2, 10, 0], [-2.5, 15, 0], [0, 25, 0]], dtype=float)
    true = project(feet)[:, 1] - project(feet + [0, 0, HEAD_HEIGHT_M])[:, 1]
    estimated = homography.standing_height_px(project(feet), HEAD_HEIGHT_M)
    assert np.all(estimated <= true) and np.all(estimated >= 0.8 * true), (estimated, true)


def test_a_view_from_straight_above_puts_the_head_over_the_feet():
    assert np.allclose(SQUARE.homography.standing_height_px(np.array([[640.0, 400.0]]), HEAD_HEIGHT_M), 0.0)


def zone_density(camera, simulator: CrowdSimulator, moved: bool) -> float:
    config = site_config(camera, 5.0)
    zone = ZoneGeometry(config.cameras[0].zones[0], config.cameras[0], config.analytics, 0)
    detections = simulator.detections("cam", with_density_map=True)
    density = detections.density()
    if moved:
        density = FeetMap(calibrated_head_height(camera.homography)).moved(density, camera.image_size)
    return zone.model_people(density, camera.image_size) / zone.area_m2


def test_a_crowd_in_an_alley_seen_along_it_reads_its_density_once_the_map_is_moved_to_the_feet():
    simulator = CrowdSimulator(ALLEY, fps=5, seed=3, target_density=lambda t: 5.0)
    truth = simulator.true_density()
    assert zone_density(ALLEY, simulator, moved=False) < 0.5 * truth  # heads of the near people beside the far zone
    assert zone_density(ALLEY, simulator, moved=True) == pytest.approx(truth, rel=0.1)


def test_moving_a_map_keeps_its_total():
    density = np.random.default_rng(1).random((90, 160)).astype(np.float32)
    moved = FeetMap(calibrated_head_height(ALLEY.homography)).moved(density, ALLEY.image_size)
    assert moved.dtype == density.dtype and moved.sum() == pytest.approx(density.sum(), rel=1e-5)
    assert moved[-1].sum() > density[-1].sum()  # the near people's feet below the picture stay on its last row


def test_an_uncalibrated_camera_learns_how_far_above_the_feet_heads_are_from_its_whole_people():
    simulator = CrowdSimulator(ALLEY, fps=5, seed=4, target_density=lambda t: 0.5)
    heights = PictureHeights()
    # Heads and shoulders (as wide as tall), and people the picture's top edge cuts, say nothing of a person's height.
    heights.add(np.array([[600.0, 300.0, 640.0, 340.0], [620.0, 0.0, 630.0, 60.0]]), ALLEY.image_size)
    assert len(heights.boxes) == 0
    while heights.judging:
        simulator.step()
        heights.add(simulator.detections(CAMERA_ID).boxes(), ALLEY.image_size)
    feet = np.array([[640.0, 200.0], [640.0, 400.0], [640.0, 640.0]])
    calibrated = ALLEY.homography.standing_height_px(feet, HEAD_HEIGHT_M)
    assert heights.head_height_px(feet) == pytest.approx(calibrated, rel=0.1)
    assert heights.head_height_px(np.array([[640.0, -100.0]]))[0] == 0.0  # above the horizon nobody stands


def test_from_about_head_height_the_heads_do_not_tell_where_the_feet_are_and_maps_stay_at_the_heads():
    """Seen from head height, every head lies near one row however far away its person stands (here row 100 at
    eye level, people 100-500 px tall): moving the map would put them all on the picture's bottom row."""
    feet_rows = np.linspace(200.0, 600.0, 60)
    heights = PictureHeights()
    heights.add(np.column_stack((np.full(60, 600.0), feet_rows - (feet_rows - 100) / HEAD_SHARE,
                                 np.full(60, 620.0), feet_rows)), (1280, 720))
    assert not heights.judging
    config = site_config(ALLEY, 5.0, calibrated=False, entrances=())
    state = CrowdState(person_boxes=heights.boxes.tobytes())
    density = np.random.default_rng(2).random((90, 160)).astype(np.float32)
    feet_map = CrowdAnalyzer(config.cameras[0], config.analytics, state).feet_map
    assert np.array_equal(feet_map.moved(density, (1280, 720)), density)


def test_a_calibrated_camera_at_about_head_height_keeps_its_maps_at_the_heads_where_they_tell_the_feet_badly():
    """The same holds for a calibrated camera 1.8 m up, in the rows below its horizon where a head lies less than half a
    row lower for feet a row lower: a head seen at row 292 went to feet at row 580, which an error of a few rows in the
    head's place would put anywhere from there to the picture's bottom; a head at row 484, whose feet the search sent
    below the picture, stays too. A camera on a 6 m pole over the same ground moves the first three cells down and the
    second eleven."""
    ground = np.array([[-4, 4, 0], [4, 4, 0], [4, 40, 0], [-4, 40, 0]], dtype=float)
    for head_row, height_m, feet_row in ((36, 1.8, 36), (60, 1.8, 60), (36, 6.0, 39), (60, 6.0, 71)):
        density = np.zeros((90, 160), dtype=np.float32)
        density[head_row, 80] = 1.0
        project = pinhole(height_m, 8)
        homography = fit_homography(project(ground).tolist(), ground[:, :2].tolist())
        moved = FeetMap(calibrated_head_height(homography)).moved(density, (1280, 720))
        assert np.argwhere(moved).tolist() == [[feet_row, 80]], (head_row, height_m)


def uncalibrated_alley_metrics(frames: int, learnt_first: bool):
    """An alley at 6 p/m² (danger) with only `area_m2`: the detector finds one person in five, the maps find them all
    by their heads; with `learnt_first`, its people walked through sparse for 20 s before."""
    config = site_config(ALLEY, 5.0, calibrated=False, entrances=())
    analyzer = CrowdAnalyzer(config.cameras[0], config.analytics)
    simulator = CrowdSimulator(ALLEY, fps=5, seed=5, target_density=lambda t: 6.0, start_at=1_700_000_020.0)
    if learnt_first:
        sparse = CrowdSimulator(ALLEY, fps=5, seed=6, target_density=lambda t: 0.3)
        for _ in range(100):
            sparse.step()
            analyzer.update(sparse.detections(CAMERA_ID))
        simulator.seq = sparse.seq
    metrics = []
    for _ in range(frames):
        simulator.step()
        metrics += analyzer.update(simulator.detections(CAMERA_ID, miss_rate=0.8, with_density_map=True)).zone_metrics
    return metrics, simulator.true_density(), analyzer


def test_a_packed_crowd_in_an_uncalibrated_alley_reads_its_density_once_its_peoples_heights_are_learnt():
    """Counted by the heads over it, the alley's far zone read under half its crowd; its maps now go to the feet by
    the heights of the people the detector found whole, here in the crowd's own first seconds."""
    metrics, truth, analyzer = uncalibrated_alley_metrics(150, learnt_first=False)
    assert analyzer.feet_map is not None
    assert metrics[-1].count_reliable and metrics[-1].risk_level == RiskLevel.DANGER
    assert metrics[-1].density_mean_per_m2 == pytest.approx(truth, rel=0.15)
    # A restart fits the same heights from the kept boxes.
    restored = CrowdAnalyzer.restore(analyzer.camera, site_config(ALLEY, 5.0, calibrated=False, entrances=()),
                                     analyzer.state_bytes())
    assert restored.picture_heights.line == analyzer.picture_heights.line and restored.feet_map is not None


def test_heights_learnt_from_a_sparse_crowd_carry_over_to_a_packed_one():
    metrics, truth, _ = uncalibrated_alley_metrics(100, learnt_first=True)
    assert all(m.risk_level == RiskLevel.DANGER for m in metrics if m.count_reliable)
    assert metrics[-1].density_mean_per_m2 == pytest.approx(truth, rel=0.15)


@pytest.mark.parametrize(("unit", "per_m"), [(None, 1.0), ("feet", 1 / 0.3048), ("metres", 6.0)])
def test_ground_points_in_another_unit_are_told_by_how_tall_they_make_people(unit, per_m, caplog):
    # Any unit fits the homography exactly; in feet the alley's area is 10.8 times too large, its crowd as calm (one
    # measured 6 times too long, in no unit, is told to be in metres).
    calibration = ALLEY.calibration()
    calibration["ground_points"] = [[x * per_m, y * per_m] for x, y in calibration["ground_points"]]
    config = parse_config({"site": "sim", "analytics": {"window_seconds": 10}, "cameras": [
        {"id": CAMERA_ID, "source": "0", "fps": 2.0, "calibration": calibration,
         "zones": [{"id": ZONE_ID, "polygon": ALLEY.zone_polygon()}]}]}, Path("."))
    simulator = CrowdSimulator(ALLEY, 2.0, seed=2, target_density=lambda _: 3.0)
    analyzer = CrowdAnalyzer(config.cameras[0], config.analytics)
    metrics = []
    with caplog.at_level(logging.WARNING):
        for _ in range(100):
            simulator.step()
            metrics += analyzer.update(simulator.detections(CAMERA_ID, with_density_map=True)).zone_metrics
    told = [record.message for record in caplog.records if "calibration makes people" in record.message]
    if unit is None:
        assert metrics[-1].risk_level == RiskLevel.CAUTION and metrics[-1].count_reliable and told == []
        return
    tall = 1.7 * per_m
    problem = f"the calibration makes people {tall:.2g} m tall: are ground_points in {unit}?"
    assert metrics[-1].risk_level == RiskLevel.UNKNOWN and not metrics[-1].count_reliable
    assert metrics[-1].risk_reason == f"count unreliable: {problem}"
    assert len(told) == 1 and problem in told[0]  # once, not at every frame
    # A restart judges the kept boxes again at once.
    assert CrowdAnalyzer.restore(config.cameras[0], config, analyzer.state_bytes()).person_heights.problem == problem


def test_people_reading_short_prove_no_calibration_wrong():
    """In a packed crowd the detector boxes heads and shoulders: a third of a person's height says nothing of the
    calibration's unit, and the zone must go on reading the density its map measures."""
    heights = PersonHeights(ALLEY.homography)
    feet = np.array([[640.0 + 10 * (i % 20), 300.0 + 5 * i] for i in range(60)])
    tall = ALLEY.homography.standing_height_px(feet, 1.7 / 3)
    boxes = np.column_stack((feet[:, 0] - 10, feet[:, 1] - tall, feet[:, 0] + 10, feet[:, 1]))
    assert heights.add(boxes, (1280, 720)) is False
    assert not heights.judging and heights.problem is None
    assert np.median(heights.heights_m()) == pytest.approx(1.7 / 3, rel=0.05)

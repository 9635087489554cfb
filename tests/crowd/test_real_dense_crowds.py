"""Packed crowds from real photographs through the analytics' zone counter in the default configuration.

tests/crowd/data/dense_devset_outputs.npz holds what this project's own models made of four dense images of the
development set (tests/devsets/crowd, 450 to 1,111 people): the whole-frame detector's person boxes (0 to 18 found)
and the CSRNet density maps at 512 and 1024 pixels wide, which the inference stage combines into the map it sends.
No image is needed. A zone covers the whole frame with an area that puts the true count at 6 p/m² (danger).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from processors.analytics.crowd.analyzer import CrowdAnalyzer
from processors.analytics.crowd.risk import density_level
from processors.inference.density_map import DenseRegion
from schemas import Detections, RiskLevel
from schemas.settings.config import parse_config

OUTPUTS = Path(__file__).parent / "data" / "dense_devset_outputs.npz"
IMAGES = ("shtA_test_IMG_2", "shtA_test_IMG_74", "shtB_test_IMG_75", "shtB_test_IMG_219")
TRUE_DENSITY = 6.0  # p/m²: danger under the default thresholds
FPS = 1.0
SECONDS = 60


def recorded(image: str) -> dict:
    with np.load(OUTPUTS) as arrays:
        return {key.split("__")[1]: arrays[key] for key in arrays.files if key.startswith(image + "__")}


def analyzer_for(outputs: dict) -> CrowdAnalyzer:
    width, height = (int(v) for v in outputs["size"])
    zone = {"id": "zone", "polygon": [[0, 0], [width, 0], [width, height], [0, height]],
            "area_m2": float(outputs["true"]) / TRUE_DENSITY}
    config = parse_config({"site": "real", "cameras": [{"id": "cam", "source": "0", "fps": FPS, "zones": [zone]}]},
                          Path("."))
    return CrowdAnalyzer(config.cameras[0], config.analytics), config


def frame(outputs: dict, seq: int, density: np.ndarray | None = None) -> Detections:
    boxes = outputs["boxes"].astype(float)
    width, height = (int(v) for v in outputs["size"])
    return Detections(
        camera_id="cam", seq=seq, captured_at=1_700_000_000.0 + seq / FPS, image_width=width, image_height=height,
        model="yolo11n-int8", inference_ms=0.0, xyxy=[tuple(b) for b in boxes.tolist()],
        confidence=[0.5] * len(boxes), class_id=[0] * len(boxes), class_name=["person"] * len(boxes),
        density_map=None if density is None else density.astype(np.float32).tobytes(),
        density_map_shape=None if density is None else density.shape,
    )


@pytest.mark.parametrize("image", IMAGES)
def test_without_a_density_map_a_packed_crowd_is_never_reported_calm(image):
    outputs = recorded(image)
    analyzer, _ = analyzer_for(outputs)
    metrics = [m for seq in range(SECONDS) for m in analyzer.update(frame(outputs, seq)).zone_metrics]
    assert metrics and len(outputs["boxes"]) < 20  # the detector sees almost nobody: it cannot judge this zone
    for window in metrics:
        assert window.risk_level == RiskLevel.UNKNOWN and not window.count_reliable
        assert "no density map" in window.risk_reason


def multi_scale_map(outputs: dict, dense_cell_people: float) -> np.ndarray:
    """What DensityMapCounter.multi_scale_map makes of the image, from the recorded maps."""
    reduced, full = (outputs[f"map_{width}"].astype(np.float32) for width in (512, 1024))
    region = DenseRegion.of(reduced, dense_cell_people)
    assert region is not None  # packed crowds: the full-width map is made
    ratio = full.shape[0] / reduced.shape[0], full.shape[1] / reduced.shape[1]
    full_of_region = full[round(region.rows.start * ratio[0]):round(region.rows.stop * ratio[0]),
                          round(region.cols.start * ratio[1]):round(region.cols.stop * ratio[1])]
    return region.merged(reduced, full_of_region)


@pytest.mark.parametrize("image", IMAGES)
def test_with_density_maps_the_level_follows_the_measured_density(image):
    """A multi-scale map every 7 s, as the inference stage makes them."""
    outputs = recorded(image)
    analyzer, config = analyzer_for(outputs)
    density = multi_scale_map(outputs, config.analytics.density_model.dense_cell_people)
    area = float(outputs["true"]) / TRUE_DENSITY
    metrics = []
    for seq in range(SECONDS):
        metrics += analyzer.update(frame(outputs, seq, density if seq % 7 == 0 else None)).zone_metrics
    assert metrics
    measured = float(density.sum()) / area
    for window in metrics:
        assert window.count_reliable and window.density_mean_per_m2 == pytest.approx(measured, rel=1e-3)
        assert window.risk_level == density_level(measured, config.analytics.thresholds)
        # the truth is danger; these maps count 72 to 111 % of it, so a warning at least
        assert window.risk_level in (RiskLevel.WARNING, RiskLevel.DANGER)


def test_a_map_that_goes_stale_turns_the_zone_unknown_after_holding_its_level_for_the_dwell():
    outputs = recorded(IMAGES[0])
    analyzer, _ = analyzer_for(outputs)
    dense = outputs["map_1024"].astype(np.float32)
    # The detector finds too few of these people to prove anything: danger is held for the dwell (120 s), no longer.
    metrics = [m for seq in range(SECONDS + 120)
               for m in analyzer.update(frame(outputs, seq, dense if seq == 0 else None)).zone_metrics]
    assert metrics[0].risk_level == RiskLevel.DANGER
    assert metrics[3].risk_level == RiskLevel.DANGER and "minimum dwell" in metrics[3].risk_reason
    assert metrics[-1].risk_level == RiskLevel.UNKNOWN and "density map stale" in metrics[-1].risk_reason

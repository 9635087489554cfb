"""The CSRNet density-map counter on a real frame, and zone integration of a map."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from processors.inference.density_map import DensityMapCounter, convert_to_openvino, packaged_weights
from schemas.geometry import integrate_polygon
from tests.conftest import VTEST


@pytest.fixture(scope="module")
def counter(tmp_path_factory):
    try:
        weights = packaged_weights()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return DensityMapCounter(convert_to_openvino(weights, tmp_path_factory.mktemp("csrnet")))


def test_counter_gives_a_plausible_map_for_a_real_frame(counter, report):
    capture = cv2.VideoCapture(str(VTEST))
    ok, image = capture.read()
    capture.release()
    assert ok
    density = counter.density_map(image)
    height, width = image.shape[:2]
    count = float(density.sum())
    report("CSRNet on vtest.avi frame 0", f"{count:.1f} people (sparse scene of ~10: an over-count is expected)")
    assert density.dtype == np.float32 and density.shape == (height // 8, width // 8)
    assert np.isfinite(density).all() and (density >= 0).all()
    assert 3 <= count <= 100
    lower_half = [(0, height / 2), (width, height / 2), (width, height), (0, height)]
    assert 0 < integrate_polygon(density, lower_half, (width, height)) < count


def test_integration_weights_partial_cells_by_area():
    density = np.ones((10, 20), dtype=np.float32)  # a 160 x 80 image at 1/8: one person per cell
    assert integrate_polygon(density, [(0, 0), (160, 0), (160, 80), (0, 80)], (160, 80)) == pytest.approx(200)
    assert integrate_polygon(density, [(0, 0), (80, 0), (80, 40), (0, 40)], (160, 80)) == pytest.approx(50)
    assert integrate_polygon(density, [(0, 0), (4, 0), (4, 8), (0, 8)], (160, 80)) == pytest.approx(0.5)

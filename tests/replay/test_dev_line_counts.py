"""The counting lines of the traffic dev set on real footage, replayed from the recorded Detections of each clip:
each line's crossings per direction must stay within a margin of the hand count in line_counts.csv (manifest.yaml
says how it was made). The margins are what the measurement supports, not a target: where the product misses
crossings for a known reason the margin allows that many misses and no more, so the guard catches any worsening."""
from __future__ import annotations

from pathlib import Path

import pytest

from cityguard.evaluation.lines import crossings
from cityguard.evaluation.loaders import load_line_count_csv
from cityguard.replay import CameraAnalytics, find_camera, recorded_detections
from schemas.settings.config import load_config

DEVSET = Path(__file__).resolve().parents[1] / "devsets" / "traffic"
TRUTH = load_line_count_csv(DEVSET / "line_counts.csv")

# Crossings the count may fall short of the hand count (or exceed it), per camera and line. One either way is the
# slack of a count made at 5 fps: a vehicle on the line at the clip's start or end, or one the tracker loses for a
# frame right at the line. Beyond that:
MARGINS = {
    # Vehicles going away enter at the bottom edge close to the camera, where a car moves some 40-50 px between
    # frames at 5 fps and the tracker confirms it only about where the line lies (at y 144-164 against the line at
    # 150); the side it came from is where it was seen unconfirmed before. One car is confirmed past the line where
    # the frame before holds two boxes on it, read as a car and as a lorry, and which of them it continues is not
    # clear. Counted 33 of 35.
    ("kraten-arterial", "away-carriageway"): 1,
    # Going away on the right carriageway, a van (its boxes doubled and its class flickering between car and truck)
    # and a cement mixer (detected in every other frame) stay unconfirmed detections without a track all the way
    # across the line, which counts only tracks. Counted 5 of 7.
    ("overpass-motorway", "away-carriageway"): 2,
}
SLACK = 1


def counted_crossings(camera_id: str) -> dict[tuple[str, str, str], int]:
    """(camera, line, direction) -> crossings over the whole recording, every class together, as `cityguard eval
    lines` sums `cityguard replay --line-counts` windows (the window open at the end included)."""
    config = load_config(DEVSET / "site.yaml")
    analytics = CameraAnalytics(find_camera(config, camera_id), config)
    windows, latest = [], None
    for detections in recorded_detections(DEVSET / "detections" / f"{camera_id}.jsonl.gz", camera_id):
        windows.extend(analytics.update(detections).line_counts)
        latest = detections.captured_at
    windows.extend(analytics.end_of_footage_counts(latest + 1.0 / analytics.camera.fps))
    return crossings(windows)


@pytest.mark.parametrize("camera_id", sorted({camera for camera, _line, _direction in TRUTH}))
def test_each_line_counts_within_its_margin_of_the_hand_count(camera_id):
    counted = counted_crossings(camera_id)
    for (camera, line, direction), true in TRUTH.items():
        if camera != camera_id:
            continue
        allowed_short = MARGINS.get((camera, line), 0) + SLACK
        count = counted.get((camera, line, direction), 0)
        assert true - allowed_short <= count <= true + SLACK, (
            f"{line} {direction}: counted {count}, hand count {true}")

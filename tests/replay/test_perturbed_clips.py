"""The traffic rules on recordings of dev-set clips after a perturbation a real camera goes through (a shaking mast,
a jolt, a stream compressed harder; tests/devsets/traffic/manifest.yaml gives the ffmpeg filters): normal traffic
stays quiet and an incident stays one event."""
from __future__ import annotations

import pytest

from cityguard.replay import CLIP_ORIGIN_S
from tests.replay.test_dev_clips import opened_events


@pytest.mark.parametrize("camera_id", ["china-arterial", "dot-interstate-low-sun"])
def test_free_flow_on_a_camera_shaking_by_a_few_pixels_raises_nothing(camera_id):
    """Cars about 20 px tall moved 2-4 px between frames read as 1 box height per second: two standing in perspective
    overlap at that speed on the second frame, and one vanishing next was a collision at 0.8 s."""
    assert opened_events(camera_id, variant="shake") == []


def test_a_side_impact_in_the_rain_is_one_collision_from_a_stream_compressed_harder():
    """The car re-found at the contact is first seen touching the other, with no speed yet: the collision was lost
    until its speed is measured at the next frames of the contact."""
    events = opened_events("kirzhach-wet-junction-crash", variant="crf38")
    assert [(e.type, e.severity.value) for e in events] == [("collision", "critical")]
    assert 1.9 <= events[0].started_at - CLIP_ORIGIN_S <= 4.0 + 10  # labelled: contact 1.9 s, standstill 4.0 s


@pytest.mark.parametrize("variant", ["crf38", "jolt"])
def test_a_car_stopped_on_the_kerb_strip_is_one_stopped_vehicle_from_a_compressed_or_jolted_stream(variant):
    """crf38: the car's track handed over to a new one was rebuilt from the background model as a second object at
    rest (two events). jolt: the view moved and came back, and the car found where it stood had been read as a truck
    since, so it was forgotten (no event)."""
    events = opened_events("school-zone-kerb", variant=variant)
    assert [e.type for e in events] == ["stopped_vehicle"]
    assert 5.6 <= events[0].started_at - CLIP_ORIGIN_S <= 17.2


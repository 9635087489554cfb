"""The traffic rules on real dev-set footage, replayed from the Detections recorded from each clip (our model's
output, committed as derived data; the clips themselves stay outside the repository, see
tests/devsets/traffic/manifest.yaml). Each labelled clip must raise its event inside its labelled window and nothing
else; the free-flow clips must raise nothing."""
from __future__ import annotations

from pathlib import Path

import pytest

from cityguard.replay import CLIP_ORIGIN_S, find_camera, recorded_detections, replay
from schemas import EventState
from schemas.settings.config import load_config

DEVSET = Path(__file__).resolve().parents[1] / "devsets" / "traffic"
RECORDED = DEVSET / "detections"


def opened_events(camera_id: str) -> list:
    config = load_config(DEVSET / "site.yaml")
    camera = find_camera(config, camera_id)
    frames = replay(config, camera, recorded_detections(RECORDED / f"{camera_id}.jsonl.gz", camera_id))
    return [event for frame in frames for event in frame.events if event.state is EventState.OPENED]


def test_the_crash_is_one_critical_collision_within_10_s_of_standstill():
    events = opened_events("albert-crash")
    assert [(e.type, e.severity.value) for e in events] == [("collision", "critical")]
    started = events[0].started_at - CLIP_ORIGIN_S
    assert 7.6 <= started <= 9.6 + 10  # labelled: contact 7.6 s, standstill 9.6 s


def test_a_car_and_a_cyclist_moving_through_a_plaza_are_one_event_each():
    events = opened_events("lot-plaza")
    assert sorted(e.details["class_name"] for e in events) == ["bicycle", "car"]
    assert {e.type for e in events} == {"vehicle_in_pedestrian_area"}


@pytest.mark.parametrize("camera_id", ["reckon-motorway", "abhishek-motorway", "canersu-motorway", "kraten-arterial"])
def test_free_flowing_traffic_raises_nothing(camera_id):
    assert opened_events(camera_id) == []

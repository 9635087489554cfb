"""`cityguard bench analytics --vehicles`: a road of traffic beside the crowd, measured by the pure loop with the
traffic analyzer as well."""
from __future__ import annotations

import json
from pathlib import Path

from cityguard.bench.analytics import FIRST_VEHICLE_ID, LANES, crowd_frames, site, with_vehicles
from cityguard.cli import main
from processors.analytics.registry import analyzers_for
from schemas.settings.config import parse_config


def test_the_vehicles_keep_their_count_and_their_lanes_and_leave_the_walkers_as_they_were():
    walkers = crowd_frames(20, 5.0, 60)
    frames = with_vehicles(walkers, 30, 5.0)
    road_top, road_bottom = min(top for _, top, _, _ in LANES), max(bottom for _, _, bottom, _ in LANES)
    seen_ids = set()
    for walking, frame in zip(walkers, frames, strict=True):
        assert frame.xyxy[:20] == walking.xyxy and frame.track_id[:20] == walking.track_id
        vehicles = list(zip(frame.xyxy[20:], frame.class_name[20:], frame.track_id[20:], strict=True))
        assert len(vehicles) == 30 and len({track_id for _, _, track_id in vehicles}) == 30
        assert all(road_top <= y1 <= y2 <= road_bottom and name in ("car", "truck") and track_id >= FIRST_VEHICLE_ID
                   for (_, y1, _, y2), name, track_id in vehicles)
        seen_ids.update(track_id for _, _, track_id in vehicles)
    assert len(seen_ids) > 30  # vehicles leaving the picture come back as new tracks
    assert with_vehicles(walkers, 0, 5.0) is walkers


def test_a_road_gives_the_camera_the_traffic_analyzer_beside_the_crowds():
    assert set(analyzers_for(parse_config(site(10.0, 5.0), Path(".")).cameras[0])) == {"crowd"}
    camera = parse_config(site(10.0, 5.0, road=True), Path(".")).cameras[0]
    assert set(analyzers_for(camera)) == {"crowd", "traffic"}
    assert [lane.id for lane in camera.scene.lanes] == [lane for lane, _, _, _ in LANES]


def test_the_pure_loop_runs_both_analyzers_on_the_frames(tmp_path, capsys):
    figures = {}
    for vehicles in (0, 30):
        path = tmp_path / f"figures-{vehicles}.json"
        assert main(["bench", "analytics", "--no-stage", "--frames", "60", "--people", "20", "--vehicles",
                     str(vehicles), "--json", str(path)]) == 0
        figures[vehicles] = json.loads(path.read_text())
    assert [figures[vehicles]["vehicles"] for vehicles in (0, 30)] == [0, 30]
    assert figures[0]["pure"]["frames"] == figures[30]["pure"]["frames"] == 60
    # The traffic analyzer's state (its tracks) is stored beside the crowd's.
    assert figures[30]["pure"]["state_bytes"] > figures[0]["pure"]["state_bytes"]
    assert ["vehicles:", "30"] in [line.split() for line in capsys.readouterr().out.splitlines()]

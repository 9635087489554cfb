"""However much traffic is in view, the traffic analyzer's state stays one changelog record (its tracks capped at
what their worst-case size allows, the longest unseen going first; each track's history bounded) and a frame's
work grows with its vehicles, not with their square."""
from __future__ import annotations

import pytest

from processors.analytics.traffic.analyzer import HISTORY_SECONDS, SAMPLE_SPACING_S, TrafficAnalyzer
from processors.analytics.traffic.rules import SEEN_RIDING
from processors.analytics.traffic.state import (
    AREA_TIMER_BYTES,
    COLLISION_CANDIDATE_BYTES,
    COLLISIONS_BUDGET_BYTES,
    LINE_SIDE_BYTES,
    MAX_COLLISION_CANDIDATES,
    TRACK_STATE_BYTES,
    TRACKS_BUDGET_BYTES,
    CollisionCandidate,
    LineSide,
    TrackState,
    TrafficState,
    max_tracks,
)
from processors.analytics.traffic.static_objects import overlap
from schemas import Detections
from schemas.geometry import box_cover
from schemas.settings.config import Config
from schemas.settings.traffic import SceneConfig
from tests.traffic.simulator import SCENE, T0
from tests.traffic.suite import camera

FAUST_MAX_REQUEST_BYTES = 1_000_000  # faust's default producer_max_request_size
LONGEST_TIME = 1_700_000_000.1234567  # every number at its longest repr
LONGEST = -1234.5678901234567
MOST_SAMPLES = round(HISTORY_SECONDS / SAMPLE_SPACING_S) + 2  # one per spacing, both ends, and the newest


def worst_case_track(track_id: int, scene: SceneConfig) -> TrackState:
    box = (LONGEST,) * 4
    timers = {name: LONGEST_TIME for name in ("on_roadway", "obstacle", SEEN_RIDING)}
    timers.update({f"in_pedestrian_area:{area.id}": LONGEST_TIME for area in scene.pedestrian_areas})
    return TrackState(
        track_id=track_id, class_name="x" * 20, box=box, first_seen=LONGEST_TIME, last_seen=LONGEST_TIME,
        confidence=0.12345678901234567, history=[(LONGEST_TIME, LONGEST, LONGEST, LONGEST)] * MOST_SAMPLES,
        rest_point=(LONGEST, LONGEST), rest_since=LONGEST_TIME, rest_box=box, held_at=LONGEST_TIME,
        vehicle_since=LONGEST_TIME, first_point=(LONGEST, LONGEST), moved_away=True, reacquired=True, doubles=-(2**63),
        lines={line.id: LineSide(side=-1, pending=-1, pending_frames=30) for line in scene.counting_lines},
        timers=timers)


def scene_with(lines: int, areas: int) -> SceneConfig:
    return SceneConfig.model_validate({
        **SCENE.model_dump(),
        "counting_lines": [{"id": f"line-{i}-" + "l" * 40, "start": [0, 100 + i], "end": [1280, 100 + i]}
                           for i in range(lines)],
        "pedestrian_areas": [{"id": f"area-{i}-" + "a" * 40, "polygon": [[0, 0], [9, 0], [9, 9]]}
                             for i in range(areas)]})


@pytest.mark.parametrize("lines, areas", [(0, 0), (1, 0), (4, 6)])
def test_the_most_tracks_allowed_at_their_largest_fit_one_changelog_record(lines, areas):
    scene = scene_with(lines, areas)
    bare = worst_case_track(-(2**63), scene_with(0, 0)).model_dump_json()
    assert len(bare) <= TRACK_STATE_BYTES
    one = worst_case_track(-(2**63), scene)
    assert len(one.model_dump_json()) <= TRACK_STATE_BYTES + sum(
        LINE_SIDE_BYTES + len(line.id) for line in scene.counting_lines) + sum(
        AREA_TIMER_BYTES + len(area.id) for area in scene.pedestrian_areas)

    count = max_tracks(scene)
    state = TrafficState(tracks={-(2**62) - i: worst_case_track(-(2**62) - i, scene) for i in range(count)})
    assert len(state.model_dump_json()) <= TRACKS_BUDGET_BYTES < FAUST_MAX_REQUEST_BYTES


def people(seq: int, at: float, ids: range) -> Detections:
    boxes = [(10 + (i % 60) * 20, 250 + (i // 60) % 20 * 3, 30 + (i % 60) * 20, 300 + (i // 60) % 20 * 3)
             for i in ids]
    return Detections(camera_id="sim", seq=seq, captured_at=at, image_width=1280, image_height=720, model="t",
                      inference_ms=0, xyxy=boxes, confidence=[0.9] * len(ids), class_id=[0] * len(ids),
                      class_name=["person"] * len(ids), track_id=list(ids))


def test_tracks_over_the_cap_go_longest_unseen_first_and_the_state_stays_one_record():
    analyzer = TrafficAnalyzer.restore(camera(), Config(), None)
    cap = analyzer.max_tracks
    # Three crowds of `cap` people, each seen for a second after the one before left.
    for seq in range(15):
        crowd = range(1 + seq // 5 * cap, 1 + (seq // 5 + 1) * cap)
        analyzer.update(people(seq, T0 + seq * 0.2, crowd))
        assert len(analyzer.state.tracks) == cap
    assert set(analyzer.state.tracks) == set(range(1 + 2 * cap, 1 + 3 * cap))
    for seq in range(15, 30):  # a crowd too big for the cap, for 3 s: those seen longest keep their tracks
        analyzer.update(people(seq, T0 + seq * 0.2, range(1 + 2 * cap, 1 + 4 * cap)))
        assert len(analyzer.state.tracks) == cap
    assert set(analyzer.state.tracks) == set(range(1 + 2 * cap, 1 + 3 * cap))
    assert len(analyzer.state_bytes()) < FAUST_MAX_REQUEST_BYTES


def test_a_track_seen_at_high_frame_rates_keeps_a_bounded_history():
    analyzer = TrafficAnalyzer.restore(camera(), Config(), None)
    for seq in range(30 * 20):  # 20 s at 30 fps
        analyzer.update(people(seq, T0 + seq / 30, range(1, 2)))
    assert 2 < len(analyzer.state.tracks[1].history) <= MOST_SAMPLES


def cars(seq: int, at: float, ids: list[int], shift: float) -> Detections:
    # a grid of cars 100 px apart in rows 25 px apart: a car's box covers under half of its neighbours'
    boxes = [(20 + i % 12 * 100 + shift, 100 + i // 12 * 25, 100 + i % 12 * 100 + shift, 140 + i // 12 * 25)
             for i in range(len(ids))]
    return Detections(camera_id="sim", seq=seq, captured_at=at, image_width=1280, image_height=720, model="t",
                      inference_ms=0, xyxy=boxes, confidence=[0.9] * len(ids), class_id=[2] * len(ids),
                      class_name=["car"] * len(ids), track_id=ids)


def test_a_jam_of_vehicles_given_new_ids_at_once_is_found_again_comparing_each_new_box_once(monkeypatch):
    import processors.analytics.traffic.analyzer as traffic_analyzer

    analyzer, count = TrafficAnalyzer.restore(camera(), Config(), None), 90  # old and new tracks within the cap
    for seq in range(2):
        analyzer.update(cars(seq, T0 + seq * 0.2, list(range(1, count + 1)), 4 * seq))
    comparisons = []

    def counted(a, b):
        comparisons.append((len(a), len(b)))
        return box_cover(a, b)

    monkeypatch.setattr(traffic_analyzer, "box_cover", counted)
    analyzer.update(cars(2, T0 + 0.4, list(range(1001, 1001 + count)), 8))  # the tracker renumbered every car

    tracks = analyzer.state.tracks
    assert all(tracks[i].reacquired for i in range(1, count + 1))
    assert all(tracks[1000 + i].first_seen == T0 and len(tracks[1000 + i].history) == 3 for i in range(1, count + 1))
    assert len(comparisons) == count


class ReadsCounted(list):
    """The contacts remembered, counting how often a frame reads through them."""

    reads = 0

    def __iter__(self):
        ReadsCounted.reads += 1
        return super().__iter__()


def convoy(seq: int, count: int) -> Detections:
    # rows of cars 25 px apart driving right together at 150 px/s: each car touches those of the rows beside it
    boxes = [(20 + i % 8 * 140 + 30 * seq, 100 + i // 8 * 25, 100 + i % 8 * 140 + 30 * seq, 140 + i // 8 * 25)
             for i in range(count)]
    return Detections(camera_id="sim", seq=seq, captured_at=T0 + seq * 0.2, image_width=1280, image_height=720,
                      model="t", inference_ms=0, xyxy=boxes, confidence=[0.9] * count, class_id=[2] * count,
                      class_name=["car"] * count, track_id=list(range(1, count + 1)))


def test_a_frame_of_touching_vehicles_reads_the_contacts_and_compares_new_boxes_at_once_not_per_pair(monkeypatch):
    import processors.analytics.traffic.rules as traffic_rules

    compared = []

    def counted(a, b):
        compared.append((a, b))
        return overlap(a, b)

    monkeypatch.setattr(traffic_rules, "overlap", counted)
    work = {}
    for count in (16, 48):
        analyzer = TrafficAnalyzer.restore(camera(), Config(), None)
        compared.clear()
        analyzer.update(convoy(0, count))  # every car new, over the cars beside it
        first_frame = len(compared)
        for seq in range(1, 6):
            analyzer.update(convoy(seq, count))
        touching = len(analyzer.state.collisions)
        analyzer.state.collisions = ReadsCounted(analyzer.state.collisions)
        ReadsCounted.reads = 0
        analyzer.update(convoy(6, count))  # every remembered contact still touching
        work[count] = (first_frame, ReadsCounted.reads)
        assert touching >= count / 2

    assert work[16] == work[48]


def worst_case_contact() -> CollisionCandidate:
    box = (LONGEST,) * 4
    velocity = (LONGEST, LONGEST)
    return CollisionCandidate(
        track_ids=(-(2**63), -(2**63)), contact_at=LONGEST_TIME, speed_box_per_s=LONGEST, class_names=("x" * 20,) * 2,
        velocities_before=(velocity, velocity), speeds_at_contact=(LONGEST, LONGEST),
        headings_before=(velocity, velocity), turn_rates_before=(LONGEST, LONGEST), still_before=(LONGEST, LONGEST),
        confirmed_at=LONGEST_TIME, merged_box=box, converged_from=((LONGEST,) * 6,) * 2,
        reason="x" * 20 + " and " + "x" * 20 + " collided: closing at -1234.6 box/s, then seen as one box -1234.6 "
               "times the larger (-1234.57 s later), the " + "x" * 20 + " swerving -1234 degrees")


def test_the_most_contacts_kept_at_their_largest_fit_their_share_beside_the_tracks():
    assert len(worst_case_contact().model_dump_json()) <= COLLISION_CANDIDATE_BYTES
    assert MAX_COLLISION_CANDIDATES * COLLISION_CANDIDATE_BYTES <= COLLISIONS_BUDGET_BYTES
    assert TRACKS_BUDGET_BYTES + COLLISIONS_BUDGET_BYTES < FAUST_MAX_REQUEST_BYTES


def test_a_flood_of_fast_touching_boxes_keeps_the_newest_contacts_and_the_state_one_record():
    analyzer = TrafficAnalyzer.restore(camera(), Config(), None)
    for seq in range(10):
        analyzer.update(convoy(seq, 400))
        contacts = analyzer.state.collisions
        assert len(contacts) <= MAX_COLLISION_CANDIDATES
    assert len(contacts) == MAX_COLLISION_CANDIDATES  # the convoy touches in more pairs than that
    assert max(c.contact_at for c in contacts) == T0 + 9 * 0.2  # the newest kept
    assert len(analyzer.state_bytes()) < FAUST_MAX_REQUEST_BYTES

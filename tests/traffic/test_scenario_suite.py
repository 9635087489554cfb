"""Precision and recall per event type over the labelled scenario suite, with detection delays printed.

Print-out: `.venv/bin/pytest tests/traffic/test_scenario_suite.py -q -s`. Delay is measured from the physical onset
(the moment the vehicle stopped, the person stepped onto the road, ...), so it includes each rule's deliberate
waiting time (stopped 20 s, congestion window 30 s).
"""
from __future__ import annotations

import numpy as np

from processors.analytics.traffic.state import TrafficState
from schemas.base import frame_seen
from tests.traffic.scenarios import BUILDERS, collisions, obstacles, red_light_queue
from tests.traffic.suite import EVENT_TYPES, new_scores, run, score

SEEDS = range(16)


def test_precision_and_recall_per_event_type():
    scores, mistakes = new_scores(), []
    for builder in BUILDERS:
        for seed in SEEDS:
            scenario = builder(np.random.default_rng(10_000 + seed))
            events, _ = run(scenario, seed)
            mistakes += score(scenario, events, scores)
    print("\nevent type               truths  precision  recall  mean delay s")
    for event_type in EVENT_TYPES:
        s = scores[event_type]
        delay = f"{np.mean(s.delays):.1f}" if s.delays else "-"
        print(f"{event_type:24} {s.true_positives + s.false_negatives:6}  {s.precision:9.3f}  {s.recall:6.3f}  "
              f"{delay:>12}")
    for event_type in EVENT_TYPES:
        s = scores[event_type]
        assert s.true_positives + s.false_negatives >= 16, f"too few {event_type} truths for a meaningful score"
        assert s.precision >= 0.95 and s.recall >= 0.95, f"{event_type}: {mistakes}"


def test_state_round_trip_through_json_changes_nothing():
    """The analytics stage restores the analyzer from its JSON state for every frame: results must not change."""
    for builder in (red_light_queue, obstacles, collisions):
        scenario = builder(np.random.default_rng(7))
        direct, direct_counts = run(scenario, 7)
        restored, restored_counts = run(scenario, 7, roundtrip=True)
        assert restored == direct and restored_counts == direct_counts
        assert direct, "the scenario must produce events for the comparison to mean anything"


def test_each_incident_is_one_event_with_a_life():
    scenario = red_light_queue(np.random.default_rng(3))
    events, _ = run(scenario, 3)
    by_id: dict[str, list[str]] = {}
    for event in events:
        by_id.setdefault(event.event_id, []).append(event.state.value)
    assert by_id, "expected the lone stopped car's event"
    for states in by_id.values():
        assert states[0] == "opened" and states[-1] == "resolved" and states.count("opened") == 1


def test_a_state_stored_before_frame_runs_were_kept_has_seen_the_frames_up_to_its_last():
    state = TrafficState.model_validate_json('{"last_seq": 700000}')  # as an earlier version wrote it, in part
    assert frame_seen(state.seen_runs, 700000) and frame_seen(state.seen_runs, 699000)
    assert not frame_seen(state.seen_runs, 700001)
    assert TrafficState().seen_runs == []

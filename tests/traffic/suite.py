"""Runs scenarios through the analyzer and scores its events against the labelled truths."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from processors.analytics.traffic.analyzer import TrafficAnalyzer
from schemas import Event, EventState
from schemas.settings.config import CameraConfig, Config
from tests.traffic.simulator import CALIBRATION, SCENE, T0, Scenario, frames

EVENT_TYPES = ["stopped_vehicle", "wrong_way", "pedestrian_on_roadway", "obstacle_in_lane", "congestion",
               "collision"]
MATCH_SLACK_S = 5.0


def camera(scene=SCENE) -> CameraConfig:
    return CameraConfig(id="sim", source="sim.mp4", scene=scene, calibration=CALIBRATION)


def run(scenario: Scenario, seed: int, roundtrip: bool = False) -> tuple[list[Event], list]:
    """All events and line-count windows of one scenario; `roundtrip` restores the analyzer from JSON every frame."""
    rng = np.random.default_rng(seed)
    cam, config = camera(), Config()
    analyzer, state = TrafficAnalyzer.restore(cam, config, None), None
    events, counts = [], []
    for detections, blobs in frames(scenario, rng):
        if roundtrip:
            analyzer = TrafficAnalyzer.restore(cam, config, state)
        output = analyzer.update(detections.model_copy(update={"static_blobs": blobs}))
        events += output.events
        counts += output.line_counts
        if roundtrip:
            state = analyzer.state_bytes()
    return events, counts


@dataclass
class Score:
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0
    delays: list[float] = field(default_factory=list)

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 1.0

    @property
    def recall(self) -> float:
        expected = self.true_positives + self.false_negatives
        return self.true_positives / expected if expected else 1.0


def score(scenario: Scenario, events: list[Event], scores: dict[str, Score]) -> list[str]:
    """Adds one scenario's outcome to `scores`; returns a line per mistake for the failure message."""
    opened = [event for event in events if event.state == EventState.OPENED]
    unmatched = list(scenario.truths)
    mistakes = []
    for event in opened:
        start = event.started_at - T0
        match = next((truth for truth in unmatched if truth.type == event.type and _same_subject(scenario, truth, event)
                      and truth.onset - 1 <= start <= truth.end + MATCH_SLACK_S), None)
        if match is None:
            scores[event.type].false_positives += 1
            mistakes.append(f"{scenario.name}: false {event.type} at {start:.1f}s tracks {event.track_ids}: "
                            f"{event.reason}")
            continue
        unmatched.remove(match)
        scores[event.type].true_positives += 1
        scores[event.type].delays.append(start - match.onset)
    for truth in unmatched:
        scores[truth.type].false_negatives += 1
        mistakes.append(f"{scenario.name}: missed {truth.type} at {truth.onset:.1f}s tracks {sorted(truth.track_ids)}")
    return mistakes


def _same_subject(scenario: Scenario, truth, event: Event) -> bool:
    if truth.zone_id is not None:
        return event.zone_id == truth.zone_id
    if not scenario.with_track_ids:
        return True  # the analyzer's own tracker numbers tracks itself; such scenarios hold one truth per type
    return bool(set(event.track_ids) & truth.track_ids)


def new_scores() -> dict[str, Score]:
    return defaultdict(Score)

"""The analytics stage's per-partition live analyzers: a frame whose outputs the broker did not confirm does not
count as applied, so the analyzers that took it go back to their states before it and take it again; an analyzer
that raised goes on from its state before the frame, unless that state is what keeps failing: then it starts afresh,
and what it had open is resolved."""
from __future__ import annotations

from functools import partial

import msgpack
import pytest
from pydantic import ValidationError

from processors.analytics.crowd.analyzer import CrowdAnalyzer
from processors.analytics.stage import (
    MAX_FAILURES_IN_A_ROW,
    AnalyzerReset,
    LivePartition,
    OpenRecord,
    closed_by_reset,
)
from processors.analytics.traffic.analyzer import TrafficAnalyzer
from schemas import Event, EventState, Severity, encode
from schemas.event import CLOSED_BY_RESET
from schemas.settings.config import CameraConfig, Config
from tests.crowd.scenarios import ZONE_ID, run_scenario, site_config, steady_crowd
from tests.crowd.simulator import SQUARE, CrowdSimulator
from tests.traffic.simulator import SCENE, T0
from tests.traffic.test_objects_at_rest import frame, opened


class SeqCounter:
    """An analyzer that drops frames it has seen (seq at or below its last) and counts the others; it raises on
    the frames listed in `BAD`."""

    BAD: set[int] = set()

    def __init__(self, state: bytes | None):
        self.last_seq, self.taken = map(int, (state or b"-1,0").split(b","))

    def update(self, seq: int) -> bool:
        if seq <= self.last_seq:
            return False
        if seq in self.BAD:
            self.last_seq = seq  # partly updated, as a real analyzer can be when it raises
            raise ValueError(f"frame {seq} is unusable")
        self.last_seq, self.taken = seq, self.taken + 1
        return True

    def state_bytes(self) -> bytes:
        return f"{self.last_seq},{self.taken}".encode()


def take(live: LivePartition, seq: int, table: dict[bytes, bytes]) -> bool:
    """What the stage does with one frame for one analyzer."""
    return live.update(b"cam/crowd", SeqCounter, table.get(b"cam/crowd"), seq)


def test_a_frame_whose_outputs_failed_is_taken_again_not_dropped_as_seen():
    live, table = LivePartition(next_offset=0, stored_position=None), {b"cam/crowd": b"9,5"}
    assert take(live, 10, table)
    live.frame_done()
    assert take(live, 11, table)
    live.undo_frame()  # frame 11's event was never confirmed by the broker
    assert live.states[b"cam/crowd"] == b"10,6"
    assert take(live, 11, table), "read again, it is applied, not skipped as already seen"
    live.frame_done()
    assert live.states[b"cam/crowd"] == b"11,7"


def test_undoing_the_first_frame_after_a_checkpoint_goes_back_to_the_stored_state():
    live, table = LivePartition(next_offset=0, stored_position=None), {b"cam/crowd": b"9,5"}
    assert take(live, 10, table)
    live.undo_frame()
    assert b"cam/crowd" not in live.states and not live.analyzers
    assert take(live, 10, table) and live.states[b"cam/crowd"] == b"10,6"


def test_an_analyzer_that_fails_now_and_then_keeps_its_state(monkeypatch):
    frames = range(10, 11 + 4 * MAX_FAILURES_IN_A_ROW)
    monkeypatch.setattr(SeqCounter, "BAD", set(frames[1::2]))  # every other frame
    live, table = LivePartition(next_offset=0, stored_position=None), {b"cam/crowd": b"9,5"}
    for seq in frames:
        try:
            take(live, seq, table)
        except ValueError:
            pass
        live.frame_done()
    assert live.states[b"cam/crowd"] == f"{frames[-1]},{5 + len(frames[::2])}".encode()


def test_an_analyzer_failing_on_its_own_state_starts_afresh_and_the_camera_goes_on():
    config = site_config(SQUARE, 1.0)
    analyzer, frames = steady_crowd(60)
    for detections in frames[:5]:
        analyzer.update(detections)
    analyzer.state.zones[ZONE_ID].buckets[-1].people_sum = -1e6  # a count no window can report
    table, key = {b"cam/crowd": analyzer.state_bytes()}, b"cam/crowd"
    live, restore = LivePartition(next_offset=0, stored_position=None), partial(CrowdAnalyzer.restore,
                                                                                config.cameras[0], config)
    failed, windows = [], []
    for detections in frames[5:]:
        try:
            windows += live.update(key, restore, table[key], detections).zone_metrics
        except (ValidationError, AnalyzerReset) as exc:
            failed.append(detections.seq)
            assert isinstance(exc, AnalyzerReset) == (len(failed) == MAX_FAILURES_IN_A_ROW)
        live.frame_done()

    first_close = next(d.seq for d in frames if d.captured_at >= analyzer.state.open_bucket + 10)
    assert failed == list(range(first_close, first_close + MAX_FAILURES_IN_A_ROW))
    assert windows and all(window.window_start > frames[failed[-1]].captured_at - 10 for window in windows)
    assert all(window.people_mean >= 0 for window in windows)


def failing_until_reset(live: LivePartition, key: bytes, restore, stored: bytes, frames: list
                        ) -> tuple[AnalyzerReset, list]:
    """The reset the frames lead to, and the frames after the one that caused it."""
    for taken, detections in enumerate(frames, 1):
        try:
            live.update(key, restore, stored, detections)
        except AnalyzerReset as reset:
            live.frame_done()
            return reset, frames[taken:]
        except ValidationError:
            pass
        live.frame_done()
    raise AssertionError("the analyzer was never reset")


def test_a_reset_crowd_analyzer_resolves_its_open_risk_episode_and_a_new_one_opens():
    config = site_config(SQUARE, 1.0)
    simulator = CrowdSimulator(SQUARE, 1.0, seed=2, target_density=lambda _: 4.0)
    run, analyzer = run_scenario(simulator, config, 40)
    episode = {e.event_id for e in run.events if e.type == "risk_level_changed"}
    assert len(episode) == 1 and analyzer.state.zones[ZONE_ID].risk.level.value != "normal"
    bucket = analyzer.state.zones[ZONE_ID].buckets[-1]
    bucket.people_sum = bucket.reliable_people_sum = -1e6  # a count no window can report
    key, restore = b"cam/crowd", partial(CrowdAnalyzer.restore, config.cameras[0], config)
    live, stored = LivePartition(next_offset=0, stored_position=None), analyzer.state_bytes()
    frames = []
    for _ in range(60):
        simulator.step()
        frames.append(simulator.detections("cam", with_density_map=simulator.seq % 8 == 0))

    reset, after = failing_until_reset(live, key, restore, stored, frames)
    assert [(e.event_id, e.state) for e in reset.resolved] == [(*episode, EventState.RESOLVED)]
    assert "reset" in reset.resolved[0].reason and reset.resolved[0].details["closed_by"] == CLOSED_BY_RESET
    reopened = [e for detections in after for e in live.update(key, restore, stored, detections).events]
    assert reopened[0].state == EventState.OPENED and reopened[0].event_id not in episode


def test_a_reset_traffic_analyzer_resolves_its_open_incidents_once():
    analyzer = TrafficAnalyzer.restore(CameraConfig(id="sim", source="sim.mp4", scene=SCENE), Config(), None)
    events = [e for seq in range(150) for e in analyzer.update(
        frame(seq, [], [((800.0, 320.0, 880.0, 360.0), T0)])).events]  # debris in a lane
    assert [e.type for e in opened(events)] == ["obstacle_in_lane"]

    resolved = analyzer.resolve_open(T0 + 31, "reset")
    assert [(e.event_id, e.state, e.camera_id) for e in resolved] == [(opened(events)[0].event_id,
                                                                       EventState.RESOLVED, "sim")]
    assert resolved[0].ended_at < resolved[0].updated_at == T0 + 31
    assert analyzer.resolve_open(T0 + 32, "reset") == []


def test_a_reset_whose_outputs_were_not_confirmed_comes_again_with_the_frame():
    config = site_config(SQUARE, 1.0)
    simulator = CrowdSimulator(SQUARE, 1.0, seed=2, target_density=lambda _: 4.0)
    analyzer = run_scenario(simulator, config, 40)[1]
    bucket = analyzer.state.zones[ZONE_ID].buckets[-1]
    bucket.people_sum = bucket.reliable_people_sum = -1e6
    key, restore = b"cam/crowd", partial(CrowdAnalyzer.restore, config.cameras[0], config)
    live, stored = LivePartition(next_offset=0, stored_position=None), analyzer.state_bytes()
    frames = []
    for _ in range(30):
        simulator.step()
        frames.append(simulator.detections("cam"))
    resets = []
    for detections in frames:
        try:
            live.update(key, restore, stored, detections)
        except AnalyzerReset as reset:
            resets.append((detections.seq, [e.event_id for e in reset.resolved]))
            if len(resets) == 1:
                live.undo_frame()  # its dead letter and resolved events were not confirmed: the frame comes again
                with pytest.raises(AnalyzerReset) as again:
                    live.update(key, restore, stored, detections)
                resets.append((detections.seq, [e.event_id for e in again.value.resolved]))
        except ValidationError:
            pass
        live.frame_done()
    assert len(resets) == 2 and resets[0] == resets[1] and resets[0][1]


def test_what_an_analyzer_has_open_is_stored_as_the_events_resolving_it_and_read_back_whole():
    config = site_config(SQUARE, 1.0)
    simulator = CrowdSimulator(SQUARE, 1.0, seed=2, target_density=lambda _: 4.0)
    analyzer = run_scenario(simulator, config, 40)[1]  # a packed zone: its risk episode is open
    open_incidents = closed_by_reset(CrowdAnalyzer.restore(config.cameras[0], config, analyzer.state_bytes())
                                     .resolve_open(T0, "lost"))
    assert open_incidents and all(event.state is EventState.RESOLVED
                                  and event.details["closed_by"] == CLOSED_BY_RESET for event in open_incidents)
    record = OpenRecord(open_incidents, until=120, topic_id="topic-1")
    assert OpenRecord.unpack(record.pack()) == record
    assert OpenRecord.unpack(b"") == OpenRecord([])  # the table's default: nothing stored
    assert OpenRecord.unpack(record.pack()[:40]) == OpenRecord([])  # a damaged record: those incidents stay open
    assert OpenRecord.unpack(msgpack.packb(1)) == OpenRecord.unpack(msgpack.packb({"events": None})) == OpenRecord([])
    # As written before the record kept its offset: a bare list, sent as soon as the fresh analyzer takes a frame.
    older = OpenRecord.unpack(msgpack.packb([encode(event) for event in open_incidents]))
    assert older == OpenRecord(open_incidents) and older.due(0, "topic-1")


def test_what_an_unreadable_state_had_open_waits_for_the_frames_it_covers_and_leaves_out_what_is_found_again():
    first, second = (Event(event_id=f"cam:z:crowd_risk:{i}", type="risk_level_changed", state=EventState.RESOLVED,
                           severity=Severity.INFO, camera_id="cam", started_at=T0, updated_at=T0 + 10, confidence=0.9,
                           reason="lost") for i in (1, 2))
    record = OpenRecord([first, second], until=120, topic_id="topic-1")
    assert not record.due(118, "topic-1") and record.due(119, "topic-1")  # offset 119 is the last one it covers
    assert record.due(0, "topic-2")  # the topic was recreated since: its offsets cover none of it
    record.found_again.add(second.event_id)  # the fresh analyzer opened the same incident itself
    assert record.unresolved(set()) == [first]
    assert record.unresolved({first.event_id}) == []  # open in the fresh analyzer now: its own
    assert OpenRecord.unpack(record.pack()).found_again == {second.event_id}  # a worker taking over knows it too
    # What a second unreadable state had open joins what the first still waits to send.
    later = OpenRecord([second, first.model_copy(update={"event_id": "cam:z:crowd_risk:3"})], until=150)
    merged = record.merged(later)
    assert [event.event_id for event in merged.events] == [first.event_id, second.event_id, "cam:z:crowd_risk:3"]
    assert (merged.until, merged.topic_id, merged.found_again) == (150, "topic-1", {second.event_id})
    assert record.merged(record) == record


def test_a_checkpoint_records_what_an_analyzer_has_open_once_after_a_takeover_then_while_open():
    """(A frame that sent events records it as soon as they are confirmed; the broker test shows that.)"""
    live, key = LivePartition(next_offset=0, stored_position=None), b"cam/crowd"
    assert live.open_record_due(key)  # an incident open since before this worker (or version) started has no record
    live.open_recorded[key] = False
    assert not live.open_record_due(key)  # nothing open and no event since: the record still holds
    live.open_recorded[key] = True
    assert live.open_record_due(key)  # open: its times follow the checkpoints
    live.sent_events.add(key)
    live.frame_done()
    assert not live.sent_events  # the events of one frame only

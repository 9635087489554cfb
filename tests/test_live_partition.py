"""The analytics stage's per-partition live analyzers: a frame whose outputs the broker did not confirm does not
count as applied, so the analyzers that took it go back to their states before it and take it again; an analyzer
that raised goes on from its state before the frame, unless that state is what keeps failing."""
from __future__ import annotations

from functools import partial

from pydantic import ValidationError

from processors.analytics.crowd.analyzer import CrowdAnalyzer
from processors.analytics.stage import MAX_FAILURES_IN_A_ROW, LivePartition
from tests.crowd.scenarios import ZONE_ID, site_config, steady_crowd
from tests.crowd.simulator import SQUARE


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
        except ValidationError:
            failed.append(detections.seq)
        live.frame_done()

    first_close = next(d.seq for d in frames if d.captured_at >= analyzer.state.open_bucket + 10)
    assert failed == list(range(first_close, first_close + MAX_FAILURES_IN_A_ROW))
    assert windows and all(window.window_start > frames[failed[-1]].captured_at - 10 for window in windows)
    assert all(window.people_mean >= 0 for window in windows)

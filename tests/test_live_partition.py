"""The analytics stage's per-partition live analyzers: a frame whose outputs the broker did not confirm does not
count as applied, so the analyzers that took it go back to their states before it and take it again."""
from __future__ import annotations

from processors.analytics.stage import LivePartition


class SeqCounter:
    """An analyzer that drops frames it has seen (seq at or below its last) and counts the others."""

    def __init__(self, state: bytes | None):
        self.last_seq, self.taken = map(int, (state or b"-1,0").split(b","))

    def update(self, seq: int) -> bool:
        if seq <= self.last_seq:
            return False
        self.last_seq, self.taken = seq, self.taken + 1
        return True

    def state_bytes(self) -> bytes:
        return f"{self.last_seq},{self.taken}".encode()


def take(live: LivePartition, seq: int, table: dict[bytes, bytes]) -> bool:
    """What the stage does with one frame for one analyzer."""
    live.taking(b"cam/crowd")
    if b"cam/crowd" not in live.analyzers:
        live.analyzers[b"cam/crowd"] = SeqCounter(live.newest_state(b"cam/crowd", table.get(b"cam/crowd")))
    analyzer = live.analyzers[b"cam/crowd"]
    taken = analyzer.update(seq)
    live.states[b"cam/crowd"] = analyzer.state_bytes()
    return taken


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

"""The analytics stage's judgement of each input frame against the position its state expects."""
from __future__ import annotations

from processors.analytics.input_positions import Position, Verdict, judge

TOPIC = "01a236cf-5729-7d00-952e-1f9009cfc7c5"
RECREATED = "01a236d0-3a62-7993-9756-3776cec3128e"


def at(offset: int, topic_id: str | None = TOPIC) -> Position:
    return Position(offset, topic_id)


def test_partition_without_state_applies_whatever_comes_first():
    assert judge(None, 57, TOPIC) is Verdict.APPLY


def test_expected_frame_is_applied():
    assert judge(at(120), 120, TOPIC) is Verdict.APPLY


def test_redelivered_frame_is_not_applied_again():
    assert judge(at(121), 118, TOPIC) is Verdict.ALREADY_APPLIED
    assert judge(at(121), 120, TOPIC) is Verdict.ALREADY_APPLIED


def test_frame_after_a_gap_waits_for_the_gap_to_be_filled():
    assert judge(at(120), 121, TOPIC) is Verdict.FILL_GAP
    assert judge(at(120), 125, TOPIC) is Verdict.FILL_GAP


def test_offsets_of_a_recreated_topic_are_new_frames_not_redeliveries():
    """A broker restart lost the topic: 448 new frames at offsets 0..447 must not be taken for old ones."""
    assert all(judge(at(449), offset, RECREATED) is Verdict.TOPIC_RECREATED for offset in range(448))
    assert judge(at(449), 460, RECREATED) is Verdict.TOPIC_RECREATED  # no gap to read from a topic that is gone


def test_without_topic_ids_offsets_decide_alone():
    assert judge(at(121, None), 120, TOPIC) is Verdict.ALREADY_APPLIED  # stored before ids were recorded
    assert judge(at(121), 120, None) is Verdict.ALREADY_APPLIED  # a broker without topic ids


def test_positions_round_trip_and_read_the_old_plain_offsets():
    assert Position.decode(at(449).encode()) == at(449)
    assert Position.decode(Position(3, None).encode()) == Position(3, None)
    assert Position.decode(b"449") == Position(449, None)
    assert Position.decode(b"") is None and Position.decode(None) is None

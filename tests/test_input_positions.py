"""The analytics stage's judgement of each input frame against the offset its state expects."""
from __future__ import annotations

from processors.analytics.input_positions import Verdict, judge


def test_partition_without_state_applies_whatever_comes_first():
    assert judge(None, 57) is Verdict.APPLY


def test_expected_frame_is_applied():
    assert judge(120, 120) is Verdict.APPLY


def test_redelivered_frame_is_not_applied_again():
    assert judge(121, 118) is Verdict.ALREADY_APPLIED
    assert judge(121, 120) is Verdict.ALREADY_APPLIED


def test_frame_after_a_gap_waits_for_the_gap_to_be_filled():
    assert judge(120, 121) is Verdict.FILL_GAP
    assert judge(120, 125) is Verdict.FILL_GAP

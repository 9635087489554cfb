import pytest

from sinks.alerts.sms_text import GSM7, UCS2, count_segments, encoding_of, fit_sms


@pytest.mark.parametrize("text, encoding, segments", [
    ("a" * 160, GSM7, 1),
    ("a" * 161, GSM7, 2),          # split parts hold 153 each
    ("a" * 306, GSM7, 2),
    ("a" * 307, GSM7, 3),
    ("€" * 80, GSM7, 1),           # extension characters cost two septets
    ("€" * 81, GSM7, 2),
    ("가" * 70, UCS2, 1),          # Korean forces UCS-2: 70 per single segment
    ("가" * 71, UCS2, 2),          # 67 per part
    ("가" * 134, UCS2, 2),
    ("가" * 135, UCS2, 3),
    ("a" * 69 + "가", UCS2, 1),    # one non-GSM character switches the whole text
    ("😀" * 35, UCS2, 1),          # outside the BMP: a surrogate pair, two units
    ("😀" * 36, UCS2, 2),
])
def test_segments_follow_gsm7_and_ucs2_lengths(text, encoding, segments):
    assert encoding_of(text) == encoding
    assert count_segments(text) == segments


def test_text_that_fits_is_kept_whole():
    sms = fit_sms("[CRITICAL] 밀집도 위험", 1)
    assert (sms.body, sms.truncated, sms.segments) == ("[CRITICAL] 밀집도 위험", False, 1)


@pytest.mark.parametrize("max_segments", [1, 2, 3])
def test_long_korean_text_is_cut_to_the_segment_budget_with_an_ellipsis(max_segments):
    text = "광장 북측 구역 군중 밀도가 위험 수준을 넘었습니다. " * 20
    sms = fit_sms(text, max_segments)
    assert sms.truncated and sms.encoding == UCS2
    assert sms.segments == max_segments
    assert sms.body.endswith("…")
    assert text.startswith(sms.body[:-1])
    # The longest prefix that fits: the next longer candidate would need another segment.
    kept = len(sms.body) - 1
    next_length = next(n for n in range(kept + 1, len(text)) if len(text[:n].rstrip()) > kept)
    assert count_segments(text[:next_length].rstrip() + "…") > max_segments


def test_long_gsm_text_uses_an_ascii_ellipsis_and_fills_the_segment():
    sms = fit_sms("zone walkway density 5.2 per m2 " * 10, 1)
    assert sms.encoding == GSM7 and sms.body.endswith("...") and len(sms.body) <= 160
    assert len(sms.body) >= 157 - len("zone walkway density 5.2 per m2 ")


def test_zero_segments_is_refused():
    with pytest.raises(ValueError):
        fit_sms("x", 0)


def test_a_suffix_is_kept_whole_when_the_text_is_cut():
    text = fit_sms("위험 " * 200, 2, suffix=" #0a1b2c")
    assert text.truncated and text.body.endswith("… #0a1b2c") and text.segments <= 2
    assert fit_sms("short", 1, suffix=" #0a1b2c").body == "short #0a1b2c"

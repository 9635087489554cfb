"""SMS length rules: GSM-7 texts get 160 characters in one segment (153 per part when split), anything else
(Korean included) is sent as UCS-2 with 70 UTF-16 units (67 per part). Texts over the budget are cut with an ellipsis.
"""
from __future__ import annotations

from dataclasses import dataclass

# GSM 03.38 basic character set (the escape character excluded) and the extension table, whose characters cost two.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")
GSM7 = "GSM-7"
UCS2 = "UCS-2"
SINGLE_SEGMENT = {GSM7: 160, UCS2: 70}
MULTIPART_SEGMENT = {GSM7: 153, UCS2: 67}  # the rest of 140 bytes holds the concatenation header
ELLIPSIS = {GSM7: "...", UCS2: "…"}


@dataclass(frozen=True)
class SmsText:
    body: str
    encoding: str
    segments: int
    truncated: bool


def encoding_of(text: str) -> str:
    return GSM7 if all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in text) else UCS2


def char_cost(char: str, encoding: str) -> int:
    """Septets (GSM-7) or UTF-16 code units (UCS-2) one character takes."""
    if encoding == GSM7:
        return 2 if char in GSM7_EXTENSION else 1
    return 2 if ord(char) > 0xFFFF else 1


def count_segments(text: str) -> int:
    encoding = encoding_of(text)
    costs = [char_cost(char, encoding) for char in text]
    if sum(costs) <= SINGLE_SEGMENT[encoding]:
        return 1
    # Fill parts greedily: an escape pair or a surrogate pair is never split between two parts.
    segments, used, capacity = 1, 0, MULTIPART_SEGMENT[encoding]
    for cost in costs:
        if used + cost > capacity:
            segments, used = segments + 1, 0
        used += cost
    return segments


def fit_sms(text: str, max_segments: int, suffix: str = "") -> SmsText:
    """The text as sent: whole when it fits in max_segments, else its longest prefix that fits plus an ellipsis;
    `suffix` (a reference) always follows whole."""
    if max_segments < 1:
        raise ValueError("max_segments must be at least 1")
    whole = text + suffix
    if count_segments(whole) <= max_segments:
        return SmsText(whole, encoding_of(whole), count_segments(whole), truncated=False)

    def candidate(length: int) -> str:
        prefix = text[:length].rstrip()
        return prefix + ELLIPSIS[encoding_of(prefix + suffix)] + suffix

    # Segments grow monotonically with the prefix length, so the longest fitting prefix is found by bisection.
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if count_segments(candidate(middle)) <= max_segments:
            low = middle
        else:
            high = middle - 1
    body = candidate(low)
    return SmsText(body, encoding_of(body), count_segments(body), truncated=True)

from __future__ import annotations

from enum import Enum
from typing import Annotated

from pydantic import Field, field_validator

from schemas.base import ID_MAX_CHARS, BoundedId, Message, Seq

EVENT_ID_MAX_CHARS = 200  # the incident store's incidents.id is this wide
# Far above what an analyzer writes, and low enough that an event, and the alert made from it, stays a small
# message: one that could not be published would hold up every event behind it on its partition.
REASON_MAX_CHARS = 4_000
DETAILS_MAX_ITEMS = 64
DETAIL_TEXT_MAX_CHARS = 1_000
TRACK_IDS_MAX = 10_000
DetailValue = float | int | Annotated[str, Field(max_length=DETAIL_TEXT_MAX_CHARS)]
# details["closed_by"] of a resolved event whose incident did not end but whose analyzer was reset, its state lost
CLOSED_BY_RESET = "analyzer_reset"


class EventState(str, Enum):
    OPENED = "opened"
    UPDATED = "updated"
    RESOLVED = "resolved"


class Severity(str, Enum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}  # higher is more severe


class FrameRef(Message):
    """Points at the frame that shows the evidence (camera + sequence number on the frames topic)."""

    schema_name = "frame_ref"

    camera_id: str
    seq: Seq


class Event(Message):
    """One incident's life (opened, updated, resolved) on the events topic, keyed by camera_id.

    event_id is derived from the incident, not from the message, so a redelivered input produces the same id
    and consumers can drop the duplicate.
    """

    schema_name = "event"

    # Printable ASCII: it also travels as an HTTP header (a webhook's Idempotency-Key), which takes nothing else.
    event_id: str = Field(min_length=1, max_length=EVENT_ID_MAX_CHARS, pattern=r"^[!-~]+$")
    type: BoundedId = Field(description="e.g. risk_level_changed, stopped_vehicle, wrong_way")
    state: EventState
    severity: Severity
    camera_id: BoundedId
    zone_id: BoundedId | None = None
    track_ids: list[int] = Field(default_factory=list, max_length=TRACK_IDS_MAX)
    started_at: float
    updated_at: float
    ended_at: float | None = None
    confidence: float = Field(ge=0, le=1)
    evidence: FrameRef | None = None
    reason: str = Field(max_length=REASON_MAX_CHARS, description="why the event was raised, in words")
    details: dict[Annotated[str, Field(max_length=ID_MAX_CHARS)], DetailValue] = Field(
        default_factory=dict, max_length=DETAILS_MAX_ITEMS)

    @field_validator("event_id")
    @classmethod
    def verify_not_a_dot_segment(cls, event_id: str) -> str:
        # The console's URLs name an incident in one path segment, and browsers resolve "." and ".." away there.
        if event_id in (".", ".."):
            raise ValueError(f"{event_id!r} is not an event id")
        return event_id

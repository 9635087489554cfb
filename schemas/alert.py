from __future__ import annotations

from pydantic import Field

from schemas.base import Message
from schemas.event import Severity


class Alert(Message):
    """A notification decided from an event, for the dispatcher's channels; keyed by camera_id."""

    schema_name = "alert"

    alert_id: str = Field(min_length=1, description="idempotency key: one alert per incident and level")
    event_id: str = Field(min_length=1)
    severity: Severity
    camera_id: str | None = Field(default=None, description="None for alerts about the system itself (SRE)")
    zone_id: str | None = None
    title: str
    message: str
    created_at: float

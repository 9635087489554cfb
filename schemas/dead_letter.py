from __future__ import annotations

from pydantic import Field

from schemas.base import Message


class DeadLetter(Message):
    """A message a stage could not process, kept whole with the reason so nothing is lost."""

    schema_name = "dead_letter"

    stage: str = Field(description="the stage that rejected it: inference, analytics, ...")
    source_topic: str
    partition: int
    offset: int
    key: bytes | None
    reason: str
    original: bytes | None = Field(description="the original message value, byte for byte")
    at: float

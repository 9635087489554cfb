from __future__ import annotations

from pydantic import Field

from schemas.base import Message


class DeadLetter(Message):
    """A message a stage could not process, with the reason: kept whole when small, else its first bytes with the
    size and SHA-256 of the whole, so that the letter itself always fits the broker's message limit."""

    schema_name = "dead_letter"

    stage: str = Field(description="the stage that rejected it: inference, analytics, ...")
    source_topic: str
    partition: int
    offset: int
    key: bytes | None
    reason: str
    original: bytes | None = Field(description="the original message value, byte for byte (its first bytes when "
                                   "original_truncated)")
    at: float
    original_size: int | None = Field(default=None, ge=0, description="bytes of the whole original value")
    original_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$",
                                        description="SHA-256 of the whole original value, hex")
    original_truncated: bool = Field(default=False, description="original holds only the value's first bytes")

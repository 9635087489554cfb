from __future__ import annotations

from pydantic import Field, FiniteFloat, model_validator

from schemas.base import Message


class Frame(Message):
    """One sampled camera frame, keyed by camera_id on the frames topic."""

    schema_name = "frame"

    camera_id: str = Field(min_length=1)
    seq: int = Field(ge=0, description="per-camera sequence number, never reused (also across producer restarts)")
    captured_at: FiniteFloat = Field(gt=0, description="capture time, unix seconds")
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    jpeg: bytes | None = Field(default=None, description="JPEG-encoded image")
    frame_ref: str | None = Field(
        default=None, description="claim-check reference into the frame store, used instead of jpeg for large frames"
    )

    @model_validator(mode="after")
    def _one_payload(self) -> "Frame":
        if (self.jpeg is None) == (self.frame_ref is None):
            raise ValueError("exactly one of jpeg and frame_ref must be set")
        return self

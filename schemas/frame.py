from __future__ import annotations

from enum import Enum

from pydantic import Field, FiniteFloat, model_validator

from schemas.base import BoundedId, Message, Seq, verify_seq

FRAME_REF_MAX_CHARS = 300  # a store path: the camera id and a sequence number
MAX_SIDE_PX = 65_535  # the most a JPEG can hold; boxes scaled to a picture larger than any camera's are nonsense


class PictureFault(str, Enum):
    """Why a camera's picture shows nothing of the present, by the producer's check of its frames."""

    FROZEN = "frozen"  # identical frames for producer.frozen_after_s: an old picture sent again and again
    BLANK = "blank"  # black or uniform frames for producer.blank_after_s


class Frame(Message):
    """One sampled camera frame, keyed by camera_id on the frames topic."""

    schema_name = "frame"
    added_fields = ("picture_fault",)

    camera_id: BoundedId
    seq: Seq = Field(description="per-camera sequence number, never reused (also across producer restarts)")
    captured_at: FiniteFloat = Field(gt=0, description="capture time, unix seconds")
    width: int = Field(gt=0, le=MAX_SIDE_PX, description="of the JPEG")
    height: int = Field(gt=0, le=MAX_SIDE_PX, description="of the JPEG")
    # The site's geometry is drawn on the camera's own picture; capture may scale it down (max_width), and the
    # inference stage sends boxes in the camera's pixels so that geometry holds whatever that setting.
    source_width: int | None = Field(default=None, gt=0, le=MAX_SIDE_PX,
                                     description="the camera's own picture width before capture scaled it down; "
                                     "None: not scaled")
    source_height: int | None = Field(default=None, gt=0, le=MAX_SIDE_PX,
                                      description="its height, with source_width")
    picture_fault: PictureFault | None = Field(
        default=None, description="what the producer's check found wrong with the picture as of this frame; None: "
        "a normal picture")
    jpeg: bytes | None = Field(default=None, description="JPEG-encoded image")
    frame_ref: str | None = Field(
        default=None, max_length=FRAME_REF_MAX_CHARS,
        description="claim-check reference into the frame store, used instead of jpeg for large frames")

    @property
    def source_size(self) -> tuple[int, int]:
        """(width, height) of the camera's own picture, in whose pixels the site's geometry is drawn."""
        if self.source_width is None or self.source_height is None:
            return self.width, self.height
        return self.source_width, self.source_height

    @model_validator(mode="after")
    def _one_payload(self) -> "Frame":
        verify_seq(self.seq, self.captured_at)
        if (self.jpeg is None) == (self.frame_ref is None):
            raise ValueError("exactly one of jpeg and frame_ref must be set")
        if (self.source_width is None) != (self.source_height is None):
            raise ValueError("source_width and source_height go together")
        if self.source_width is not None and (self.source_width < self.width or self.source_height < self.height):
            raise ValueError("source_width and source_height are the picture before scaling down: not below the "
                             "JPEG's")
        return self

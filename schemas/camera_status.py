from __future__ import annotations

from enum import Enum

from pydantic import Field

from schemas.base import BoundedId, Message


class CameraState(str, Enum):
    UP = "up"
    DEGRADED = "degraded"  # delivers frames, far fewer than its rate: too few to track or count by
    RECONNECTING = "reconnecting"
    STALLED = "stalled"
    DOWN = "down"


class CameraStatus(Message):
    """Health of one camera as the producer sees it, keyed by camera_id."""

    schema_name = "camera_status"

    camera_id: BoundedId
    state: CameraState
    reason: str = ""
    fps: float = Field(ge=0, description="frames published per second over the last interval")
    reconnects: int = Field(ge=0)
    dropped_frames: int = Field(ge=0)
    last_frame_age_s: float | None = Field(default=None, ge=0)
    at: float

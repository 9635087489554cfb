from __future__ import annotations

from pydantic import Field, model_validator

from schemas.base import BoundedId, Message


class LineCounts(Message):
    """Crossings of one counting line in one closed time window, per class and direction; keyed by camera_id.

    Column-wise like Detections: entry i says `count[i]` objects of `class_name[i]` crossed towards `direction[i]`.
    (camera_id, line_id, window_start) identifies the window, so a consumer can drop a redelivered copy.
    """

    schema_name = "line_counts"

    camera_id: BoundedId
    line_id: BoundedId
    lane_id: str | None = Field(default=None, description="lane whose totals these crossings add to")
    window_start: float = Field(description="unix seconds, inclusive")
    window_end: float = Field(description="unix seconds, exclusive")
    class_name: list[str] = Field(default_factory=list)
    direction: list[str] = Field(default_factory=list, description="direction name from the line's configuration")
    count: list[int] = Field(default_factory=list)

    @model_validator(mode="after")
    def _columns_align(self) -> "LineCounts":
        if not len(self.class_name) == len(self.direction) == len(self.count):
            raise ValueError("class_name, direction and count must have the same length")
        if any(value < 0 for value in self.count):
            raise ValueError("counts must not be negative")
        if self.window_end <= self.window_start:
            raise ValueError("window_end must be after window_start")
        return self

    def total(self) -> int:
        return sum(self.count)

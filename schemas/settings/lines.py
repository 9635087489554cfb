"""Counting lines: one segment type for crowd zone entrances and traffic scene lines alike."""
from __future__ import annotations

from enum import Enum

from pydantic import Field, model_validator

from schemas.settings.base import Frozen, Identifier, Point


class Anchor(str, Enum):
    """The point of a box that stands for the object's position."""

    BOTTOM_CENTER = "bottom_center"  # where a vehicle or person touches the ground (DeepStream's choice)
    CENTER = "center"
    TOP_CENTER = "top_center"  # for lines near the top frame edge, where the box bottom never reaches the line


class InwardSide(str, Enum):
    """Which side of a counting line is inside the zone, looking from its start towards its end (image axes)."""

    AUTO = "auto"  # the side the zone lies on just beside the entrance's midpoint (concave zones too)
    LEFT = "left"
    RIGHT = "right"


class CountingLineConfig(Frozen):
    """A counting segment (not an infinite line): only paths that cross between its end points count.

    As a zone entrance, `inward` says which side is inside the zone (crossings count as inflow or outflow); in a
    traffic scene, crossings are counted per class under the names `forward` and `backward`.
    """

    id: Identifier
    start: Point = Field(description="one end of the segment, image pixels")
    end: Point = Field(description="the other end, image pixels")
    inward: InwardSide = Field(default=InwardSide.AUTO, description="zone entrances: side that is inside the zone")
    forward: Identifier = Field(
        default="in", description="traffic lines: name of crossings along the normal (-dy, dx) of start->end: for a "
        "segment drawn left to right, crossings from top to bottom of the image (a zone entrance's inflow is told by "
        "inward)")
    backward: Identifier = Field(default="out", description="traffic lines: name of crossings the other way")
    anchor: Anchor = Field(default=Anchor.BOTTOM_CENTER, description="traffic lines: the point of a box that crosses")
    lane: str | None = Field(default=None, description="traffic lines: lane whose totals this line's counts add to")
    classes: list[str] | None = Field(default=None, description="traffic lines: class names counted; null: all")

    @model_validator(mode="after")
    def verify_endpoints_distinct(self) -> CountingLineConfig:
        if self.start == self.end:
            raise ValueError("start and end must differ")
        return self

    @model_validator(mode="after")
    def verify_direction_names_differ(self) -> CountingLineConfig:
        if self.forward == self.backward:
            raise ValueError("forward and backward must have different names")
        return self

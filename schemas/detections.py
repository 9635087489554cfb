from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, PositiveInt, model_validator

from schemas.base import BoundedId, Message, Seq, verify_seq
from schemas.frame import PictureFault

PERSON_CLASS_ID = 0  # COCO
UNTRACKED = -1  # track id of a detection the tracker has not (yet) confirmed
# No picture holds this many people: a map summing to more is broken, and its count would overflow the analytics'
# windows (their sums and maxima are float64 and rounded to integers).
MAX_DENSITY_MAP_PEOPLE = 1_000_000
# Objects per frame: above what tiled detection of a packed crowd gives (where the density map carries the count), and
# a bound on the analyzers' per-frame work, which grows faster than the number of objects.
MAX_OBJECTS = 2000
Box = tuple[FiniteFloat, FiniteFloat, FiniteFloat, FiniteFloat]


def verify_box_corners(boxes: np.ndarray) -> None:
    """x1 <= x2 and y1 <= y2: a box given corner-swapped would stand on its top edge in every zone test."""
    if ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any():
        raise ValueError("a box's corners are not (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2")


def foot_points(boxes: np.ndarray) -> np.ndarray:
    """Bottom-centre of each (N, 4) box, (N, 2): where a person or vehicle touches the ground."""
    return np.column_stack(((boxes[:, 0] + boxes[:, 2]) / 2, boxes[:, 3]))


class StaticBlob(BaseModel):
    """Foreground that appeared and stayed unchanged (fallen cargo, debris): found by a background model, not by
    the detector, so objects of no known class are still reported."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    xyxy: Box = Field(description="pixels of the camera's own picture")
    static_since: FiniteFloat = Field(description="capture time since when it has been there unchanged")
    fill_ratio: float = Field(ge=0, le=1, description="share of the box's cells that are static foreground")

    @model_validator(mode="after")
    def _corners_in_order(self) -> "StaticBlob":
        verify_box_corners(np.array([self.xyxy]))
        return self


class Detections(Message):
    """All objects found in one frame, column-wise (one list entry per object), keyed by camera_id."""

    schema_name = "detections"
    added_fields = ("picture_fault",)
    # JSON (a replay's recording) carries the density map's bytes as base64; the wire format (msgpack) as raw bytes.
    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    camera_id: BoundedId
    seq: Seq = Field(description="sequence number of the frame these detections came from")
    captured_at: FiniteFloat = Field(gt=0, description="capture time of the frame, unix seconds")
    image_width: int = Field(gt=0, description="of the camera's own picture (before capture scaled it down), in "
                             "whose pixels the boxes and the site's geometry are")
    image_height: int = Field(gt=0)
    model: str = Field(description="model that produced the detections")
    model_version: str | None = Field(
        default=None, description="model registry version (e.g. v3) that produced them; None outside the registry")
    inference_ms: FiniteFloat = Field(ge=0, description="model time spent on this frame, milliseconds")
    # Finite numbers only: one NaN box would poison every analyzer state it reaches.
    xyxy: list[Box] = Field(default_factory=list, max_length=MAX_OBJECTS,
                            description="boxes in pixels of the camera's own picture")
    confidence: list[Annotated[FiniteFloat, Field(ge=0, le=1)]] = Field(default_factory=list)
    class_id: list[Annotated[int, Field(ge=0, lt=2**31)]] = Field(default_factory=list, description="COCO class ids")
    class_name: list[str] = Field(default_factory=list)
    track_id: list[Annotated[int, Field(ge=UNTRACKED, lt=2**63)]] | None = Field(
        default=None, description="per-camera track ids, when tracking is on; -1 for a detection not yet tracked")
    static_blobs: list[StaticBlob] | None = Field(
        default=None, max_length=MAX_OBJECTS, description="static unknown objects, for cameras with a traffic scene"
    )
    view_moved: bool | None = Field(
        default=None, description="the camera's view moved at this frame (pan, tilt, strong shake, cut; not a "
        "zoom), by the background model of cameras with a traffic scene; None where none runs")
    picture_fault: PictureFault | None = Field(
        default=None, description="the frame's picture_fault (frozen or blank): what its picture shows is not the "
        "present; None: a normal picture")
    density_map: bytes | None = Field(
        default=None, description="crowd density map (float32, row-major, people per cell) from the density counter"
    )
    density_map_shape: tuple[PositiveInt, PositiveInt] | None = Field(
        default=None, description="(rows, cols) of density_map")

    @model_validator(mode="after")
    def _columns_align(self) -> "Detections":
        verify_seq(self.seq, self.captured_at)
        n = len(self.xyxy)
        columns = {"confidence": self.confidence, "class_id": self.class_id, "class_name": self.class_name}
        if self.track_id is not None:
            columns["track_id"] = self.track_id
        for name, column in columns.items():
            if len(column) != n:
                raise ValueError(f"{name} has {len(column)} entries, xyxy has {n}")
        verify_box_corners(self.boxes())
        if (self.density_map is None) != (self.density_map_shape is None):
            raise ValueError("density_map and density_map_shape go together")
        if self.density_map is not None:
            rows, cols = self.density_map_shape
            if len(self.density_map) != rows * cols * 4:
                raise ValueError(f"density_map has {len(self.density_map)} bytes, shape needs {rows * cols * 4}")
            verify_density_values(self.density())
        return self

    def __len__(self) -> int:
        return len(self.xyxy)

    def boxes(self) -> np.ndarray:
        """Boxes as an (N, 4) float array."""
        return np.asarray(self.xyxy, dtype=float).reshape(-1, 4)

    def foot_points(self) -> np.ndarray:
        """Bottom-centre of each box, (N, 2): where a person or vehicle touches the ground."""
        return foot_points(self.boxes())

    def density(self) -> np.ndarray | None:
        """The density map as a (rows, cols) float32 array covering the whole image, or None."""
        if self.density_map is None:
            return None
        return np.frombuffer(self.density_map, dtype=np.float32).reshape(self.density_map_shape)

    def class_mask(self, class_id: int) -> np.ndarray:
        return np.asarray(self.class_id, dtype=int) == class_id


def verify_density_values(density: np.ndarray) -> None:
    """People per cell are finite, never negative, and add up to a count a picture can hold."""
    if not np.isfinite(density).all():
        raise ValueError("density_map has NaN or infinite cells")
    if (density < 0).any():
        raise ValueError("density_map has negative cells")
    total = float(density.sum(dtype=np.float64))
    if total > MAX_DENSITY_MAP_PEOPLE:
        raise ValueError(f"density_map counts {total:.3g} people, more than any picture holds")

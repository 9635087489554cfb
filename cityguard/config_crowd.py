"""Crowd configuration: zones, their ground area or calibration, windows and risk thresholds."""
from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator, model_validator

from cityguard.config_base import ID_PATTERN, Frozen, Point
from processors.geometry import polygon_area, polygon_is_simple


class ZoneConfig(Frozen):
    id: Annotated[str, Field(pattern=ID_PATTERN)]
    polygon: list[Point] = Field(min_length=3, description="zone outline in image pixels of the camera's frames")
    area_m2: float = Field(gt=0, le=1_000_000, description="ground area of the zone in square metres")

    @field_validator("polygon")
    @classmethod
    def verify_polygon(cls, polygon: list[Point]) -> list[Point]:
        if polygon_area(polygon) <= 0:
            raise ValueError("polygon has zero area (collinear or repeated points)")
        if not polygon_is_simple(polygon):
            raise ValueError("polygon edges cross each other")
        return polygon


class CalibrationConfig(Frozen):
    """Image-to-ground calibration of one camera (homography)."""


class RiskThresholds(Frozen):
    """Lower bounds in people per m² for each level (defaults from crowd-safety literature, see README)."""

    caution: float = Field(default=2.0, gt=0)
    warning: float = Field(default=4.0, gt=0)
    danger: float = Field(default=5.0, gt=0)
    critical: float = Field(default=7.0, gt=0)

    @model_validator(mode="after")
    def verify_increasing(self) -> "RiskThresholds":
        if not self.caution < self.warning < self.danger < self.critical:
            raise ValueError("thresholds must increase: caution < warning < danger < critical")
        return self


class AnalyticsConfig(Frozen):
    window_seconds: float = Field(default=10.0, ge=1, le=3600, description="tumbling window length")
    thresholds: RiskThresholds = RiskThresholds()

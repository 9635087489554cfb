from __future__ import annotations

from enum import Enum

from pydantic import Field

from schemas.base import Message


class RiskLevel(str, Enum):
    """Crowd risk levels, ordered; UNKNOWN means the zone cannot be judged (camera down, count unreliable)."""

    UNKNOWN = "unknown"
    NORMAL = "normal"
    CAUTION = "caution"
    WARNING = "warning"
    DANGER = "danger"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """Numeric rank for metrics and comparisons: unknown -1, normal 0 ... critical 4."""
        return _RANKS[self]


_RANKS = {level: index - 1 for index, level in enumerate(RiskLevel)}


class ZoneMetrics(Message):
    """One closed time window of one zone, keyed by camera_id."""

    schema_name = "zone_metrics"

    camera_id: str = Field(min_length=1)
    zone_id: str = Field(min_length=1)
    window_start: float = Field(description="unix seconds, inclusive")
    window_end: float = Field(description="unix seconds, exclusive")
    frames: int = Field(ge=0, description="frames that fell in the window")
    area_m2: float = Field(gt=0)
    people_mean: float = Field(ge=0)
    people_max: int = Field(ge=0)
    density_mean_per_m2: float = Field(ge=0)
    density_max_per_m2: float = Field(ge=0)
    risk_level: RiskLevel
    risk_reason: str = Field(description="why the zone is at this level, in words")
    last_seq: int = Field(ge=0, description="sequence number of the last frame in the window")

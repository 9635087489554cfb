from __future__ import annotations

from enum import Enum

from pydantic import Field

from schemas.base import BoundedId, Message, Seq


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


class CountSource(str, Enum):
    """Which counter a zone's people count came from (processors.analytics.crowd.counting documents the rule)."""

    DETECTOR = "detector"
    DENSITY_MODEL = "density_model"
    BLEND = "blend"  # written by earlier versions; kept so their records still decode


class FlowRegime(str, Enum):
    """How the crowd moves: free flow, congested (slow), stop-and-go (speed collapsing while density rises)."""

    UNKNOWN = "unknown"
    FREE = "free"
    CONGESTED = "congested"
    STOP_AND_GO = "stop_and_go"


class DensityForecast(Message):
    """Forecast zone density at one horizon, with its uncertainty band."""

    schema_name = "density_forecast"

    horizon_s: float = Field(gt=0)
    density_per_m2: float = Field(ge=0)
    lower_per_m2: float = Field(ge=0)
    upper_per_m2: float = Field(ge=0)


class ZoneMetrics(Message):
    """One closed time window of one zone, keyed by camera_id."""

    schema_name = "zone_metrics"
    added_fields = ("rise_over_s",)

    camera_id: BoundedId
    zone_id: BoundedId
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
    last_seq: Seq = Field(description="sequence number of the last frame in the window")
    # Counting: both counters stay visible; people_mean above is the fused count.
    detector_people_mean: float | None = Field(default=None, ge=0, description="people per frame, box detector")
    density_model_people_mean: float | None = Field(
        default=None, ge=0, description="people per frame, density-map model (absent when no map was fresh)")
    count_source: CountSource = CountSource.DETECTOR
    count_confidence: float = Field(default=1.0, ge=0, le=1, description="roughly 1 - expected relative error")
    count_reliable: bool = Field(default=True, description="false: no fresh density map, the zone partly outside "
                                "the picture, a capture-clock jump or too few frames")
    # Local density (Helbing et al. 2007) and movement, from tracks in metres (calibrated cameras only).
    peak_local_density_per_m2: float | None = Field(default=None, ge=0)
    mean_speed_m_per_s: float | None = Field(default=None, ge=0)
    velocity_variance_m2_per_s2: float | None = Field(default=None, ge=0)
    crowd_pressure_per_s2: float | None = Field(default=None, ge=0,
                                                description="peak local density x velocity variance")
    flow_regime: FlowRegime = FlowRegime.UNKNOWN
    # Flow through the zone's counting lines.
    inflow: int = Field(default=0, ge=0, description="crossings into the zone during the window")
    outflow: int = Field(default=0, ge=0, description="crossings out of the zone during the window")
    net_accumulation_per_minute: float = Field(default=0.0, description="(inflow - outflow) per minute")
    inflow_surge: bool = Field(default=False, description="inflow far above its running baseline")
    # Forecast.
    forecast: list[DensityForecast] = Field(default_factory=list)
    seconds_to_threshold: dict[str, float] = Field(
        default_factory=dict, description="risk level name -> seconds until the density reaches it at the "
        "rise the last minutes' windows bear out, what the level is raised on (only levels expected within the "
        "forecast horizon; 0: reached)")
    rise_over_s: float | None = Field(
        default=None, gt=0, description="how far back the windows reach that bear out the rise of the forecast and "
        "of seconds_to_threshold (absent until enough windows do)")

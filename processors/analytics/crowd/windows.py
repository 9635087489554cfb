"""Per-zone window aggregates over event time: tumbling (hop = window) or hopping windows built from hop buckets.

Each hop of time gets one Bucket (created, then `add`, `merge`); a window is the merge of the buckets it spans. Only
buckets still inside some future window are kept, so state is bounded by window / hop.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, fields


@dataclass
class FrameSample:
    """One frame's measurements for one zone."""

    people: float  # fused count
    detector_people: int
    model_people: float | None
    source: str
    confidence: float
    reliable: bool
    unreliable_reason: str
    seq: int
    speed_m_s: float | None = None
    velocity_variance: float | None = None
    pressure: float | None = None
    peak_local_density: float | None = None
    inflow: int = 0
    outflow: int = 0


@dataclass
class Bucket:
    start: float
    frames: int = 0
    last_seq: int = 0
    people_sum: float = 0.0
    people_max: float = 0.0
    reliable_people_sum: float = 0.0  # the reliable frames' counts apart: a window's people figure is theirs
    detector_sum: int = 0
    model_sum: float = 0.0
    model_frames: int = 0
    confidence_sum: float = 0.0
    unreliable_frames: int = 0
    unreliable_reason: str = ""
    latest_reliable: bool = True  # whether the latest frame's count was reliable (vacuously, before any frame)
    source_frames: dict[str, int] = field(default_factory=dict)
    speed_sum: float = 0.0
    speed_frames: int = 0
    variance_sum: float = 0.0
    variance_frames: int = 0
    pressure_sum: float = 0.0
    pressure_frames: int = 0
    peak_local_sum: float = 0.0
    peak_local_frames: int = 0
    inflow: int = 0
    outflow: int = 0

    def add(self, sample: FrameSample) -> None:
        self.frames += 1
        self.last_seq = sample.seq
        self.people_sum += sample.people
        self.people_max = max(self.people_max, sample.people)
        self.detector_sum += sample.detector_people
        if sample.model_people is not None:
            self.model_sum += sample.model_people
            self.model_frames += 1
        self.confidence_sum += sample.confidence
        self.latest_reliable = sample.reliable
        if sample.reliable:
            self.reliable_people_sum += sample.people
        else:
            self.unreliable_frames += 1
            self.unreliable_reason = sample.unreliable_reason
        self.source_frames[sample.source] = self.source_frames.get(sample.source, 0) + 1
        for name, value in (("speed", sample.speed_m_s), ("variance", sample.velocity_variance),
                            ("pressure", sample.pressure), ("peak_local", sample.peak_local_density)):
            if value is not None:
                setattr(self, f"{name}_sum", getattr(self, f"{name}_sum") + value)
                setattr(self, f"{name}_frames", getattr(self, f"{name}_frames") + 1)
        self.inflow += sample.inflow
        self.outflow += sample.outflow

    @classmethod
    def from_record(cls, record: dict) -> Bucket:
        """The bucket `vars(bucket)` stored. A record lacking a counter (stored by an older version) is refused
        rather than read as zero: the analytics stage then starts the camera afresh. One stored before the latest
        frame's reliability was kept has it reliable only where all its frames were."""
        if "latest_reliable" not in record and "unreliable_frames" in record:
            record = {**record, "latest_reliable": record["unreliable_frames"] == 0}
        missing = {item.name for item in fields(cls)} - record.keys()
        if missing:
            raise ValueError(f"window bucket record without {sorted(missing)}: stored by an older version")
        return cls(**record)

    @classmethod
    def merge(cls, start: float, buckets: Iterable[Bucket]) -> Bucket:
        total = cls(start=start)
        for bucket in buckets:
            for item in fields(cls):
                name = item.name
                if name in ("start", "unreliable_reason", "latest_reliable"):
                    continue
                if name == "last_seq":
                    total.last_seq = max(total.last_seq, bucket.last_seq)
                elif name == "people_max":
                    total.people_max = max(total.people_max, bucket.people_max)
                elif name == "source_frames":
                    for source, count in bucket.source_frames.items():
                        total.source_frames[source] = total.source_frames.get(source, 0) + count
                else:
                    setattr(total, name, getattr(total, name) + getattr(bucket, name))
            total.unreliable_reason = bucket.unreliable_reason or total.unreliable_reason
            if bucket.frames:  # the buckets come in time order: the latest frame is the last one's
                total.latest_reliable = bucket.latest_reliable
        return total

    def mean(self, name: str) -> float | None:
        if name in ("people", "detector", "confidence"):
            frames = self.frames
        elif name == "reliable_people":
            frames = self.frames - self.unreliable_frames
        else:
            frames = getattr(self, f"{name}_frames")
        return getattr(self, f"{name}_sum") / frames if frames else None


def bucket_start(timestamp: float, step_seconds: float) -> float:
    return math.floor(timestamp / step_seconds) * step_seconds


def hop_index(start: float, step_seconds: float) -> int:
    """Which hop a bucket start or window edge is, counted from time 0. Starts are compared by this: as floats, a
    window's edges computed from its end differ in the last bit from the buckets' own starts when the hop is no
    binary fraction (0.7 s), and buckets at the edges would be dropped."""
    return round(start / step_seconds)

"""Versioned message schemas for every cityguard topic. Every stage reads and writes only these."""
from schemas.alert import Alert
from schemas.base import Message, SchemaError, decode, encode
from schemas.camera_status import CameraState, CameraStatus
from schemas.dead_letter import DeadLetter
from schemas.detections import PERSON_CLASS_ID, UNTRACKED, Detections, StaticBlob
from schemas.event import Event, EventState, FrameRef, Severity
from schemas.frame import Frame, PictureFault
from schemas.line_counts import LineCounts
from schemas.zone_metrics import CountSource, DensityForecast, FlowRegime, RiskLevel, ZoneMetrics

__all__ = [
    "Alert", "CameraState", "CameraStatus", "CountSource", "DeadLetter", "DensityForecast", "Detections", "Event",
    "EventState", "FlowRegime", "Frame", "FrameRef", "LineCounts", "Message", "PERSON_CLASS_ID", "PictureFault",
    "RiskLevel", "SchemaError", "Severity", "StaticBlob", "UNTRACKED", "ZoneMetrics", "decode", "encode",
]

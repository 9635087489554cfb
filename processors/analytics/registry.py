"""Which analyzers a camera gets: the registry of analytics concerns, by the name that scopes their state."""
from __future__ import annotations

from processors.analytics.contract import AnalyzerFactory
from processors.analytics.crowd.analyzer import CrowdAnalyzer
from processors.analytics.traffic.analyzer import TrafficAnalyzer
from schemas.settings.config import CameraConfig


def analyzers_for(camera: CameraConfig) -> dict[str, AnalyzerFactory]:
    """Analyzers a camera needs, by name (the name scopes its state in the table)."""
    analyzers: dict[str, AnalyzerFactory] = {}
    if camera.zones:
        analyzers["crowd"] = CrowdAnalyzer.restore
    if camera.scene is not None:
        analyzers["traffic"] = TrafficAnalyzer.restore
    return analyzers


def geometry_mismatch(camera: CameraConfig, width: int, height: int) -> str | None:
    """A one-line warning when the camera's geometry leaves its picture (width x height, from its detections), else
    None: geometry drawn on another picture (a scaled-down snapshot, another camera's) watches the wrong place."""
    outside = camera.geometry_outside(width, height)
    if not outside:
        return None
    return (f"camera {camera.id}: {'; '.join(outside)}, outside its {width}x{height} picture: zones, lines and "
            "regions are drawn in the camera's own pixels, as a snapshot of its stream shows them")

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

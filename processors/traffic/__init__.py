"""Intersection rules over tracked detections: line counts, stopped vehicles, wrong way, pedestrians on the road,
obstacles, congestion and collision candidates (issue 6)."""
from processors.traffic.analyzer import TrafficAnalyzer, TrafficOutput
from processors.traffic.blobs import StaticBlobDetector, StaticBlobPool

__all__ = ["StaticBlobDetector", "StaticBlobPool", "TrafficAnalyzer", "TrafficOutput"]

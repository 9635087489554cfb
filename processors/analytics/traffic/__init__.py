"""Intersection rules over tracked detections: line counts, stopped vehicles, wrong way, pedestrians on the road,
obstacles, congestion and collision candidates."""

"""Scenario runner for the crowd suite: a simulator feeding the real analyzer, with ground truth alongside."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from processors.analytics.contract import AnalyticsOutput
from processors.analytics.crowd.analyzer import CrowdAnalyzer
from schemas import Event, ZoneMetrics
from schemas.settings.config import Config, parse_config
from tests.crowd.simulator import SQUARE, CrowdSimulator, SimCamera

CAMERA_ID = "cam"
MAP_EVERY_SECONDS = 7.5  # analytics.density_model.interval_seconds
ZONE_ID = "zone"


def site_config(camera: SimCamera, fps: float, calibrated: bool = True,
                entrances: tuple[str, ...] = ("entrance", "exit"), analytics: dict | None = None) -> Config:
    """One camera, one zone; `entrances` picks the counting lines, in order: "entrance" (y = 0), "exit" (far end)."""
    zone = {"id": ZONE_ID, "polygon": camera.zone_polygon()}
    if not calibrated:
        zone["area_m2"] = camera.area_m2
    ground_y = {"entrance": 0.0, "exit": camera.length_m}
    zone["entrances"] = []
    for name in entrances:
        start, end = camera.line(ground_y[name])
        zone["entrances"].append({"id": name, "start": start, "end": end})
    cam = {"id": CAMERA_ID, "source": "0", "fps": fps, "zones": [zone]}
    if calibrated:
        cam["calibration"] = camera.calibration()
    return parse_config({"site": "sim", "analytics": analytics or {"window_seconds": 10}, "cameras": [cam]},
                        Path("."))


@dataclass
class Run:
    metrics: list[ZoneMetrics] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    truth: dict[float, float] = field(default_factory=dict)  # capture time -> true density in the zone

    def add(self, output: AnalyticsOutput) -> None:
        self.metrics.extend(output.zone_metrics)
        self.events.extend(output.events)

    def true_window_density(self, metrics: ZoneMetrics) -> float:
        values = [d for t, d in self.truth.items() if metrics.window_start <= t < metrics.window_end]
        return sum(values) / len(values)

    def first_time_true_density_reaches(self, density: float) -> float:
        return min(t for t, d in self.truth.items() if d >= density)


def run_scenario(simulator: CrowdSimulator, config: Config, frames: int, run: Run | None = None,
                 analyzer: CrowdAnalyzer | None = None, density_map_every: int | None = None, miss_rate: float = 0.0,
                 jitter_px: float = 0.0) -> tuple[Run, CrowdAnalyzer]:
    """Steps the simulator `frames` times, feeding every frame to the analyzer.

    Every `density_map_every`-th frame carries a (perfect) density map, by default one every MAP_EVERY_SECONDS as
    the inference stage's schedule renews them; 0 sends none.
    """
    run = run or Run()
    camera = config.cameras[0]
    analyzer = analyzer or CrowdAnalyzer(camera, config.analytics)
    if density_map_every is None:
        density_map_every = max(1, round(MAP_EVERY_SECONDS * camera.fps))
    for _ in range(frames):
        simulator.step()
        with_map = bool(density_map_every) and simulator.seq % density_map_every == 0
        detections = simulator.detections(CAMERA_ID, miss_rate, jitter_px, with_map)
        run.truth[detections.captured_at] = simulator.true_density()
        run.add(analyzer.update(detections))
    return run, analyzer


def steady_crowd(frames: int, density_map_at_seq: int | None = None) -> tuple[CrowdAnalyzer, list]:
    """A fresh analyzer on a steady 1 p/m² crowd in SQUARE at 1 fps, and that crowd's first `frames` messages."""
    config = site_config(SQUARE, 1.0)
    simulator = CrowdSimulator(SQUARE, 1.0, seed=2, target_density=lambda _: 1.0)
    messages = []
    for _ in range(frames):
        simulator.step()
        messages.append(simulator.detections(CAMERA_ID, with_density_map=simulator.seq == density_map_at_seq))
    return CrowdAnalyzer(config.cameras[0], config.analytics), messages

"""The crowd analyzer's outputs on two generated crowds, against the outputs stored when they were last accepted.

Speed work must not change what the analyzer says: every zone metric and event, field by field, as stored. Numbers
are compared to 1e-9 relative, because another BLAS build may round the grid sums differently in the last bit;
everything else (levels, reasons, event ids, counts) exactly. Each run is restored from its state bytes halfway, as
a restarted worker would be. A change meant to alter the outputs writes a new reference with
`OPENBLAS_CORETYPE=Haswell python -m tests.crowd.test_reference_outputs`.

The outputs are computed in a child process with OpenBLAS's Haswell (AVX2) kernels, the ones the reference was made
with: its AVX-512 kernels round some sums differently, and the tracks and thresholds downstream turn that into
differences of several per cent in velocity variance and crowd pressure, which would hide a real change.
"""
from __future__ import annotations

import gzip
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from threadpoolctl import threadpool_limits

from cityguard.bench.analytics import crowd_frames, site
from processors.analytics.crowd.analyzer import CrowdAnalyzer
from schemas.settings.config import parse_config
from tests.crowd.scenarios import CAMERA_ID, site_config
from tests.crowd.simulator import SQUARE, CrowdSimulator

REFERENCE = Path(__file__).parent / "data" / "reference_outputs.json.gz"


def busy_square():
    """The `cityguard bench analytics` camera: 100 tracked walkers, one zone, two counting lines, tumbling windows."""
    config = parse_config(site(10.0, 5.0), Path("."))
    return config, crowd_frames(100, 5.0, 1_000)


def build_up():
    """A square filling from 0.5 to 5.5 p/m² and staying there, with a density map every 7.5 s, a tenth of people
    missed per frame (tracks come and go), jittered boxes, hopping windows: levels rise, the forecast and the flows
    run."""
    config = site_config(SQUARE, 2.0, analytics={"window_seconds": 10, "hop_seconds": 5})
    simulator = CrowdSimulator(SQUARE, 2.0, seed=5, target_density=lambda elapsed: 0.5 + 5 * min(elapsed, 300) / 300)
    frames = []
    for _ in range(800):
        simulator.step()
        frames.append(simulator.detections(CAMERA_ID, miss_rate=0.1, jitter_px=1.0,
                                           with_density_map=simulator.seq % 15 == 0))
    return config, frames


SCENARIOS = {"busy_square": busy_square, "build_up": build_up}


def outputs(scenario: str) -> list[dict]:
    """Every zone metric and event the scenario's frames produce, in order, as JSON data."""
    config, frames = SCENARIOS[scenario]()
    camera = config.cameras[0]
    analyzer = CrowdAnalyzer(camera, config.analytics)
    produced = []
    # One BLAS thread, as in the analytics worker: on a busy machine more threads make the grid sums many times slower.
    with threadpool_limits(1):
        for index, frame in enumerate(frames):
            if index == len(frames) // 2:
                analyzer = CrowdAnalyzer.restore(camera, config, analyzer.state_bytes())
            output = analyzer.update(frame)
            produced += [{"zone_metrics": metrics.model_dump(mode="json")} for metrics in output.zone_metrics]
            produced += [{"event": event.model_dump(mode="json")} for event in output.events]
    return produced


def outputs_with_reference_kernels(scenario: str) -> list[dict]:
    """outputs(scenario), computed in a child process whose OpenBLAS uses the Haswell kernels."""
    child = subprocess.run([sys.executable, "-m", "tests.crowd.test_reference_outputs", "--print", scenario],
                           env={**os.environ, "OPENBLAS_CORETYPE": "Haswell"}, cwd=Path(__file__).parents[2],
                           capture_output=True, text=True, check=True)
    return json.loads(child.stdout)


def differences(expected, actual, where: str = "") -> list[str]:
    """Where two JSON values differ: numbers beyond 1e-9 relative, anything else at all."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        if expected.keys() != actual.keys():
            return [f"{where}: keys {sorted(expected)} != {sorted(actual)}"]
        return [found for key in expected for found in differences(expected[key], actual[key], f"{where}.{key}")]
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where}: {len(expected)} entries != {len(actual)}"]
        return [found for index, (left, right) in enumerate(zip(expected, actual, strict=True))
                for found in differences(left, right, f"{where}[{index}]")]
    if number(expected) and number(actual):
        close = math.isclose(expected, actual, rel_tol=1e-9, abs_tol=1e-12)
        return [] if close else [f"{where}: {expected} != {actual}"]
    return [] if expected == actual else [f"{where}: {expected!r} != {actual!r}"]


def number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_outputs_match_the_reference(scenario):
    with gzip.open(REFERENCE, "rt") as stored:
        expected = json.load(stored)[scenario]
    actual = outputs_with_reference_kernels(scenario)
    assert any("event" in item for item in expected)  # the reference exercises level changes, not only metrics
    found = differences(expected, actual)
    assert not found, f"{len(found)} differences, first ones: {found[:5]}"


if __name__ == "__main__" and sys.argv[1:2] == ["--print"]:
    print(json.dumps(outputs(sys.argv[2])))
elif __name__ == "__main__":
    with gzip.open(REFERENCE, "wt") as reference:
        json.dump({scenario: outputs(scenario) for scenario in SCENARIOS}, reference, separators=(",", ":"))
    print(f"wrote {REFERENCE}")

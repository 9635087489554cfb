"""`cityguard bench pipeline` on a short, unpaced replay of vtest.avi: every figure present and sane (never speed)."""
import json
import subprocess
import sys

import pytest
import yaml

from tests.conftest import OFFLINE_MODEL, REPO, VTEST

pytestmark = [pytest.mark.slow, pytest.mark.broker]

FRAMES = 40


def test_pipeline_bench_produces_every_figure(tmp_path):
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump({
        "site": "bench-test",
        # The default frame age bound: the bench's own configuration must keep its warm-up frames.
        "model": {"offline_weights": str(OFFLINE_MODEL), "max_batch_size": 4},
        "cameras": [{"id": "campus", "source": str(VTEST), "fps": 10,
                     "zones": [{"id": "walkway", "polygon": [[0, 300], [768, 300], [768, 576], [0, 576]],
                                "area_m2": 144}]}],
    }))
    figures_path = tmp_path / "figures.json"
    result = subprocess.run(
        [sys.executable, "-m", "cityguard", "bench", "pipeline", "--config", str(config), "--frames", str(FRAMES),
         "--no-realtime", "--window-seconds", "1", "--log-dir", str(tmp_path / "logs"), "--json", str(figures_path)],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pipeline / bare loop" in result.stdout
    figures = json.loads(figures_path.read_text())

    assert figures["frames"] == FRAMES and figures["latency_origin"] == "frame_published"
    stages = figures["stages"]
    assert stages["produce"]["frames"] == stages["infer"]["frames"] == FRAMES
    assert 0 < stages["analyze"]["frames"] < FRAMES  # the windows closed after the first one
    assert all(stage["frames_per_second"] > 0 for stage in stages.values())

    latency = figures["latency_seconds"]
    assert set(latency) == {"to_detections", "to_zone_metrics", "to_events"}
    assert latency["to_detections"]["count"] == FRAMES
    assert latency["to_zone_metrics"]["count"] >= 2  # 4 s of video in 1 s windows
    for stats in (latency["to_detections"], latency["to_zone_metrics"]):
        assert 0 <= stats["p50"] <= stats["p95"] <= stats["p99"] <= stats["max"]
    assert latency["to_events"]["count"] >= 0

    lag = figures["consumer_lag_messages"]
    assert set(lag) == {"bench-test-inference", "bench-test-analytics", "bench-test-metrics-sink"}
    assert lag["bench-test-inference"]["final"] == lag["bench-test-analytics"]["final"] == 0
    assert lag["bench-test-inference"]["max"] > 0  # the unpaced producer runs ahead of the model
    assert set(figures["peak_memory_bytes"]) == {"bench", "broker", "export-metrics", "analyze", "infer", "produce"}
    assert all(peak > 10 * 2**20 for peak in figures["peak_memory_bytes"].values())

    bare = figures["bare_loop"]
    assert bare["frames"] == FRAMES and bare["frames_per_second"] > 0 and bare["model_ms_per_frame"] > 0
    assert figures["ratio_to_bare_loop"]["frames_per_second"] == pytest.approx(
        stages["infer"]["frames_per_second"] / bare["frames_per_second"])
    assert figures["model_ms_per_frame"] > 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".bench")] == [], "the run config is removed"

"""`cityguard up`: the whole pipeline from one command, stopped by Ctrl-C with no process left behind."""
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.conftest import REPO, pipeline_config

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_up_shows_live_status_restarts_a_dead_stage_and_ctrl_c_leaves_no_orphans(tmp_path):
    # Its own embedded broker (no bootstrap servers anywhere), free metrics ports, a looping camera.
    config, path = pipeline_config(tmp_path, "up", bootstrap="unused",
                                   broker={"partitions": 2, "embedded_memory_warn_bytes": 1024**2},
                                   alerting={"receiver": {"port": 0}, "store_url": f"sqlite:///{tmp_path}/i.sqlite"})
    env = {key: value for key, value in os.environ.items() if key != "KAFKA_BOOTSTRAP_SERVERS"}
    up = subprocess.Popen([sys.executable, "-m", "cityguard", "up", "--config", str(path), "--log-dir",
                           str(tmp_path / "logs")], cwd=REPO, env={**env, "YOLO_OFFLINE": "1"},
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    status_lines, descendants, output = [], [], []
    try:
        deadline = time.monotonic() + 120
        for line in up.stdout:
            output.append(line)
            if line.startswith("[campus]"):
                status_lines.append(line)
                if "zone walkway:" in line and "people" in line and len(status_lines) >= 3:
                    break
            assert time.monotonic() < deadline, "no status line with zone figures within 120 s"
        descendants = psutil.Process(up.pid).children(recursive=True)
        assert len(descendants) >= 6, "broker, alerts, export-metrics, analyze, infer and produce run as processes"
        # A stage that dies is started again after a back-off; the rest of the pipeline goes on meanwhile.
        sink = next(p for p in psutil.Process(up.pid).children() if "export-metrics" in p.cmdline())
        sink.kill()
        for line in up.stdout:
            output.append(line)
            if line.startswith("export-metrics restarted"):
                break
            assert time.monotonic() < deadline + 30, "the killed stage was not restarted"
        assert any(line.startswith("export-metrics exited with code -9; restarting it in 1 s") for line in output)
        restarted = next(p for p in psutil.Process(up.pid).children() if "export-metrics" in p.cmdline())
        assert restarted.pid != sink.pid
        descendants = psutil.Process(up.pid).children(recursive=True)
        up.send_signal(signal.SIGINT)
        rest = up.communicate(timeout=90)[0]
    finally:
        if up.poll() is None:
            up.kill()
    assert up.returncode == 0, rest
    assert "stopped: all stages and the broker" in rest
    # A bound of 1 MiB is passed at once: the in-memory broker's growth is reported, with the way out.
    assert any(line.startswith("warning: embedded broker uses") and "KAFKA_BOOTSTRAP_SERVERS" in line
               for line in output + rest.splitlines())
    assert "fps" in status_lines[-1] and "p/m²" in status_lines[-1]
    survivors = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not survivors, f"left behind: {[p.cmdline()[:4] for p in survivors]}"

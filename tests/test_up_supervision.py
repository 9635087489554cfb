"""What `cityguard up` does with a stage that exits while it supervises: the producer stopped from outside is told
apart from one whose sources ended, and neither goes unreported."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from cityguard.up import Supervisor, metrics_line, metrics_ports, spawn, stage_environment
from infra.kafka import create_topics
from infra.process import terminate
from tests.conftest import REPO, VTEST, pipeline_config


def exited(code: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])
    process.wait()
    return process


def test_a_producer_whose_sources_ended_is_reported_once_and_left_stopped(capsys):
    started = []
    supervisor = Supervisor({"produce": exited(0)}, start_stage=lambda stage: started.append(stage) or exited(0))
    for now in (100.0, 101.0, 200.0):
        supervisor.check(now)
    assert started == []
    out = capsys.readouterr().out
    assert out.count("produce finished: every source it reads has ended") == 1, out


def test_a_producer_stopped_by_a_signal_is_restarted(capsys):
    started = []
    supervisor = Supervisor({"produce": exited(128 + signal.SIGTERM)},
                            start_stage=lambda stage: started.append(stage) or exited(0))
    supervisor.check(100.0)
    supervisor.check(101.0)
    assert started == ["produce"]
    assert "produce stopped by SIGTERM (exit code 143); restarting it in 1 s" in capsys.readouterr().out


def killed(signum: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", f"import os; os.kill(os.getpid(), {signum})"])
    process.wait()
    return process


def test_a_stage_killed_by_a_signal_is_reported_by_the_signals_name(capsys):
    supervisor = Supervisor({"export-metrics": killed(signal.SIGKILL), "analyze": killed(signal.SIGTERM)},
                            start_stage=lambda stage: exited(0))
    supervisor.check(100.0)
    out = capsys.readouterr().out
    assert "export-metrics killed by SIGKILL; restarting it in 1 s" in out, out
    assert "analyze killed by SIGTERM; restarting it in 1 s" in out, out


def test_a_restarted_stage_is_shown_with_the_error_its_log_ends_with(tmp_path, capsys):
    (tmp_path / "infer.log").write_text("INFO starting\ncityguard: error: cannot download asset m from "
                                        "http://127.0.0.1:9/m.xml: refused\n")
    (tmp_path / "console.log").write_text("INFO serving\nINFO stopped\n")  # no error line of its own
    supervisor = Supervisor({"infer": exited(1), "console": exited(3)}, start_stage=lambda stage: exited(0),
                            log_dir=tmp_path)
    supervisor.check(100.0)
    out = capsys.readouterr().out
    assert "infer exited with code 1 (cannot download asset m from http://127.0.0.1:9/m.xml: refused); restarting " \
           "it in 1 s" in out, out
    assert "console exited with code 3; restarting it in 1 s" in out, out


@pytest.mark.broker
def test_the_producer_stopped_by_sigterm_exits_with_its_status_not_as_finished(tmp_path, kafka_bootstrap):
    # A looping camera never ends: only the signal stops it, and its status says so, as a shell reports a process
    # that a signal ended (`cityguard up` restarts it; one that exits 0 has played its files to their end).
    cameras = [{"id": "campus", "source": str(VTEST), "fps": 5, "loop": True}]
    _, path = pipeline_config(tmp_path, "produce-signal", kafka_bootstrap, cameras=cameras)
    producer = subprocess.Popen([sys.executable, "-m", "cityguard", "produce", "--config", str(path)], cwd=REPO,
                                env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in producer.stdout:
            if "producer shard 0/1: 1 cameras" in line:  # its cameras run: the signal stops them
                break
        producer.send_signal(signal.SIGTERM)
        rest = producer.communicate(timeout=60)[0]
    finally:
        if producer.poll() is None:
            producer.kill()
    assert producer.returncode == 128 + signal.SIGTERM, rest
    assert "producer done" in rest  # it stopped cleanly all the same


@pytest.mark.broker
def test_the_analytics_stage_writes_no_terminal_control_bytes_into_its_log(tmp_path, kafka_bootstrap):
    # faust ends its start by drawing on the terminal; the stage's stdout under `up` is its log file, read as text.
    config, path = pipeline_config(tmp_path, "analyze-log", kafka_bootstrap)
    create_topics(kafka_bootstrap, config.broker.topics.all(), config.broker.partitions)
    worker = spawn("analyze", path, {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                                     "CITYGUARD_LOG_LEVEL": "INFO"}, tmp_path, "--metrics-port", "0")
    log = tmp_path / "analyze.log"
    deadline = time.monotonic() + 120  # a stage that never says it started fails here, not at the suite's timeout
    try:
        # Started: said in a line, or (drawn) in the bytes that follow "Worker ready".
        while not re.search(rb"\[\^Worker\]: Ready|Worker ready\n[^\n]", log.read_bytes()):
            assert worker.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.2)
    finally:
        terminate(worker)
    written = log.read_bytes()
    assert not re.search(rb"[\x00-\x08\x0b-\x1f\x7f]", written), written[-500:]


def test_metrics_ports_left_to_the_system_are_fixed_before_the_stages_start(tmp_path):
    # The URLs `up` prints are the ones the stages listen on (not :0), and a restarted stage listens where it did.
    config, _ = pipeline_config(tmp_path, "ports", "unused")  # every metrics port 0
    config = config.model_copy(update={"metrics": config.metrics.model_copy(update={"analytics_port": 9999})})
    ports = metrics_ports(config)
    assert set(ports) == {"export-metrics", "produce", "infer", "analyze"}
    assert ports["analyze"] == 9999 and all(port > 0 for port in ports.values())
    line = metrics_line(config, ports, receiver_port=9103)
    assert f"http://127.0.0.1:{ports['export-metrics']}/metrics" in line
    assert f":{ports['infer']} (inference)" in line and f":{ports['produce']} (producer)" in line
    assert ":0 " not in line


def test_a_stage_does_not_run_a_file_in_the_working_directory_named_like_a_module_it_imports(tmp_path, monkeypatch):
    # An operator's folder may hold a script named like a library the stages import; `up` started from there must
    # still run the library. The stage here stops at once, on a site file it cannot read.
    (tmp_path / "yaml.py").write_text("raise SystemExit('the working directory yaml.py ran')\n")
    monkeypatch.chdir(tmp_path)
    stage = spawn("console", tmp_path / "missing.yaml", dict(os.environ), tmp_path)
    assert stage.wait(timeout=60) == 2
    log = (tmp_path / "console.log").read_text()
    assert "cannot read configuration" in log and "yaml.py ran" not in log, log


def test_the_log_level_and_debug_given_to_up_reach_its_stages(tmp_path, monkeypatch):
    # `cityguard --log-level ERROR --debug up`: a stage logs no warnings, and its error comes with the traceback.
    monkeypatch.delenv("CITYGUARD_ALERTMANAGER_TOKEN", raising=False)
    site = tmp_path / "site.yaml"
    site.write_text("alerting: {store_url: 'sqlite:///incidents.sqlite', receiver: {port: 0}}\n")
    env = stage_environment("127.0.0.1:1", "ERROR", debug=True)
    dispatcher = spawn("alerts", site, env, tmp_path)
    try:
        log = tmp_path / "alerts.log"
        while "alerts: Alertmanager webhook" not in log.read_text():  # started: its token warned of or not
            assert dispatcher.poll() is None, log.read_text()
            time.sleep(0.1)
    finally:
        dispatcher.terminate()
        dispatcher.wait(timeout=30)
    assert "CITYGUARD_ALERTMANAGER_TOKEN is not set" not in log.read_text()
    assert spawn("console", tmp_path / "missing.yaml", env, tmp_path).wait(timeout=60) == 1  # raised, not reported
    assert "Traceback" in (tmp_path / "console.log").read_text()

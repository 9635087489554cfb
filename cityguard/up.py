"""`cityguard up`: the whole pipeline on one machine, one child process per stage.

Starts in data-flow order with consumers ready before producers (broker, alert dispatcher, metrics sink, operator
console, analytics, inference, producer) and stops in reverse, so frames in flight drain; the broker stops last.
Children run in their own sessions, so Ctrl-C reaches only `up` (a second Ctrl-C kills them at once), and get
PR_SET_PDEATHSIG, so even a SIGKILLed `up` leaves no orphans.
"""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

from infra.broker import broker_for
from infra.kafka import make_consumer
from infra.process import child_preexec, terminate
from schemas import PERSON_CLASS_ID, Detections, SchemaError, ZoneMetrics, decode
from schemas.settings.config import Config

# Stage name -> its cityguard subcommand, in start order (sinks first, the producer last).
STAGES = {
    "alerts": ["alerts", "dispatch"],
    "export-metrics": ["export-metrics"],
    "console": ["console"],
    "analyze": ["analyze"],
    "infer": ["infer"],
    "produce": ["produce"],
}
# Stages the pipeline does not depend on: when one exits, `up` says so and the data keeps flowing.
NON_ESSENTIAL = {"console"}


@dataclass
class CameraStatusLine:
    """What the live status line shows for one camera, from the detections and zone-metrics topics."""

    seen_at: deque = field(default_factory=lambda: deque(maxlen=200))
    people: int = 0
    zones: dict[str, ZoneMetrics] = field(default_factory=dict)

    def render(self, camera_id: str, now: float) -> str:
        recent = [t for t in self.seen_at if now - t <= 5.0]
        fps = len(recent) / 5.0
        if self.zones:
            worst = max(self.zones.values(), key=lambda m: (m.risk_level.rank, m.density_mean_per_m2))
            zone_text = (f"zone {worst.zone_id}: {worst.people_mean:.1f} people, "
                         f"{worst.density_mean_per_m2:.3f} p/m², risk {worst.risk_level.value}")
        else:
            zone_text = "zones: waiting for the first window"
        return f"[{camera_id}] {fps:4.1f} fps | {self.people:2d} people in frame | {zone_text}"


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def console_access(config: Config) -> tuple[str, list[str], str]:
    """(line to print, console arguments, token): the port is fixed here so the URL can be printed, and a token made
    up here (when none is configured) reaches the console through its environment, never a log file."""
    settings = config.console
    port = settings.port or free_port(settings.host)
    configured = os.environ.get(settings.token_env)
    token = configured or secrets.token_urlsafe(24)
    shown = f" (token in ${settings.token_env})" if configured else f"?token={token}"
    return f"console: http://{settings.host}:{port}/{shown}", ["--port", str(port)], token


def spawn(stage: str, config_path: Path, env: dict, log_dir: Path, *stage_args: str) -> subprocess.Popen:
    log_file = open(log_dir / f"{stage}.log", "ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "cityguard", *STAGES[stage], "--config", str(config_path), *stage_args],
            env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=child_preexec,
            start_new_session=True,  # Ctrl-C reaches only `up`, which stops the stages in order
        )
    finally:
        log_file.close()


def stop_children(children: dict[str, subprocess.Popen], timeout_s: float = 10) -> None:
    for stage in reversed(list(children)):
        terminate(children[stage], timeout_s)


def run_up(config: Config, config_path: Path, duration_s: float | None, log_dir: Path) -> int:
    log_dir.mkdir(parents=True, exist_ok=True)
    interrupted = False
    children: dict[str, subprocess.Popen] = {}

    def on_signal(*_):
        nonlocal interrupted
        if interrupted:  # a second Ctrl-C: stop waiting for a clean drain
            print("second interrupt: killing every stage", flush=True)
            for process in children.values():
                process.kill()
        interrupted = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with broker_for(config, log_dir / "broker.log") as servers:
        print(f"broker: {servers}" + ("" if config.bootstrap_servers() else " (embedded Tansu)"), flush=True)
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": servers, "PYTHONUNBUFFERED": "1"}
        console_line, console_args, token = console_access(config)
        env[config.console.token_env] = token
        status_consumer = make_consumer(servers, None, config.broker.topics.detections,
                                        config.broker.topics.zone_metrics, auto_offset_reset="latest")
        try:
            for stage in STAGES:
                stage_args = console_args if stage == "console" else []
                children[stage] = spawn(stage, config_path, env, log_dir, *stage_args)
            metrics = config.metrics
            print(f"metrics: http://{metrics.host}:{metrics.exporter_port}/metrics (zones, detections), "
                  f":{metrics.inference_port} (inference), :{metrics.producer_port} (producer), "
                  f":{config.alerting.receiver.port} (alert dispatcher, Alertmanager webhook)", flush=True)
            print(console_line, flush=True)
            print(f"logs: {log_dir}/  (Ctrl-C stops everything)", flush=True)
            return watch(config, children, status_consumer, duration_s, lambda: interrupted)
        finally:
            status_consumer.close()
            stop_children(children)
            print("stopped: all stages and the broker", flush=True)


def watch(config: Config, children: dict[str, subprocess.Popen], status_consumer, duration_s: float | None,
          interrupted) -> int:
    started = time.monotonic()
    lines: dict[str, CameraStatusLine] = defaultdict(CameraStatusLine)
    last_print = 0.0
    reported: set[str] = set()
    while not interrupted():
        if duration_s is not None and time.monotonic() - started >= duration_s:
            return 0
        for stage, process in children.items():
            if process.poll() is None or (stage == "produce" and process.returncode == 0) or stage in reported:
                continue
            print(f"stage {stage} exited with code {process.returncode}; see its log"
                  + ("; the pipeline runs on without it" if stage in NON_ESSENTIAL else ""), flush=True)
            if stage not in NON_ESSENTIAL:
                return 1
            reported.add(stage)
        for records in status_consumer.poll(timeout_ms=500).values():
            for record in records:
                absorb(record, config, lines)
        now = time.time()
        if now - last_print >= 2 and lines:
            for camera_id in sorted(lines):
                print(lines[camera_id].render(camera_id, now), flush=True)
            last_print = now
    return 0


def absorb(record, config: Config, lines: dict[str, CameraStatusLine]) -> None:
    try:
        if record.topic == config.broker.topics.detections:
            detections = decode(record.value, Detections)
            line = lines[detections.camera_id]
            line.seen_at.append(time.time())
            line.people = int(detections.class_mask(PERSON_CLASS_ID).sum())
        else:
            metrics = decode(record.value, ZoneMetrics)
            lines[metrics.camera_id].zones[metrics.zone_id] = metrics
    except SchemaError:
        pass  # the stages dead-letter bad messages; the status line just skips them

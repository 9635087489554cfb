"""`cityguard up`: the whole pipeline on one machine, one child process per stage.

Starts in data-flow order with consumers ready before producers (broker, alert dispatcher, metrics sink, operator
console, analytics, inference, producer) and stops in reverse, so frames in flight drain; the broker stops last. A
stage (or embedded broker) that exits meanwhile is restarted with back-off (Supervisor), so one failure never stops
the pipeline.
Children run in their own sessions, so Ctrl-C reaches only `up` (a second Ctrl-C kills them at once), and get
PR_SET_PDEATHSIG, so even a SIGKILLed `up` leaves no orphans.
"""
from __future__ import annotations

import functools
import math
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kafka.errors import KafkaError

from cityguard.arguments import ERROR_PREFIX
from cityguard.start_checks import frames_by_reference, its_without_key, model_search, start_problems, watches_nothing
from infra import assets
from infra.backoff import backoff_delay
from infra.broker import (
    BROKER_PID_FILE_ENV,
    BrokerMemoryWatch,
    EmbeddedBroker,
    configured_or_embedded,
    free_port,
    port_free,
)
from infra.kafka import create_topics, make_consumer, reset_positions_past_the_end
from infra.listeners import http_url
from infra.process import child_preexec, exit_description, terminate
from processors.inference.backends.registry import download_settings_model
from schemas import (
    PERSON_CLASS_ID,
    CameraState,
    CameraStatus,
    Detections,
    RiskLevel,
    SchemaError,
    ZoneMetrics,
    decode,
)
from schemas.settings.config import Config, ConfigError
from sinks.console.server import console_token
from sinks.topic_reading import zone_stale_after_s

MEMORY_CHECK_INTERVAL_S = 10.0
RESTART_INITIAL_S, RESTART_MAX_S = 1.0, 30.0  # back-off before restarting a stage that exited; doubles per restart
STABLE_AFTER_S = 60.0  # a stage that ran this long starts its back-off again from RESTART_INITIAL_S
BROKER = "embedded broker"

# Stage name -> its cityguard subcommand, in start order (sinks first, the producer last).
STAGES = {
    "alerts": ["alerts", "dispatch"],
    "export-metrics": ["export-metrics"],
    "console": ["console"],
    "analyze": ["analyze"],
    "infer": ["infer"],
    "produce": ["produce"],
}


REASON_SHOWN_CHARS = 160  # of a camera's reason on its status line: one line, whatever the topic carried


def printable(text: str, limit: int) -> str:
    """The text on one terminal line: control characters (a newline, an escape sequence) as '?', cut at `limit`."""
    text = "".join("?" if not char.isprintable() else char for char in text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def zone_count(metrics: ZoneMetrics) -> str:
    """A zone window's count as the status line says it. An unreliable count is no measure of the crowd (a frozen
    picture counts no one; without a fresh density map the detector's count is only a floor): printed as a density,
    beside a level held or proved some other way, it would read as a calm zone at danger."""
    if metrics.count_reliable:
        return f"{metrics.people_mean:.1f} people, {metrics.density_mean_per_m2:.3f} p/m²"
    if not metrics.people_mean:
        return "count unreliable"
    return f"at least {metrics.people_mean:.1f} people (count unreliable)"


@dataclass
class CameraStatusLine:
    """What the live status line shows for one camera, from the detections, zone-metrics and camera-status topics."""

    seen_at: deque = field(default_factory=lambda: deque(maxlen=200))
    people: int = 0
    zones: dict[str, ZoneMetrics] = field(default_factory=dict)
    camera: CameraStatus | None = None  # as its producer last reported it

    def fps(self, now: float) -> float:
        return len([t for t in self.seen_at if now - t <= 5.0]) / 5.0

    def fresh_zones(self, now: float, stale_after_s: float) -> list[ZoneMetrics]:
        """The last windows of the zones whose windows have not stopped: one older than `stale_after_s` is stale."""
        return [m for m in self.zones.values() if now - m.window_end <= stale_after_s]

    def zone_levels(self, now: float, stale_after_s: float) -> list[RiskLevel]:
        """Each zone's level as the metrics say it: unknown once its windows stopped `stale_after_s` ago."""
        fresh = self.fresh_zones(now, stale_after_s)
        return [m.risk_level for m in fresh] + [RiskLevel.UNKNOWN] * (len(self.zones) - len(fresh))

    def camera_fault(self, now: float, report_silence_s: float) -> str | None:
        """The camera's state and reason where it is not up ('down' once its producer is silent), else None."""
        camera = self.camera
        if camera is not None and now - camera.at > report_silence_s:
            return f"{CameraState.DOWN.value}: no report from the producer for {now - camera.at:.0f} s"
        if camera is None or camera.state is CameraState.UP:
            return None
        return f"{camera.state.value}: {printable(camera.reason, REASON_SHOWN_CHARS)}"

    def concern(self, now: float, stale_after_s: float, report_silence_s: float) -> int:
        """How much the camera needs an operator's eye, 0 for none: a zone at caution or above by its level (2 to 8),
        the camera not up (5: above a zone at warning, below one at danger), a zone whose level is unknown (3: its
        windows stopped, or its count cannot be trusted)."""
        levels = self.zone_levels(now, stale_after_s)
        return max([2 * level.rank for level in levels if level.rank >= 1]
                   + [5] * (self.camera_fault(now, report_silence_s) is not None)
                   + [3] * (RiskLevel.UNKNOWN in levels), default=0)

    def render(self, camera_id: str, now: float, stale_after_s: float, zoned: bool = True,
               report_silence_s: float = math.inf) -> str:
        """The line; a zone whose windows stopped `stale_after_s` ago reads unknown, as the metrics say, never its
        last level, and a camera whose producer has not reported for `report_silence_s` reads down, as the console
        says, never its last state."""
        fps = self.fps(now)
        fresh = self.fresh_zones(now, stale_after_s)
        stale = [m for m in self.zones.values() if m not in fresh]
        parts = []
        if fresh:
            worst = max(fresh, key=lambda m: (m.risk_level.rank, m.density_mean_per_m2))
            parts.append(f"zone {worst.zone_id}: {zone_count(worst)}, risk {worst.risk_level.value}")
        if stale:
            oldest = min(stale, key=lambda m: m.window_end)
            parts.append(f"zone {oldest.zone_id}: no window for {now - oldest.window_end:.0f} s, risk unknown")
        if not zoned:
            zone_text = "no zones"
        elif not self.zones:
            zone_text = "zones: waiting for the first window"
        else:
            zone_text = " | ".join(parts)
        fault = self.camera_fault(now, report_silence_s)
        if fault is None and not self.seen_at:  # starting: more telling than a row of zeros while models load
            waiting = "no report from its producer yet" if self.camera is None else "frames sent, no detections yet"
            return f"[{camera_id}] {waiting} | {zone_text}"
        state = "" if fault is None else f"{fault} | "
        return f"[{camera_id}] {state}{fps:4.1f} fps | {self.people:2d} people in frame | {zone_text}"


# A site with more cameras gets one summary line and the lines of the cameras that need attention, worst first, at
# most this many: a line per camera every two seconds would scroll a city's worth past unread.
SHOWN_CAMERAS = 10


def status_block(cameras: list[str], lines: dict[str, CameraStatusLine], now: float, stale_after_s: float,
                 zoned: set[str], report_silence_s: float) -> list[str]:
    """What `up` prints every two seconds for the site's `cameras`: the line of each camera heard of (`lines`), or
    for more than SHOWN_CAMERAS a summary and the lines of those needing attention (CameraStatusLine.concern)."""
    def line(camera_id: str) -> str:
        return lines[camera_id].render(camera_id, now, stale_after_s, camera_id in zoned, report_silence_s)

    if len(cameras) <= SHOWN_CAMERAS:
        return [line(camera_id) for camera_id in sorted(lines)]
    concerns = {camera_id: status.concern(now, stale_after_s, report_silence_s) for camera_id, status in lines.items()}
    flagged = sorted((camera_id for camera_id, concern in concerns.items() if concern),
                     key=lambda camera_id: (-concerns[camera_id], camera_id))
    reported = [status for status in lines.values() if status.camera is not None]
    faults = sum(status.camera_fault(now, report_silence_s) is not None for status in reported)
    levels = [level for status in lines.values() for level in status.zone_levels(now, stale_after_s)]
    by_level = ", ".join(f"{levels.count(level)} {level.value}" for level in reversed(RiskLevel) if level in levels)
    fps = sum(status.fps(now) for status in lines.values())
    summary = (f"[{len(cameras)} cameras] {len(reported) - faults} up, {faults} not up, "
               f"{len(cameras) - len(reported)} not reported yet | {fps:.1f} fps in all | "
               f"zones: {by_level or 'waiting for the first windows'} | {len(flagged)} need attention")
    shown = [line(camera_id) for camera_id in flagged[:SHOWN_CAMERAS]]
    more = len(flagged) - len(shown)
    return [summary, *shown] + [f"... and {more} more needing attention (the console shows every camera)"] * bool(more)


def console_access(config: Config) -> tuple[str, list[str], str]:
    """(line to print, console arguments, token): the port is fixed here so the URL can be printed, and a token made
    up here (when none is configured, on loopback only) reaches the console through its environment, never a log
    file."""
    settings = config.console
    token, generated = console_token(config, settings.host)
    port = settings.port or free_port(settings.host)
    shown = f"?token={token}" if generated else f" (token in ${settings.token_env})"
    return f"console: {http_url(settings.host, port)}{shown}", ["--port", str(port)], token


def metrics_ports(config: Config) -> dict[str, int]:
    """Stage -> the port its metrics listen on: a free one fixed here where the site leaves it to the system (0), so
    the URL printed is the one it listens on, and a restarted stage listens where it did."""
    metrics = config.metrics
    configured = {"export-metrics": metrics.exporter_port, "analyze": metrics.analytics_port,
                  "infer": metrics.inference_port, "produce": metrics.producer_port}
    return {stage: port or free_port(metrics.host) for stage, port in configured.items()}


def metrics_line(config: Config, ports: dict[str, int], receiver_port: int) -> str:
    return (f"metrics: {http_url(config.metrics.host, ports['export-metrics'], '/metrics')} (zones, detections), "
            f":{ports['infer']} (inference), :{ports['analyze']} (analytics), :{ports['produce']} (producer), "
            f":{receiver_port} (alert dispatcher, Alertmanager webhook)")


def refuse_busy_ports(config: Config) -> None:
    """ConfigError naming every fixed port the stages would listen on that something holds already (another `up`):
    its stages would fail to start and be restarted for ever."""
    metrics, console, receiver = config.metrics, config.console, config.alerting.receiver
    listeners = [("metrics sink", metrics.host, metrics.exporter_port, "metrics.exporter_port"),
                 ("producer metrics", metrics.host, metrics.producer_port, "metrics.producer_port"),
                 ("inference metrics", metrics.host, metrics.inference_port, "metrics.inference_port"),
                 ("analytics metrics", metrics.host, metrics.analytics_port, "metrics.analytics_port"),
                 ("console", console.host, console.port, "console.port"),
                 ("Alertmanager receiver", receiver.host, receiver.port, "alerting.receiver.port")]
    settings_by_port = defaultdict(list)
    for _, _, port, setting in listeners:
        if port:
            settings_by_port[port].append(setting)
    shared = [f"{port} ({', '.join(settings)})" for port, settings in sorted(settings_by_port.items())
              if len(settings) > 1]
    if shared:  # two stages would fight over it and be restarted for ever
        raise ConfigError("one port for two listeners: " + "; ".join(shared))
    busy = [f"{what} {host}:{port} ({setting})" for what, host, port, setting in listeners
            if port and not port_free(host, port)]
    if busy:
        raise ConfigError(f"in use: {'; '.join(busy)}: another cityguard up, or another program, listens there "
                          "(0 picks a free port)")


def frames_line(config: Config) -> str:
    settings = config.producer
    return (f"frames: by reference, each kept {settings.frame_store_ttl_s:g} s in "
            f"{config.resolve_path(settings.frame_store_dir)} (producer.max_message_bytes in the site file sends them "
            "in the messages)")


def spawn(stage: str, config_path: Path, env: dict, log_dir: Path, *stage_args: str,
          interpreter_args: tuple[str, ...] = ()) -> subprocess.Popen:
    """Starts a stage process; `interpreter_args` go to Python before the module (e.g. a profiler's)."""
    log_file = open(log_dir / f"{stage}.log", "ab")
    try:
        return subprocess.Popen(
            # -P: `python -m` would put the working directory ahead of the installed packages, and a file there
            # named like a module the stages import (twilio.py, yaml.py) would run in every stage in its place.
            [sys.executable, "-P", *interpreter_args, "-m", "cityguard", *STAGES[stage], "--config",
             str(config_path), *stage_args],
            env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=child_preexec,
            start_new_session=True,  # Ctrl-C reaches only `up`, which stops the stages in order
        )
    finally:
        log_file.close()


def stage_environment(servers: str, log_level: str, debug: bool) -> dict[str, str]:
    """The stages' environment: this one's, the broker's address, and `up`'s own --log-level and --debug, options of
    `cityguard` that a stage's command line does not carry."""
    return {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": servers, "PYTHONUNBUFFERED": "1", "CITYGUARD_LOG_LEVEL": log_level,
            "CITYGUARD_DEBUG": "1" if debug else "0"}


def stop_children(children: dict[str, subprocess.Popen], timeout_s: float = 10) -> None:
    for stage in reversed(list(children)):
        terminate(children[stage], timeout_s)


@dataclass
class Restarts:
    """One stage's restart schedule: doubling back-off, forgotten once the stage has run for STABLE_AFTER_S."""

    count: int = 0
    due_at: float | None = None
    started_at: float = field(default_factory=time.monotonic)

    def schedule(self, now: float) -> float:
        """Counts one more restart and makes the next due after its back-off; returns the back-off in seconds."""
        self.count += 1
        delay = backoff_delay(self.count, RESTART_INITIAL_S, RESTART_MAX_S)
        self.due_at = now + delay
        return delay


class StageRefused(ConfigError):
    """A stage exited with status 2, a mistake in what it was given: starting it again would only repeat it."""


def last_line(log: Path) -> str:
    """The last line a stage wrote to its log (its error), or '' when there is none."""
    try:
        with log.open("rb") as handle:
            handle.seek(max(0, log.stat().st_size - 4096))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


class Supervisor:
    """Keeps every stage (and an embedded broker) running: one that exits is started again after a back-off, so a
    crash or a broker restart costs that stage seconds instead of stopping the pipeline. A producer that exits 0
    has finished its (file) sources and stays stopped, said once (stopped by a signal, it exits 128 + the signal's
    number, and is started again); a stage that exits 2 refused what it was given, and stops
    everything (StageRefused, naming its log's last line)."""

    def __init__(self, children: dict[str, subprocess.Popen], start_stage: Callable[[str], subprocess.Popen],
                 broker: EmbeddedBroker | None = None, restart_broker: Callable[[], bool] | None = None,
                 log_dir: Path | None = None):
        self.children, self.start_stage = children, start_stage
        self.broker, self.restart_broker = broker, restart_broker
        self.log_dir = log_dir
        self.restarts: dict[str, Restarts] = defaultdict(Restarts)
        self.finished: set[str] = set()  # stages that exited 0 for good, reported once

    def check(self, now: float) -> None:
        if self.broker is not None:
            self.keep(BROKER, self.broker.process, now, self.restart_broker)
        for stage, process in list(self.children.items()):
            if stage == "produce" and process.poll() == 0:
                if stage not in self.finished:
                    self.finished.add(stage)
                    print(f"{stage} finished: every source it reads has ended (files played to their end, or missing); "
                          "not restarted", flush=True)
                continue
            if process.poll() == 2:
                log = self.log_dir / f"{stage}.log" if self.log_dir else None
                said = last_line(log) if log else ""
                raise StageRefused(f"{stage} exited with status 2, refusing what it was given"
                                   + (f": {said.removeprefix(ERROR_PREFIX)}" if said else "")
                                   + (f" (its log: {log})" if log else ""))
            self.keep(stage, process, now, lambda stage=stage: self.restart_stage(stage))

    def restart_stage(self, stage: str) -> bool:
        self.children[stage] = self.start_stage(stage)
        return True

    def error_of(self, stage: str) -> str:
        """The one-line error the stage ended its log with, as " (why)", or "": the terminal says why a stage keeps
        exiting (a download that fails, a file it cannot read) instead of only that it does."""
        said = last_line(self.log_dir / f"{stage}.log") if self.log_dir and stage in self.children else ""
        return f" ({said.removeprefix(ERROR_PREFIX)})" if said.startswith(ERROR_PREFIX) else ""

    def keep(self, name: str, process: subprocess.Popen, now: float, start: Callable[[], bool]) -> None:
        """`start` says whether it started the process; one that did not is tried again after the next back-off."""
        restarts = self.restarts[name]
        if process.poll() is None:
            if restarts.count and now - restarts.started_at >= STABLE_AFTER_S:
                restarts.count = 0
            return
        if restarts.due_at is None:
            delay = restarts.schedule(now)
            print(f"{name} {exit_description(process.returncode)}{self.error_of(name)}; restarting it in {delay:g} s "
                  f"(restart {restarts.count}, see its log)", flush=True)
        elif now >= restarts.due_at:
            if not start():
                delay = restarts.schedule(now)
                print(f"{name} did not start; trying again in {delay:g} s (try {restarts.count})", flush=True)
                return
            restarts.due_at, restarts.started_at = None, now
            print(f"{name} restarted", flush=True)


def restart_embedded_broker(broker: EmbeddedBroker, pid_file: Path, config: Config) -> bool:
    """Starts the embedded broker again on its port (the stages' clients reconnect to it) with every topic; says
    whether it did. One that cannot start or take the topics is left stopped, for the supervisor to try again after
    its back-off: `up` goes on supervising the stages meanwhile."""
    try:
        broker.start()
        pid_file.write_text(str(broker.process.pid), encoding="ascii")
        create_topics(broker.bootstrap_servers, config.broker.topics.all(), config.broker.partitions)
    except (RuntimeError, OSError, KafkaError) as exc:
        broker.stop(timeout_s=0)
        print(f"warning: the embedded broker did not come back: {exc}", flush=True)
        return False
    print("warning: the embedded broker restarted empty: every topic, message and offset before it is gone",
          flush=True)
    return True


def fetch_assets(config: Config) -> None:
    """Fetches what the stages will read (the cameras' asset sources into the cache, and the model the settings name,
    unless a model registry's version serves instead) before any stage starts: a download that fails stops `up` with
    its one line, where each stage would fail on it at every restart."""
    for source in dict.fromkeys(camera.source for camera in config.cameras):
        assets.resolve(source)
    _, loaded = model_search(config)
    if loaded is None or loaded.version is None:
        download_settings_model(config)


def run_up(config: Config, config_path: Path, duration_s: float | None, log_dir: Path, log_level: str,
           debug: bool) -> int:
    empty = watches_nothing(config)
    if empty:
        print(f"warning: {empty}", flush=True)
    problems = start_problems(config)  # what a stage would refuse to start with: refused here, before any starts
    if problems:
        raise ConfigError(problems[0] + (f" (and {len(problems) - 1} more: cityguard check-config lists them)"
                                         if len(problems) > 1 else ""))
    unrenewable = its_without_key(config)
    if unrenewable:
        print(f"warning: {unrenewable}", flush=True)
    refuse_busy_ports(config)
    fetch_assets(config)
    console_line, console_args, token = console_access(config)  # before anything starts: it can refuse the host
    receiver = config.alerting.receiver
    receiver_port = receiver.port or free_port(receiver.host)  # fixed here: the port printed is the one it listens on
    ports = metrics_ports(config)
    stage_args = {"console": console_args, "alerts": ["--port", str(receiver_port)],
                  **{stage: ["--metrics-port", str(port)] for stage, port in ports.items()}}
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
    with configured_or_embedded(config, log_dir / "broker.log") as (servers, broker):
        print(f"broker: {servers}" + ("" if broker is None else " (embedded Tansu: in memory, lost on exit)"),
              flush=True)
        env = stage_environment(servers, log_level, debug)
        memory_watch, restart_broker = None, None
        if broker is not None:
            pid_file = log_dir / "broker.pid"
            pid_file.write_text(str(broker.process.pid), encoding="ascii")
            env[BROKER_PID_FILE_ENV] = str(pid_file)  # the metrics sink exports the broker's memory
            memory_watch = BrokerMemoryWatch(pid_file, config.broker.embedded_memory_warn_bytes)
            restart_broker = functools.partial(restart_embedded_broker, broker, pid_file, config)
        if frames_by_reference(config, embedded_broker=broker is not None):
            stage_args["produce"] = [*stage_args["produce"], "--frames-by-reference"]
            print(frames_line(config), flush=True)

        env[config.console.token_env] = token
        status_consumer = make_consumer(servers, None, config.broker.topics.detections,
                                        config.broker.topics.zone_metrics, config.broker.topics.camera_status,
                                        auto_offset_reset="latest")
        try:
            for stage in STAGES:
                children[stage] = spawn(stage, config_path, env, log_dir, *stage_args.get(stage, []))
            print(metrics_line(config, ports, receiver_port), flush=True)
            print(console_line, flush=True)
            print(f"logs: {log_dir}/  (Ctrl-C stops everything)", flush=True)
            supervisor = Supervisor(children, lambda stage: spawn(
                stage, config_path, env, log_dir, *stage_args.get(stage, [])),
                broker, restart_broker, log_dir)
            return watch(config, supervisor, status_consumer, duration_s, lambda: interrupted, memory_watch)
        finally:
            status_consumer.close()
            stop_children(children)
            print("stopped: all stages and the broker", flush=True)


def watch(config: Config, supervisor: Supervisor, status_consumer, duration_s: float | None,
          interrupted, memory_watch: BrokerMemoryWatch | None = None) -> int:
    started = time.monotonic()
    lines: dict[str, CameraStatusLine] = defaultdict(CameraStatusLine)
    stale_after_s = zone_stale_after_s(config.analytics.window_seconds)  # as the metrics sink judges it
    cameras = [camera.id for camera in config.cameras]
    zoned = {camera.id for camera in config.cameras if camera.zones}
    report_silence_s = config.producer.report_silence_s()  # as the console judges it
    last_print = last_memory_check = -math.inf
    while not interrupted():
        if memory_watch is not None and time.monotonic() - last_memory_check >= MEMORY_CHECK_INTERVAL_S:
            warning = memory_watch.check()
            if warning:
                print(f"warning: {warning}", flush=True)
            last_memory_check = time.monotonic()
        if duration_s is not None and time.monotonic() - started >= duration_s:
            return 0
        supervisor.check(time.monotonic())
        try:
            batches = status_consumer.poll(timeout_ms=500)
        except KafkaError:  # the broker is away; the status line waits for it like the stages do
            time.sleep(0.5)
            continue
        for records in batches.values():
            for record in records:
                absorb(record, config, lines)
        reset_positions_past_the_end(status_consumer, "up-status")  # topics recreated by a broker restart
        now = time.time()
        if now - last_print >= 2 and lines:
            print("\n".join(status_block(cameras, lines, now, stale_after_s, zoned, report_silence_s)), flush=True)
            last_print = now
    return 0


def absorb(record, config: Config, lines: dict[str, CameraStatusLine]) -> None:
    """One detections, zone-metrics or camera-status message into the status lines; the site's cameras only: a
    message naming another (a forged one, a camera removed from the site) would add a line for the rest of the run."""
    configured = {camera.id: {zone.id for zone in camera.zones} for camera in config.cameras}
    try:
        if record.topic == config.broker.topics.camera_status:
            status = decode(record.value, CameraStatus)
            if status.camera_id in configured:
                lines[status.camera_id].camera = status
        elif record.topic == config.broker.topics.detections:
            detections = decode(record.value, Detections)
            if detections.camera_id not in configured:
                return
            line = lines[detections.camera_id]
            line.seen_at.append(time.time())
            line.people = int(detections.class_mask(PERSON_CLASS_ID).sum())
        else:
            metrics = decode(record.value, ZoneMetrics)
            # A window dated ahead of this clock (a camera's clock running fast) counts as ending now: it must not
            # keep a later real window off the line, nor keep the zone fresh once its windows stop.
            metrics = metrics.model_copy(update={"window_end": min(metrics.window_end, time.time())})
            if metrics.zone_id not in configured.get(metrics.camera_id, ()):
                return
            zones = lines[metrics.camera_id].zones
            shown = zones.get(metrics.zone_id)
            if shown is None or metrics.window_end >= shown.window_end:  # a window sent again is not news
                zones[metrics.zone_id] = metrics
    except SchemaError:
        pass  # the stages dead-letter bad messages; the status line just skips them

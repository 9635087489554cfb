"""Each pipeline stage as a function that builds its adapters from the configuration and runs until stopped.

This is the composition root for one stage process; `cityguard.up` starts several of these as child processes.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

from infra.broker import EmbeddedBroker
from infra.kafka import broker_reachable, create_topics, make_consumer, make_producer, partition_counts
from infra.listeners import http_url
from infra.metrics_http import start_metrics_server
from infra.process import exit_description
from infra.redaction import redacted, shown
from schemas.settings.config import Config, ConfigError

log = logging.getLogger(__name__)


BROKER_WAIT_S = 30.0  # how long a stage waits at start for a broker that is not up yet


def wait_for_broker(servers: str, timeout_s: float) -> bool:
    """Whether a broker answers at `servers` within `timeout_s`, trying every 2 s."""
    deadline = time.monotonic() + timeout_s
    while not broker_reachable(servers, timeout_s=2):
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
    return True


def require_bootstrap(config: Config) -> str:
    servers = config.bootstrap_servers()
    if not servers:
        raise ConfigError("no broker configured: set KAFKA_BOOTSTRAP_SERVERS (or broker.bootstrap_servers), "
                         "or start everything with `cityguard up`")
    return servers


def require_broker(config: Config) -> str:
    """The configured broker's address once it answers: a stage started before its broker waits for it, and one that
    never answers is an error in one line, not a Kafka client's retries logged at length."""
    servers = require_bootstrap(config)
    if not wait_for_broker(servers, BROKER_WAIT_S):
        raise RuntimeError(f"no Kafka broker answers at {servers} (waited {BROKER_WAIT_S:g} s): start it first "
                           "(cityguard broker, or cityguard up for everything)")
    return servers


class StopSignal(threading.Event):
    """Set by SIGINT or SIGTERM; `signum` says which (None: not set by a signal)."""

    signum: int | None = None

    def received(self, signum: int, _frame=None) -> None:
        self.signum = signum
        self.set()


def stop_on_signals() -> StopSignal:
    stop = StopSignal()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop.received)
    return stop


def open_store(config: Config):
    """The incident store (the alert dispatcher, the console and the operator commands share it)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    from sinks.alerts.store import IncidentStore, checked_store_url, resolve_store_url

    url, where = checked_store_url(config.alerting)
    resolved = resolve_store_url(url, config.base_dir)
    database = make_url(resolved).database if resolved.startswith("sqlite") else None
    if database and Path(database).is_dir():  # no restart opens a folder: a mistake in the setting
        raise ConfigError(f"{where}: {database} is a folder, not a database file")
    try:
        return IncidentStore(resolved)
    except OperationalError as exc:
        reason = (redacted(str(exc.orig)).strip().splitlines() or [type(exc.orig).__name__])[0]
        raise RuntimeError(f"{where}: cannot open {shown(url)}: {reason}") from None


def serve_metrics(config: Config, port: int, stage: str) -> int:
    try:
        server = start_metrics_server(config.metrics.host, port)
    except OSError as exc:  # a second worker on one machine: each needs its own port
        raise ConfigError(f"{stage} metrics: cannot listen on {config.metrics.host}:{port} ({exc.strerror}): give this "
                          f"process another --metrics-port (or metrics.{stage}_port), 0 for any free one") from None
    actual = server.server_port
    log.info("%s metrics on http://%s:%d/metrics", stage, config.metrics.host, actual)
    print(f"{stage} metrics: {http_url(config.metrics.host, actual, '/metrics')}", flush=True)
    return actual


def run_broker(config: Config, port: int) -> None:
    broker = EmbeddedBroker(port or config.broker.embedded_port).start()
    try:
        create_topics(broker.bootstrap_servers, config.broker.topics.all(), config.broker.partitions)
        print(f"KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers}", flush=True)
        stop = stop_on_signals()
        while not stop.wait(1):
            if broker.process.poll() is not None:
                raise SystemExit(f"broker {exit_description(broker.process.returncode)}")
    finally:
        broker.stop()


def run_produce(config: Config, camera_ids: list[str] | None, max_frames: int | None, realtime: bool,
                metrics_port: int | None, frames_by_reference: bool = False) -> None:
    from producers.frame_producer import configure_reader_process, frame_client, run_producer

    unknown = sorted(set(camera_ids or ()) - {camera.id for camera in config.cameras})
    if unknown:  # a typo would otherwise start a producer with nothing to read
        raise ConfigError(f"--camera names cameras that are not configured: {', '.join(unknown)} "
                          f"(known: {', '.join(camera.id for camera in config.cameras) or 'none'})")
    configure_reader_process()
    servers = require_bootstrap(config)
    serve_metrics(config, config.metrics.producer_port if metrics_port is None else metrics_port, "producer")
    producer = frame_client(servers, config.producer)
    stop = stop_on_signals()
    try:
        sent = run_producer(config, producer, stop, realtime, max_frames, camera_ids,
                            frames_by_reference=frames_by_reference)
        log.info("producer done: %s", sent)
    finally:
        producer.close()
    if stop.signum is not None:
        # Exit 0 says every source ended (files played to their end), which a supervisor leaves stopped; stopped from
        # outside, the producer says so as a shell reports a process that a signal ended, so `up` starts it again.
        raise SystemExit(128 + stop.signum)


def tiled_detector(config: Config, detector):
    """`detector` wrapped in the configured tiling (slices, overlap, NMS merge)."""
    from processors.inference.tiling import TiledDetector

    tiling = config.model.tiling
    return TiledDetector(detector, tiling.tile_size, tiling.overlap, config.model.iou, tiling.whole_frame_pass)


def camera_detectors(config: Config, detector, version: str | None):
    """`detector` (of the registry `version`, None: the configured model) as the stage runs it: tiled for the
    cameras configured so, with the configured thresholds."""
    from processors.inference.stage import CameraDetectors

    tiled_cameras = config.model.tiling.cameras
    tiled = tiled_detector(config, detector) if tiled_cameras else None
    return CameraDetectors(detector, tiled, frozenset(tiled_cameras), config.model.confidence,
                           config.model.class_confidence, version)


def version_detectors(config: Config, model):
    """The detectors of the registry version `model` (a ModelVersion), newly promoted."""
    from processors.inference.backends.registry import version_detector

    return camera_detectors(config, version_detector(config, model), model.version)


def model_swapper(config: Config):
    """A swapper that follows the registry's serving pointer, or None without a registry. The pointer is read here,
    so that a damaged one is named before the stage takes its port."""
    from processors.inference.model_registry import ModelRegistry, ServingWatcher
    from processors.inference.model_swap import ModelSwapper

    if config.model.registry is None:
        return None
    watcher = ServingWatcher(ModelRegistry(Path(config.resolve_path(config.model.registry))))
    serving = watcher.current()
    log.info("model registry %s: serving %s", watcher.registry.root, serving.version if serving else "none yet")
    return ModelSwapper(watcher, lambda model: version_detectors(config, model))


def serving_detectors(config: Config, swapper=None):
    """The detectors of the model the inference stage serves here (load_served_model: the registry's serving version
    where there is one, else the configured model), for the stage, which tells its `swapper` (model_swapper), and
    for the commands that measure or replay what the site runs.

    A serving version that does not load (its weights damaged since it was promoted) is not the end of the worker: it
    would leave every camera of its partitions without detections. The worker serves the newest version before it in
    the promotion history that loads (else the configured model), as a running worker keeps its model when a newly
    promoted one fails to load, and tries the serving version again after the same doubling pause."""
    from processors.inference.backends.registry import load_served_model

    served = load_served_model(config)
    version = served.version.version if served.version else None
    retry = ""
    if swapper is not None:
        if served.not_loaded:
            retry = f" (next try in {swapper.watcher.failed(served.not_loaded[0][0].version):.0f} s)"
        swapper.watcher.loaded(version)
    if served.not_loaded:
        serving, failure = served.not_loaded[0]
        log.error("model %s could not be loaded (%s: %s); serving %s until it does%s", serving.version,
                  type(failure).__name__, failure, version or "the configured model", retry)
    return camera_detectors(config, served.detector, version)


def build_trackers(config: Config):
    from processors.inference.tracking import TrackerPool

    if not config.model.tracking.enabled:
        return None
    return TrackerPool(config.model.tracking, {camera.id: camera.fps for camera in config.cameras})


def build_static_blobs(config: Config):
    """The background model of every camera with a traffic scene, or None when there is none."""
    from processors.inference.static_blobs import StaticBlobPool

    traffic_cameras = {camera.id for camera in config.cameras if camera.scene is not None}
    return StaticBlobPool(traffic_cameras) if traffic_cameras else None


def build_density_counter(config: Config):
    """The crowd density-map model, when enabled and some camera has crowd zones; else None."""
    from processors.inference.density_map import DensityMapCounter

    zone_cameras = any(camera.zones for camera in config.cameras)
    return DensityMapCounter.from_config(config) if config.analytics.density_model.enabled and zone_cameras else None


def run_infer(config: Config, metrics_port: int | None) -> None:
    from infra.frame_client import FrameConsumer
    from processors.inference.stage import InferenceWorker
    from producers.frame_store import open_frame_store

    require_bootstrap(config)
    stop = stop_on_signals()
    swapper = model_swapper(config)
    serve_metrics(config, config.metrics.inference_port if metrics_port is None else metrics_port, "inference")
    # After the port: a taken one is named before the model loads.
    detectors = serving_detectors(config, swapper)
    servers = require_broker(config)  # after what the site gives is checked: a mistake there is named first
    group = config.group_id("inference")
    consumer = FrameConsumer(servers, group, config.broker.topics.frames)
    producer = make_producer(servers)
    try:
        InferenceWorker(config, consumer, producer, detectors, group, build_trackers(config),
                        build_static_blobs(config), resolve_frame=open_frame_store(config).resolve,
                        density_counter=build_density_counter(config), model_swapper=swapper).run(stop)
    finally:
        producer.flush()
        consumer.close()
        producer.close()


def run_analyze(config: Config, loglevel: str, metrics_port: int | None) -> None:
    from threadpoolctl import threadpool_limits

    from processors.analytics.stage import partition_problem, run_worker, state_changelog

    # The analyzers' matrices are small (a zone's ground grid): BLAS threads cost more in hand-offs than they save,
    # and spin on cores the other workers need. Analytics scales by worker processes instead.
    threadpool_limits(1)
    require_bootstrap(config)
    serve_metrics(config, config.metrics.analytics_port if metrics_port is None else metrics_port, "analytics")
    servers = require_broker(config)  # faust would end at once with a traceback
    problem = partition_problem(config, partition_counts(servers, [config.broker.topics.detections,
                                                                   state_changelog(config)]))
    if problem:
        raise ConfigError(problem)
    run_worker(config, servers, loglevel)


def run_export_metrics(config: Config, metrics_port: int | None) -> None:
    from sinks.metrics_exporter import MetricsSink

    require_bootstrap(config)
    topics = config.broker.topics
    serve_metrics(config, config.metrics.exporter_port if metrics_port is None else metrics_port, "exporter")
    servers = require_broker(config)  # after what the site gives is checked: a mistake there is named first
    consumer = make_consumer(servers, config.group_id("metrics-sink"), topics.detections, topics.zone_metrics,
                             topics.events, topics.line_counts, topics.dead_letter, enable_auto_commit=True)
    readers = {}
    recovery = None
    try:
        # The analytics stage (faust) exports no consumer lag of its own, and a dispatcher falling behind delays every
        # SMS: each group's committed offsets are read by a consumer of its own.
        for stage, topic in (("analytics", topics.detections), ("alerts", topics.events)):
            readers[config.group_id(stage)] = (topic, make_consumer(servers, config.group_id(stage)))
        # Reads back the incidents opened before this sink took a partition, which it would otherwise report closed.
        recovery = make_consumer(servers, None)
        MetricsSink(config, consumer, readers, recovery).run(stop_on_signals())
    finally:
        consumer.close(timeout_ms=5000)  # its last commit: bounded, so a broker already gone does not hold a stop
        for reader in (*(reader for _, reader in readers.values()), *([recovery] if recovery is not None else [])):
            reader.close(autocommit=False)

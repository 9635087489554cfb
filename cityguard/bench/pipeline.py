"""`cityguard bench pipeline`: one clip through the whole pipeline on a fresh embedded broker, and the same model in a
bare loop on the same frames, in one run.

What runs: a private Tansu broker, then `cityguard export-metrics | analyze | infer` as child processes (as
`cityguard up` starts them), two warm-up frames, then `cityguard produce` replaying one camera. The bench itself
reads the frames, detections, zone-metrics and events topics without a consumer group and notes when each message
became readable (its receive time). All processes share this machine's clock.

Definitions (printed and written to --json):
- frames/s per stage: frames the stage output (produce: frames, infer: detections, analyze: frames between the last
  frames of its first and last zone-metrics windows) divided by the time between its first and last output. A stage
  never outruns the one feeding it, so with a paced (realtime) producer every stage shows the camera rate; use
  --no-realtime to see the capacity of the slowest stage.
- origin of a frame: its Frame.captured_at when the producer is paced like a camera (realtime); with --no-realtime
  the producer stamps media-timeline times, not clock readings, so the origin is when the frame became readable on
  the frames topic (latency then leaves out the capture and JPEG encode, a few milliseconds).
- latency to detections: receive time of a frame's detections minus the frame's origin.
- latency to zone metrics: receive time of a window's metrics minus the origin of the frame that closed the window
  (the camera's first frame after the window's last_seq). Windows close on the next frame, not on the clock, so this
  is the pipeline's delay, without the wait for the window to end.
- latency to events: receive time of an event message minus the origin of the camera's first frame captured at or
  after the event's updated_at (the frame whose analysis produced it).
- consumer lag: per group, the summed high-watermark minus committed offset over its partitions, sampled every
  0.5 s (max, mean, final).
- peak memory: highest resident set size of each process, sampled every 0.5 s with psutil.
- bare loop: the model the inference stage serves (processors.inference.backends.registry.load_served_model: the
  model registry's serving version where the site has one, else the configured model) over the same sampled frames
  after the same JPEG round trip, batches of model.max_batch_size, after one untimed warm-up batch; frames/s =
  frames / time inside detect. ratio = infer frames/s / bare-loop frames/s. Model milliseconds per frame
  (ultralytics' own inference time) are compared too.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import psutil
import yaml
from kafka import TopicPartition

from cityguard.arguments import COUNT, POSITIVE
from cityguard.bench import BACKLOG_MODEL_SETTINGS
from cityguard.up import spawn, stop_children
from infra import assets
from infra.broker import EmbeddedBroker
from infra.kafka import create_topics, make_consumer, make_producer
from infra.process import exit_description
from schemas import Detections, Event, Frame, SchemaError, ZoneMetrics, decode, encode
from schemas.settings.config import CameraConfig, Config, load_config

SAMPLE_INTERVAL_S = 0.5
WARM_UP_SEQS = (0, 1)  # below any producer sequence number (those start at the start time in microseconds)
CONSUMER_STAGES = ("export-metrics", "analyze", "infer")  # started before the producer, consumers first


def add_arguments(parser) -> None:
    parser.add_argument("--camera", default=None, help="configured camera to replay (default: the first)")
    parser.add_argument("--video", type=Path, default=None,
                        help="clip to replay instead of the camera's source (needed when the camera is live)")
    parser.add_argument("--frames", type=COUNT, default=None, help="stop after this many frames")
    parser.add_argument("--duration", type=POSITIVE, default=None, help="stop producing after this many seconds")
    parser.add_argument("--no-realtime", action="store_true",
                        help="replay as fast as possible (capacity) instead of at the camera's pace (latency)")
    parser.add_argument("--window-seconds", type=float, default=None,
                        help="analytics window for this run (default: the configured one); shorter windows give "
                             "more zone-metrics latency samples")
    parser.add_argument("--drain-timeout", type=float, default=120,
                        help="seconds to wait for the pipeline to finish the produced frames")
    parser.add_argument("--log-dir", type=Path, default=Path("var/bench"), help="stage logs go here")
    parser.add_argument("--json", type=Path, default=None, help="write every figure to this JSON file")


@dataclass
class Observed:
    """What the bench saw on the topics, with receive times (unix seconds)."""

    camera_id: str
    realtime: bool
    frame_seqs: list[int] = field(default_factory=list)  # ascending: one camera, one partition, in order
    frame_captured_at: dict[int, float] = field(default_factory=dict)
    frame_received_at: dict[int, float] = field(default_factory=dict)
    frame_published_at: dict[int, float] = field(default_factory=dict)  # the producer's record timestamps
    detections_received_at: dict[int, float] = field(default_factory=dict)
    inference_ms: list[float] = field(default_factory=list)
    zone_metrics: list[tuple[ZoneMetrics, float]] = field(default_factory=list)
    events: list[tuple[Event, float]] = field(default_factory=list)
    warm_up_windows_closed: int = 0

    def absorb(self, topics, record, received_at: float) -> None:
        try:
            if record.topic == topics.frames:
                frame = decode(record.value, Frame)
                if frame.camera_id == self.camera_id and frame.seq not in WARM_UP_SEQS:
                    self.frame_seqs.append(frame.seq)
                    self.frame_captured_at[frame.seq] = frame.captured_at
                    self.frame_received_at[frame.seq] = received_at
                    self.frame_published_at[frame.seq] = record.timestamp / 1000
            elif record.topic == topics.detections:
                detections = decode(record.value, Detections)
                if detections.camera_id == self.camera_id and detections.seq not in WARM_UP_SEQS:
                    self.detections_received_at.setdefault(detections.seq, received_at)
                    self.inference_ms.append(detections.inference_ms)
            elif record.topic == topics.zone_metrics:
                metrics = decode(record.value, ZoneMetrics)
                if metrics.camera_id == self.camera_id:
                    if metrics.last_seq in WARM_UP_SEQS:
                        self.warm_up_windows_closed += 1
                    else:
                        self.zone_metrics.append((metrics, received_at))
            elif record.topic == topics.events:
                event = decode(record.value, Event)
                from_warm_up = event.evidence is not None and event.evidence.seq in WARM_UP_SEQS
                if event.camera_id == self.camera_id and not from_warm_up:
                    self.events.append((event, received_at))
        except SchemaError:
            pass  # the stages dead-letter malformed input; the bench only measures what flows

    def origin(self, seq: int) -> float:
        return self.frame_captured_at[seq] if self.realtime else self.frame_received_at[seq]

    def frame_after_seq(self, seq: int) -> int | None:
        index = bisect_right(self.frame_seqs, seq)
        return self.frame_seqs[index] if index < len(self.frame_seqs) else None

    def frame_at_or_after(self, timestamp: float) -> int | None:
        captured = [self.frame_captured_at[seq] for seq in self.frame_seqs]
        index = bisect_left(captured, timestamp)
        return self.frame_seqs[index] if index < len(self.frame_seqs) else None

    def detection_latencies(self) -> list[float]:
        return [received - self.origin(seq) for seq, received in self.detections_received_at.items()
                if seq in self.frame_captured_at]

    def zone_metrics_latencies(self) -> list[float]:
        latencies = []
        for metrics, received in self.zone_metrics:
            closing = self.frame_after_seq(metrics.last_seq)
            if closing is not None:
                latencies.append(received - self.origin(closing))
        return latencies

    def event_latencies(self) -> list[float]:
        latencies = []
        for event, received in self.events:
            trigger = self.frame_at_or_after(event.updated_at)
            if trigger is not None:
                latencies.append(received - self.origin(trigger))
        return latencies

    def all_detected(self) -> bool:
        return set(self.frame_seqs) <= set(self.detections_received_at)


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"count": len(values), "p50": float(p50), "p95": float(p95), "p99": float(p99),
            "mean": float(np.mean(values)), "max": float(np.max(values))}


def rate(count: int, first: float | None, last: float | None) -> float | None:
    """(count - 1) intervals over the span from the first to the last output; None when there is no span."""
    if count < 2 or first is None or last is None or last <= first:
        return None
    return (count - 1) / (last - first)


def stage_rates(observed: Observed) -> dict:
    # The producer's own send times: a replay publishes faster than one poll, so receive times can coincide.
    frames = sorted(observed.frame_published_at.values())
    detections = sorted(observed.detections_received_at.values())
    # One zone's windows; frames analysed between its first and last window are counted by sequence number, so
    # tumbling and hopping windows give the same figure.
    zone_id = observed.zone_metrics[0][0].zone_id if observed.zone_metrics else None
    windows = [(m.last_seq, received) for m, received in observed.zone_metrics if m.zone_id == zone_id]
    analyzed, analyze_rate = 0, None
    if len(windows) > 1:
        (first_seq, first_at), (last_seq, last_at) = windows[0], windows[-1]
        analyzed = bisect_right(observed.frame_seqs, last_seq) - bisect_right(observed.frame_seqs, first_seq)
        # From when the analyzer could start on the frames after the first window (their detections became
        # readable): windows often arrive in one poll, so their own receive times can coincide.
        next_index = bisect_right(observed.frame_seqs, first_seq)
        started_at = first_at
        if next_index < len(observed.frame_seqs):
            started_at = min(first_at, observed.detections_received_at.get(observed.frame_seqs[next_index], first_at))
        analyze_rate = analyzed / (last_at - started_at) if last_at > started_at else None
    return {
        "produce": {"frames": len(frames), "frames_per_second": rate(len(frames), *_ends(frames))},
        "infer": {"frames": len(detections), "frames_per_second": rate(len(detections), *_ends(detections))},
        "analyze": {"frames": analyzed, "windows": len(windows), "frames_per_second": analyze_rate},
    }


def _ends(times: list[float]) -> tuple[float | None, float | None]:
    return (times[0], times[-1]) if times else (None, None)


@dataclass
class LagSampler:
    """Summed lag per consumer group: the observer's fetch high-watermark minus the group's committed offset."""

    observer: object
    readers: dict[str, tuple[object, list[TopicPartition]]]
    history: dict[str, list[int]] = field(default_factory=dict)

    def sample(self) -> None:
        for group, (reader, partitions) in self.readers.items():
            total = 0
            for tp in partitions:
                highwater = self.observer.highwater(tp)
                if highwater is not None:
                    total += max(0, highwater - (reader.committed(tp) or 0))
            self.history.setdefault(group, []).append(total)

    def caught_up(self, group: str) -> bool:
        return bool(self.history.get(group)) and self.history[group][-1] == 0

    def figures(self) -> dict:
        return {group: {"max": max(values), "mean": float(np.mean(values)), "final": values[-1],
                        "samples": len(values)} for group, values in self.history.items()}


class MemorySampler:
    """Highest resident set size per named process."""

    def __init__(self):
        self.processes: dict[str, psutil.Process] = {}
        self.peak_bytes: dict[str, int] = {}

    def watch(self, name: str, pid: int) -> None:
        self.processes[name] = psutil.Process(pid)

    def sample(self) -> None:
        for name, process in self.processes.items():
            try:
                rss = process.memory_info().rss
            except psutil.Error:
                continue  # exited
            self.peak_bytes[name] = max(self.peak_bytes.get(name, 0), rss)


def bench_camera(config: Config, camera_id: str | None) -> CameraConfig:
    if not config.cameras:
        raise SystemExit("the configuration has no camera to replay")
    return config.camera(camera_id) if camera_id else config.cameras[0]


def replay_source(config: Config, camera: CameraConfig, video: Path | None) -> str:
    from producers.capture import LIVE_KINDS, source_kind

    if video is not None:
        return str(video.resolve())
    source = config.resolve_path(assets.resolve(camera.source))
    if source_kind(camera, source) in LIVE_KINDS:
        raise SystemExit(f"camera {camera.id} is live ({source}): give a clip to replay with --video")
    return source


def write_bench_config(config: Config, config_path: Path, camera: CameraConfig, source: str,
                       window_seconds: float | None) -> Path:
    """The site configuration with the camera replaying `source` once, the bench's window, free metrics ports, and
    no frame shed: the warm-up frames are dated in windows already over, and --no-realtime sends faster than the
    camera's rate.

    Written beside the original so every relative path in it still resolves; validated by loading it back.
    """
    cameras = [c.model_copy(update={"source": source, "loop": False}) if c.id == camera.id else c
               for c in config.cameras]
    updates: dict = {"cameras": cameras,
                     "model": config.model.model_copy(update=BACKLOG_MODEL_SETTINGS),
                     "metrics": config.metrics.model_copy(update={"exporter_port": 0, "producer_port": 0,
                                                                  "inference_port": 0, "analytics_port": 0})}
    if window_seconds is not None:
        updates["analytics"] = config.analytics.model_copy(update={"window_seconds": window_seconds})
    path = config_path.resolve().parent / f".bench-pipeline-{os.getpid()}.yaml"
    path.write_text(yaml.safe_dump(config.model_copy(update=updates).model_dump(mode="json"), sort_keys=False))
    try:
        load_config(path)
    except Exception:
        path.unlink()
        raise
    return path


def sampled_jpegs(config: Config, camera: CameraConfig, source: str, limit: int | None):
    """(JPEG, its Frame's size fields) of the frames the producer publishes, in order (unpaced)."""
    from producers.capture import sample_frames
    from producers.picture import encode_jpeg, source_size_fields

    replay = camera.model_copy(update={"loop": False})
    for index, sampled in enumerate(sample_frames(replay, source, realtime=False, settings=config.producer)):
        if limit is not None and index >= limit:
            return
        jpeg, width, height = encode_jpeg(sampled.picture, camera.max_width, camera.jpeg_quality)
        yield jpeg, {"width": width, "height": height, **source_size_fields(sampled.picture, width)}


def send_warm_up(servers: str, config: Config, camera: CameraConfig, source: str) -> None:
    """Two frames in consecutive, already finished windows: the first one's zone metrics prove every stage is up."""
    jpeg, size = next(sampled_jpegs(config, camera, source, 1))
    window = config.analytics.window_seconds
    first_window = (math.floor(time.time() / window) - 2) * window
    producer = make_producer(servers)
    try:
        for offset, seq in enumerate(WARM_UP_SEQS):
            frame = Frame(camera_id=camera.id, seq=seq, captured_at=first_window + offset * window + window / 2,
                          jpeg=jpeg, **size)
            producer.send(config.broker.topics.frames, key=camera.id.encode(), value=encode(frame))
        producer.flush()
    finally:
        producer.close()


def bare_loop(config: Config, camera: CameraConfig, source: str, frames: int) -> dict:
    """The model the inference stage serves alone on the frames the pipeline saw (same sampling, same JPEG round
    trip)."""
    from processors.inference.backends.registry import load_served_model

    served = load_served_model(config)
    detector = served.detector
    batch_size = config.model.max_batch_size
    jpegs = [jpeg for jpeg, _ in sampled_jpegs(config, camera, source, frames)]
    detect_s, model_ms = 0.0, []
    for first in range(0, len(jpegs), batch_size):
        batch = [cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
                 for jpeg in jpegs[first:first + batch_size]]
        if first == 0:
            detector.detect(batch)  # the first call compiles the model; the pipeline's warm-up frames did the same
        started = time.perf_counter()
        results = detector.detect(batch)
        detect_s += time.perf_counter() - started
        model_ms.extend(result.inference_ms for result in results)
    done = len(jpegs)
    return {"detector": detector.name, "model": served.described, "batch_size": batch_size, "frames": done,
            "frames_per_second": done / detect_s if detect_s else None,
            "model_ms_per_frame": float(np.mean(model_ms)) if model_ms else None}


def open_observers(servers: str, config: Config) -> tuple[object, LagSampler]:
    """A group-less reader of every measured topic from the start, and idle readers of each stage group's offsets."""
    topics = config.broker.topics
    partitions = range(config.broker.partitions)

    def assignment(*names: str) -> list[TopicPartition]:
        return [TopicPartition(name, p) for name in names for p in partitions]

    observer = make_consumer(servers, None)
    watched = assignment(topics.frames, topics.detections, topics.zone_metrics, topics.events)
    observer.assign(watched)
    observer.seek_to_beginning(*watched)
    groups = {config.group_id("inference"): assignment(topics.frames),
              config.group_id("analytics"): assignment(topics.detections),
              config.group_id("metrics-sink"): assignment(topics.detections, topics.zone_metrics)}
    readers = {group: (make_consumer(servers, group), tps) for group, tps in groups.items()}
    return observer, LagSampler(observer, readers)


class StageFailed(RuntimeError):
    pass


def run_pipeline(args, config: Config, config_path: Path, camera: CameraConfig, source: str) -> dict:
    topics = config.broker.topics
    observed = Observed(camera.id, realtime=not args.no_realtime)
    memory = MemorySampler()
    memory.watch("bench", os.getpid())
    broker = EmbeddedBroker(log_path=args.log_dir / "broker.log").start()
    children: dict[str, subprocess.Popen] = {}
    observer = lag = None
    try:
        servers = broker.bootstrap_servers
        memory.watch("broker", broker.process.pid)
        create_topics(servers, topics.all(), config.broker.partitions)
        observer, lag = open_observers(servers, config)
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": servers, "PYTHONUNBUFFERED": "1"}
        for stage in CONSUMER_STAGES:
            children[stage] = spawn(stage, config_path, env, args.log_dir)
            memory.watch(stage, children[stage].pid)
        send_warm_up(servers, config, camera, source)
        last_sample = 0.0

        def pump(timeout_ms: int = 200) -> None:
            nonlocal last_sample
            for records in observer.poll(timeout_ms=timeout_ms).values():
                received_at = time.time()
                for record in records:
                    observed.absorb(topics, record, received_at)
            if time.monotonic() - last_sample >= SAMPLE_INTERVAL_S:
                lag.sample()
                memory.sample()
                last_sample = time.monotonic()
            for stage, process in children.items():
                if stage != "produce" and process.poll() is not None:
                    raise StageFailed(f"stage {stage} {exit_description(process.returncode)}; "
                                      f"see {args.log_dir / (stage + '.log')}")

        deadline = time.monotonic() + args.drain_timeout
        while not observed.warm_up_windows_closed:
            if time.monotonic() > deadline:
                raise StageFailed(f"the stages were not up within {args.drain_timeout:.0f} s; see {args.log_dir}")
            pump()
        producer_args = ["--camera", camera.id, "--metrics-port", "0"]
        producer_args += ["--no-realtime"] if args.no_realtime else []
        producer_args += ["--max-frames", str(args.frames)] if args.frames else []
        children["produce"] = spawn("produce", config_path, env, args.log_dir, *producer_args)
        memory.watch("produce", children["produce"].pid)
        started = time.monotonic()
        finished_at = None
        while True:
            pump()
            producer = children["produce"]
            if args.duration and producer.poll() is None and time.monotonic() - started >= args.duration:
                stop_children({"produce": producer})
            if producer.poll() is None:
                continue
            if finished_at is None:
                if producer.returncode not in (0, -signal.SIGTERM, 128 + signal.SIGTERM):
                    raise StageFailed(f"the producer {exit_description(producer.returncode)}; "
                                      f"see {args.log_dir / 'produce.log'}")
                finished_at = time.monotonic()
            drained = (observed.all_detected() and lag.caught_up(config.group_id("inference"))
                       and lag.caught_up(config.group_id("analytics")))
            if drained and time.monotonic() - finished_at >= 2 * SAMPLE_INTERVAL_S:
                break
            if time.monotonic() - finished_at > args.drain_timeout:
                print(f"warning: the pipeline had not finished the clip {args.drain_timeout:.0f} s after the "
                      "producer; figures cover what it did", flush=True)
                break
        memory.sample()
        return {
            "stages": stage_rates(observed),
            "latency_seconds": {"to_detections": percentiles(observed.detection_latencies()),
                                "to_zone_metrics": percentiles(observed.zone_metrics_latencies()),
                                "to_events": percentiles(observed.event_latencies())},
            "consumer_lag_messages": lag.figures(),
            "peak_memory_bytes": dict(memory.peak_bytes),
            "model_ms_per_frame": float(np.mean(observed.inference_ms)) if observed.inference_ms else None,
        }
    finally:
        if observer is not None:
            observer.close()
            for reader, _ in lag.readers.values():
                reader.close(autocommit=False)
        stop_children(children)
        broker.stop()


def run(args, config: Config) -> int:
    camera = bench_camera(config, args.camera)
    source = replay_source(config, camera, args.video)
    args.log_dir.mkdir(parents=True, exist_ok=True)
    config_path = write_bench_config(config, args.config, camera, source, args.window_seconds)
    try:
        bench_config = load_config(config_path)
        camera = bench_config.camera(camera.id)
        pipeline = run_pipeline(args, bench_config, config_path, camera, source)
    except StageFailed as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        config_path.unlink(missing_ok=True)
    frames = pipeline["stages"]["produce"]["frames"]
    if not frames:
        print("bench failed: no frame was produced", file=sys.stderr)
        return 1
    bare = bare_loop(bench_config, camera, source, frames)
    figures = {
        "camera": camera.id, "video": source, "realtime": not args.no_realtime,
        "latency_origin": "frame_published" if args.no_realtime else "captured_at",
        "window_seconds": bench_config.analytics.window_seconds, "frames": frames, **pipeline, "bare_loop": bare,
        "ratio_to_bare_loop": {
            "frames_per_second": _ratio(pipeline["stages"]["infer"]["frames_per_second"], bare["frames_per_second"]),
            "model_ms_per_frame": _ratio(pipeline["model_ms_per_frame"], bare["model_ms_per_frame"]),
        },
    }
    print_figures(figures)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
        print(f"figures: {args.json}")
    return 0


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def _n(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def print_figures(figures: dict) -> None:
    origin = "Frame.captured_at" if figures["realtime"] else "frame readable on the frames topic"
    pace = "paced like the camera" if figures["realtime"] else "as fast as possible"
    print(f"pipeline bench: camera {figures['camera']} replaying {figures['video']}, {figures['frames']} frames "
          f"{pace}, {figures['window_seconds']:g} s windows")
    stages = figures["stages"]
    print("frames/s: " + " | ".join(f"{name} {_n(stage['frames_per_second'])}" for name, stage in stages.items()))
    print(f"latency in seconds from {origin}:")
    print(f"  {'':16}{'count':>6}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}")
    for name, stats in figures["latency_seconds"].items():
        cells = "".join(f"{_n(stats[key], 3):>8}" for key in ("p50", "p95", "p99", "max"))
        print(f"  {name:16}{stats['count']:>6}{cells}")
    print("consumer lag in messages (max / mean / final): " + " | ".join(
        f"{group} {lag['max']} / {lag['mean']:.1f} / {lag['final']}"
        for group, lag in figures["consumer_lag_messages"].items()))
    print("peak memory (MiB): " + " | ".join(f"{name} {peak / 2**20:.0f}"
                                             for name, peak in figures["peak_memory_bytes"].items()))
    bare = figures["bare_loop"]
    ratio = figures["ratio_to_bare_loop"]
    print(f"bare loop ({bare['model']}, batch {bare['batch_size']}, {bare['frames']} frames): "
          f"{_n(bare['frames_per_second'])} frames/s, model {_n(bare['model_ms_per_frame'])} ms/frame; "
          f"in the pipeline model {_n(figures['model_ms_per_frame'])} ms/frame")
    print(f"pipeline / bare loop: frames/s {_n(ratio['frames_per_second'], 3)}, "
          f"model ms/frame {_n(ratio['model_ms_per_frame'], 3)}")

"""`cityguard bench capture`: how many cameras one producer process sustains at 5 fps each, the CPU each frame costs
(in all and per step of a camera's reader), the memory each camera costs, and how long a live stream takes to flow
again after an outage. Prints figures; asserts nothing.

Cameras are the sample clip played in a loop at its natural speed (decoded like a camera, sampled at --fps) into a
real broker (the embedded Tansu unless one is configured), or with `--client discard` into a stand-in that
acknowledges every frame at once: the difference between the two runs' CPU per frame is the Kafka client's share.
The outage is a local HLS stream whose HTTP server is stopped and restarted; the time counted is from the restart to
the first frame of that camera on the topic.
"""
from __future__ import annotations

import itertools
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psutil

from cityguard.arguments import COUNTS, POSITIVE
from cityguard.bench import cpu_seconds
from infra import assets
from infra.broker import broker_for
from infra.kafka import create_topics, make_consumer
from producers.capture import sample_frames
from producers.frame_producer import configure_reader_process, frame_client, run_producer
from producers.health import FrameQualityMonitor
from producers.local_streams import HlsEncoder, TokenFileServer
from producers.picture import encode_jpeg
from schemas import Frame, encode
from schemas.settings.config import CameraConfig, Config, parse_config


def add_arguments(parser) -> None:
    parser.add_argument("--cameras", type=COUNTS, default="10,25,50,75", help="camera counts to try, comma-separated")
    parser.add_argument("--fps", type=float, default=5.0, help="sampling rate per camera")
    parser.add_argument("--duration", type=POSITIVE, default=20.0, help="seconds per camera count")
    parser.add_argument("--video", default="asset:vtest.avi", help="clip every camera plays in a loop")
    parser.add_argument("--outages", type=int, default=3, help="stream outages to time (0: none)")
    parser.add_argument("--outage-seconds", type=float, default=3.0, help="length of each outage")
    parser.add_argument("--step-frames", type=int, default=500, help="sampled frames timed step by step (0: none)")
    parser.add_argument("--client", choices=("kafka", "discard"), default="kafka",
                        help="discard: no broker, every frame acknowledged at once and dropped (what the process costs "
                        "without its Kafka client)")


def bench_config(config: Config, servers: str | None, cameras: list[dict], tag: str) -> Config:
    data = config.model_dump(mode="json", exclude={"cameras", "base_dir"})
    data["broker"] = {**data["broker"], "bootstrap_servers": servers or data["broker"]["bootstrap_servers"],
                      "topics": {name: f"bench-{tag}.{name}" for name in data["broker"]["topics"]}}
    data["producer"] = {**data["producer"], "status_interval_s": 2.0, "shard_index": 0, "shard_count": 1}
    if "tiling" in data["model"]:  # it names the site's cameras, which the benchmark replaces
        data["model"]["tiling"]["cameras"] = []
    return parse_config({**data, "cameras": cameras}, config.base_dir)


class DiscardingClient:
    """Stands in for the producer's Kafka client (`--client discard`): every message is acknowledged as it is sent and
    kept nowhere, so the process does all its own work per frame (reading, encoding, queues, the sender, the
    acknowledgement bookkeeping) and none of the client's."""

    def send(self, topic: str, key: bytes | None, value: bytes, acknowledged=None) -> None:
        if acknowledged is not None:
            acknowledged(None)

    def bootstrap_connected(self) -> bool:
        return True

    def flush(self, timeout: float | None = None) -> int:
        return 0

    def close(self, timeout: float | None = None) -> None:
        pass


def run_for(config: Config, servers: str | None, seconds: float, on_status=None) -> dict[str, int]:
    """Runs the producer for `seconds`; with no servers, on the discarding client."""
    if servers is None:
        producer = DiscardingClient()
    else:
        create_topics(servers, config.broker.topics.all(), config.broker.partitions)
        producer = frame_client(servers, config.producer)
    stop = threading.Event()
    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.update(run_producer(config, producer, stop, on_status=on_status)))
    thread.start()
    try:
        stop.wait(seconds)
    finally:  # on Ctrl-C too: the producer's thread runs until stopped and would keep the process alive
        stop.set()
        thread.join()
        producer.close()
    return result


def throughput(config: Config, servers: str | None, counts: list[int], fps: float, seconds: float, video: Path) -> list:
    process = psutil.Process()
    baseline = process.memory_info().rss
    rows = []
    for count in counts:
        cameras = [{"id": f"cam{index:03d}", "source": str(video), "fps": fps, "loop": True, "max_width": 768}
                   for index in range(count)]
        statuses: list = []
        peak = [process.memory_info().rss]
        started = time.time()

        def observe(batch, statuses=statuses, peak=peak):
            statuses.extend(batch)
            peak.append(process.memory_info().rss)

        cpu_before, wall_before = cpu_seconds(process), time.monotonic()
        queued = run_for(bench_config(config, servers, cameras, f"n{count}-{int(started)}"), servers, seconds, observe)
        cpu_used_s, wall = cpu_seconds(process) - cpu_before, time.monotonic() - wall_before
        cpu = 100 * cpu_used_s / wall
        # CPU per frame queued: robust to other load on the machine, unlike the frame rates
        cpu_ms_per_frame = 1000 * cpu_used_s / max(1, sum(queued.values()))
        warm = started + min(6.0, seconds / 3)  # skip start-up: opening files, first broker round trips
        per_camera = {}
        for status in statuses:
            if status.at >= warm and status.fps > 0 or status.at >= warm + 2:
                per_camera.setdefault(status.camera_id, []).append(status.fps)
        achieved = sorted(statistics.mean(values) for values in per_camera.values()) or [0.0]
        dropped = max((status.dropped_frames for status in statuses), default=0)
        rows.append((count, statistics.median(achieved), achieved[0], cpu, cpu_ms_per_frame,
                     (max(peak) - baseline) / count, dropped))
    return rows


def step_costs(config: Config, video: Path, fps: float, frames: int) -> dict[str, float]:
    """CPU ms per sampled frame of each step a camera's reader takes, timed on one thread without a broker."""
    camera = CameraConfig(id="steps", source=str(video), fps=fps, loop=True, max_width=768)
    quality = FrameQualityMonitor.from_config(config.producer)
    samples = sample_frames(camera, str(video), realtime=False, settings=config.producer)
    steps = ("decode and sample", "frozen/blank check", "JPEG encode", "frame message")
    totals = dict.fromkeys(steps, 0.0)
    for seq in range(frames):
        times = [time.thread_time()]
        sampled = next(samples)
        times.append(time.thread_time())
        quality.check(sampled.picture.y, sampled.captured_at)
        times.append(time.thread_time())
        jpeg, width, height = encode_jpeg(sampled.picture, camera.max_width, camera.jpeg_quality)
        times.append(time.thread_time())
        encode(Frame(camera_id=camera.id, seq=seq, captured_at=sampled.captured_at, width=width, height=height,
                     jpeg=jpeg))
        times.append(time.thread_time())
        for step, (start, end) in zip(steps, itertools.pairwise(times), strict=True):
            totals[step] += end - start
    samples.close()
    return {step: 1000 * total / frames for step, total in totals.items()}


def reconnect_times(config: Config, servers: str, video: Path, outages: int, outage_s: float) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="cityguard-bench-") as work:
        encoder = HlsEncoder(video, Path(work) / "hls").start()
        server = TokenFileServer(Path(work) / "hls").start()
        try:
            bench = bench_config(config, servers, [{"id": "hls", "source": server.url("live.m3u8"), "fps": 5}],
                                 f"reconnect-{int(time.time())}")
            create_topics(servers, bench.broker.topics.all(), bench.broker.partitions)
            consumer = make_consumer(servers, None, bench.broker.topics.frames)
            restarts: list[float] = []

            def outage_cycle():
                time.sleep(4)
                for _ in range(outages):
                    server.stop()
                    time.sleep(outage_s)
                    restarts.append(time.time())
                    server.start()
                    time.sleep(6)

            cycle = threading.Thread(target=outage_cycle)
            cycle.start()
            run_for(bench, servers, 4 + outages * (outage_s + 6) + 1)
            cycle.join()
            sent_at = sorted(record.timestamp / 1000 for records in _drain(consumer) for record in records)
            consumer.close()
        finally:
            server.stop()
            encoder.stop()
    return [next((t for t in sent_at if t >= restart), float("nan")) - restart for restart in restarts]


def _drain(consumer, idle_s: float = 2.0):
    last = time.monotonic()
    while time.monotonic() - last < idle_s:
        polled = consumer.poll(timeout_ms=300)
        if polled:
            last = time.monotonic()
            yield from polled.values()


def run(args, config: Config) -> int:
    counts = args.cameras
    video = Path(assets.resolve(args.video))
    configure_reader_process()  # this process runs the producer's readers, as `cityguard produce` does
    if args.client == "discard":
        return report(args, config, None, counts, video)
    with tempfile.TemporaryDirectory() as logs, broker_for(config, Path(logs) / "broker.log") as servers:
        return report(args, config, servers, counts, video)


def report(args, config: Config, servers: str | None, counts: list[int], video: Path) -> int:
    settings = config.producer
    client = "the Kafka client" if servers else "no Kafka client (frames acknowledged at once and discarded)"
    print(f"capture benchmark: {video.name} looped at natural speed, sampled at {args.fps:g} fps, "
          f"{args.duration:g} s per count, {psutil.cpu_count()} CPUs, {client}", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'cameras':>7} {'median fps':>10} {'min fps':>8} {'CPU %':>6} {'CPU ms/frame':>12} {'MiB/camera':>10} "
          f"{'dropped':>8} {'load':>5}")
    sustained = 0
    per_frame = []
    for count, median, lowest, cpu, cpu_ms, memory, dropped in throughput(config, servers, counts, args.fps,
                                                                          args.duration, video):
        print(f"{count:>7} {median:>10.2f} {lowest:>8.2f} {cpu:>6.0f} {cpu_ms:>12.2f} {memory / 2**20:>10.2f} "
              f"{dropped:>8} {os.getloadavg()[0]:>5.1f}", flush=True)
        per_frame.append(cpu_ms)
        if lowest >= 0.9 * args.fps:
            sustained = count
    print(f"sustained at {args.fps:g} fps each (every camera >= 90 % of it): {sustained} cameras per process")
    print(f"CPU per camera at {args.fps:g} fps: {min(per_frame) * args.fps / 10:.2f} % of a core, i.e. "
          f"{1000 / (min(per_frame) * args.fps):.0f} cameras per free core")
    if args.step_frames:
        steps = step_costs(config, video, args.fps, args.step_frames)
        rest = "queues and threads" if servers is None else "queues, threads and the Kafka client"
        print(f"CPU ms per sampled frame by step ({args.step_frames} frames, one thread, no broker): " + ", ".join(
            f"{step} {ms:.2f}" for step, ms in steps.items()) + f"; sum {sum(steps.values()):.2f}, the rest of "
            f"{min(per_frame):.2f} is {rest}")
    if not args.outages:
        return 0
    if servers is None:
        print("reconnect times need the broker: run without --client discard")
        return 0
    times = reconnect_times(config, servers, video, args.outages, args.outage_seconds)
    print(f"reconnect after a {args.outage_seconds:g} s HLS outage (backoff {settings.reconnect_backoff_base_s:g}"
          f"..{settings.reconnect_backoff_max_s:g} s): " + ", ".join(f"{value:.2f} s" for value in times))
    return 0

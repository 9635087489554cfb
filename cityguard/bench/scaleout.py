"""`cityguard bench scaleout`: throughput of 1, 2, 4, 8 ... workers of one stage sharing its consumer group.

For each worker count, on fresh topics of the embedded broker (partitions = the largest count, the ceiling on
parallel workers): the workers are started and given time to join the group, then the input is queued at once and
the stage's output is timed from its first to its last record. The input spreads over `--cameras` cameras so every
partition has work.

- analytics: synthetic crowds (`cityguard bench analytics`'s walkers), `--people` per camera; output = zone metrics;
- inference: JPEG frames of the sample clip (or of `--jpegs DIR`, stills at the resolution to be served) through the
  configured model and, with `--zones`, the density model on its schedule (or `--backend gpu-nvjpeg --batch 64` on
  a CUDA host: frames per GPU from the frames topic to the detections topic); output = detections. Each camera's
  frames are stamped as if captured at 5 fps over the seconds before they are queued, and none is shed as stale or
  over its rate: the backlog is what is measured.

Workers are separate processes; on a machine with fewer free cores than workers the curve flattens at the cores,
which is what the figures then show. CPU seconds of all workers together are printed next to the rate.
"""
from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from pathlib import Path

import psutil
import yaml

from cityguard.arguments import COUNT, COUNTS, counted
from cityguard.bench import BACKLOG_MODEL_SETTINGS, cpu_seconds, log_folder, refuse_single_batch
from cityguard.bench.analytics import camera_id, crowd_frames, refuse_too_few_windows, site, windows_closed
from cityguard.up import spawn, stop_children
from infra.broker import EmbeddedBroker
from infra.kafka import create_topics, make_consumer, make_producer
from infra.process import exit_description
from processors.inference.jpeg_header import jpeg_dimensions
from schemas import Frame, encode
from schemas.settings.config import Config, TopicNames, parse_config


def add_arguments(parser) -> None:
    parser.add_argument("--stage", choices=("analytics", "inference"), default="analytics")
    parser.add_argument("--workers", type=COUNTS, default="1,2",
                        help="worker counts to run, comma-separated (e.g. 1,2,4,8)")
    parser.add_argument("--cameras", type=COUNT, default=16, help="cameras the input is spread over")
    parser.add_argument("--frames", type=COUNT, default=200, help="frames per camera")
    parser.add_argument("--people", type=int, default=100, help="analytics: people per camera")
    parser.add_argument("--jpegs", type=Path, default=None,
                        help="inference: a folder of .jpg frames to queue instead of the configured camera's clip")
    parser.add_argument("--zones", action="store_true",
                        help="inference: every camera gets the first configured camera's zones, so the density model "
                        "maps them on its schedule (analytics.density_model) as on a crowd site")
    parser.add_argument("--backend", default=None,
                        help="inference: model.backend for this run, e.g. gpu-nvjpeg (default: the configured one)")
    parser.add_argument("--weights", default=None, help="inference: model.weights for this run")
    parser.add_argument("--batch", type=COUNT, default=None, help="inference: model.max_batch_size for this run")
    parser.add_argument("--warm-up", type=float, default=20.0,
                        help="seconds the workers get to start and join the group before the input is queued")
    parser.add_argument("--producers", type=COUNT, default=1,
                        help="processes queueing the input once the workers have joined (a GPU drains frames faster "
                        "than one can queue them)")
    parser.add_argument("--queue-first", action="store_true",
                        help="queue the whole input before the workers start, for input one producer cannot queue as "
                        "fast as the workers drain it (a GPU's frames); the rate is timed from their first output")
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="worker logs (default: a temporary folder, kept when the run fails)")


def analytics_input(args, topics: TopicNames) -> tuple[dict, list[tuple[str, bytes]], int]:
    """Site data, (key, value) records, and how many output records mark the end."""
    fps, window = 5.0, 10.0
    data = site(window, fps, topics, cameras=args.cameras)
    records, windows = [], 0
    for index in range(args.cameras):
        camera = camera_id(index, args.cameras)
        messages = crowd_frames(args.people, fps, args.frames, seed=index, camera=camera)
        records += [(camera, encode(message)) for message in messages]
        windows += windows_closed(messages, window)
    refuse_too_few_windows(args.frames, windows, window, fps)
    return data, records, windows


def inference_jpegs(args, config: Config) -> list[bytes]:
    if args.jpegs is None:
        from cityguard.bench.inference import sample_jpegs  # decodes video: imported only when a clip is sampled

        return sample_jpegs(config, None, min(args.frames, 100))[1]
    jpegs = [path.read_bytes() for path in sorted(args.jpegs.glob("*.jpg"))[:args.frames]]
    if not jpegs:
        raise SystemExit(f"--jpegs {args.jpegs}: no .jpg files there")
    return jpegs


def inference_input(args, config: Config, topics: TopicNames) -> tuple[dict, list[tuple[str, bytes]], int]:
    fps = 5.0
    jpegs = inference_jpegs(args, config)
    data = config.model_dump(mode="json", exclude={"cameras", "base_dir"})
    source = config.cameras[0].source if config.cameras else "asset:vtest.avi"
    zones = [zone.model_dump(mode="json") for zone in config.cameras[0].zones] if args.zones and config.cameras else []
    if args.zones and not zones:
        raise SystemExit("--zones: the first configured camera has no zones to copy")
    data["cameras"] = [{"id": camera_id(index, args.cameras), "source": source, "fps": fps, "zones": zones}
                       for index in range(args.cameras)]
    data["model"].update(BACKLOG_MODEL_SETTINGS)
    data["broker"] = {**data["broker"], "topics": topics.model_dump()}
    if "tiling" in data["model"]:  # it names the site's cameras, which the benchmark replaces
        data["model"]["tiling"]["cameras"] = []
    for option, field in ((args.backend, "backend"), (args.weights, "weights"), (args.batch, "max_batch_size")):
        if option is not None:
            data["model"][field] = option
    sizes = [jpeg_dimensions(jpeg) for jpeg in jpegs]
    records, first_captured_at = [], time.time() - args.frames / fps
    for index in range(args.cameras):
        camera = camera_id(index, args.cameras)
        for seq in range(args.frames):
            width, height = sizes[seq % len(jpegs)]
            frame = Frame(camera_id=camera, seq=seq, captured_at=first_captured_at + seq / fps, width=width,
                          height=height, jpeg=jpegs[seq % len(jpegs)])
            records.append((camera, encode(frame)))
    return data, records, len(records)


def run_count(args, config: Config, workers: int, partitions: int, log_dir: Path) -> dict:
    run_id = uuid.uuid4().hex[:8]
    topics = TopicNames(**{name: f"bench-{run_id}.{name}" for name in TopicNames.model_fields})
    if args.stage == "analytics":
        data, records, expected = analytics_input(args, topics)
        input_topic, output_topic, stage = topics.detections, topics.zone_metrics, "analyze"
    else:
        data, records, expected = inference_input(args, config, topics)
        input_topic, output_topic, stage = topics.frames, topics.detections, "infer"
    data["broker"]["partitions"] = partitions
    data["site"] = f"bench-scaleout-{run_id}"
    config_path = log_dir / f"site-{run_id}.yaml"
    config_path.write_text(yaml.safe_dump(data))
    bench_config = parse_config(data, config_path.parent)
    broker = EmbeddedBroker(log_path=log_dir / "broker.log").start()
    children = {}
    try:
        servers = broker.bootstrap_servers
        create_topics(servers, bench_config.broker.topics.all(), partitions)
        if args.queue_first:
            queue(servers, input_topic, records, args.producers)
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": servers, "PYTHONUNBUFFERED": "1"}
        for index in range(workers):
            # several workers of the stage on one machine: each its own free metrics port
            extra = ("--metrics-port", "0")
            children[f"{stage}-{index}"] = spawn(stage, config_path, env, log_dir, *extra)
        processes = [psutil.Process(child.pid) for child in children.values()]
        if not args.queue_first:
            time.sleep(args.warm_up)
        output = make_consumer(servers, None, output_topic, auto_offset_reset="earliest")
        # The workers' CPU from when the input flows (start-up and the group join are not throughput); when it was
        # queued before they started, from their first output (one batch's work is missed).
        cpu_before = None if args.queue_first else sum(_cpu_seconds(process) for process in processes)
        queued_per_s = float("nan")
        if not args.queue_first:
            started = time.perf_counter()
            queue(servers, input_topic, records, args.producers)
            queued_per_s = len(records) / (time.perf_counter() - started)
        stamps: list[int] = []
        deadline = time.monotonic() + 60 + len(records) / 10
        while len(stamps) < expected and time.monotonic() < deadline:
            for batch in output.poll(timeout_ms=200).values():
                stamps.extend(record.timestamp for record in batch)
            if stamps and cpu_before is None:
                cpu_before = sum(_cpu_seconds(process) for process in processes)
            for name, child in children.items():
                if child.poll() is not None:
                    raise RuntimeError(f"worker {name} {exit_description(child.returncode)}; see {log_dir}")
        cpu = sum(_cpu_seconds(process) for process in processes) - (cpu_before or 0.0)
        output.close()
    finally:
        stop_children(children)
        broker.stop()
    stamps.sort()
    span = (stamps[-1] - stamps[0]) / 1000 if len(stamps) > 1 else float("nan")
    # analytics: each zone-metrics record closes one camera's window; inference: one record per frame
    frames_per_output = len(records) / expected
    frames = (len(stamps) - 1) * frames_per_output
    return {"workers": workers, "outputs": len(stamps), "expected": expected, "frames_per_s": frames / span,
            "cpu_ms_per_frame": 1000 * cpu / len(records), "queued_per_s": queued_per_s}


def queue(servers: str, topic: str, records: list[tuple[str, bytes]], producers: int = 1) -> None:
    """The records onto the topic from `producers` processes, each camera's from one of them (its order kept)."""
    if producers <= 1:
        send_all(servers, topic, records)
        return
    share_of = {camera: index % producers for index, camera in enumerate(sorted({key for key, _ in records}))}
    shares: list[list[tuple[str, bytes]]] = [[] for _ in range(producers)]
    for record in records:
        shares[share_of[record[0]]].append(record)
    context = multiprocessing.get_context("fork")  # the shares are inherited, not pickled
    processes = [context.Process(target=send_all, args=(servers, topic, share)) for share in shares if share]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(f"a producer process {exit_description(process.exitcode)}")


def send_all(servers: str, topic: str, records: list[tuple[str, bytes]]) -> None:
    producer = make_producer(servers)
    try:
        for key, value in records:
            producer.send(topic, key=key.encode(), value=value)
        producer.flush()
    finally:
        producer.close()


def _cpu_seconds(process: psutil.Process) -> float:
    try:
        return cpu_seconds(process)
    except psutil.Error:
        return 0.0


def run(args, config: Config) -> int:
    if args.stage == "inference" and (args.backend or config.model.backend) == "gpu-nvjpeg":
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("the gpu-nvjpeg backend needs a CUDA device and none is visible on this machine")
    if args.stage == "analytics":
        analytics_input(args, TopicNames())  # refuses an input that closes too few windows, before any output
    else:
        refuse_single_batch(args.cameras * args.frames, f"{counted(args.cameras, 'camera')} x {args.frames} frames",
                            *((args.batch, f"--batch {args.batch}") if args.batch else
                              (config.model.max_batch_size, "model.max_batch_size")))
    counts = args.workers
    partitions = max(counts)
    print(f"scale-out: {args.stage}, {args.cameras} cameras x {args.frames} frames, {partitions} partitions, "
          f"{psutil.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    if args.queue_first and partitions > 1:
        print("--queue-first: the first worker drains the input while the others join, so the rates of several "
              "workers include their rebalances (lower bounds; --producers N queues after they have joined)")
    # queued/s: how fast the input went onto the topic; where it is not above frames/s, the producers set the rate.
    print(f"{'workers':>7} {'frames/s':>9} {'per worker':>10} {'CPU ms/frame':>12} {'outputs':>9} {'queued/s':>9}")
    with log_folder(args.log_dir, "cityguard-bench-scaleout-") as log_dir:
        for workers in counts:
            row = run_count(args, config, workers, partitions, log_dir)
            print(f"{workers:>7} {row['frames_per_s']:>9.1f} {row['frames_per_s'] / workers:>10.1f} "
                  f"{row['cpu_ms_per_frame']:>12.2f} {row['outputs']:>4}/{row['expected']:<4} "
                  f"{row['queued_per_s']:>9.1f}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0

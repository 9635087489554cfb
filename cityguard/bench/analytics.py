"""`cityguard bench analytics`: the analytics stage on one busy camera next to a pure-function loop.

The input is a synthetic crowd (no model, no video): `--people` walkers with track ids crossing a calibrated
square zone with two counting lines, `--fps` frames a second; with `--vehicles N`, also N vehicles driving both ways
along a road above the square, bumper to bumper and overlapping when there are many (a jam of thousands is the
traffic analyzer's heaviest frame). Two measurements on the same frames:

1. the pure loop: the camera's analyzers' `update` per frame, in this process, no Kafka and no state encoding;
2. the stage: the frames are queued on the embedded broker first, then one `cityguard analyze` worker drains them;
   frames/s from its first to its last output, its CPU seconds per frame (robust to other load on the machine),
   and the changelog bytes it wrote per frame (the analyzer state it stores).

`--profile FILE` writes a cProfile of the pure loop (and of state encoding) for snakeviz or pstats, and
`--profile-stage FILE` one of the worker's main thread (the analyzers, decoding and faust; written when it stops).
"""
from __future__ import annotations

import cProfile
import json
import os
import time
import uuid
from pathlib import Path

import numpy as np
import psutil
import yaml
from kafka import TopicPartition

from cityguard.arguments import COUNT, counted
from cityguard.bench import cpu_seconds, log_folder
from cityguard.up import spawn, stop_children
from infra.broker import EmbeddedBroker
from infra.kafka import create_topics, make_consumer, make_producer
from infra.process import exit_description
from processors.analytics.registry import analyzers_for
from schemas import Detections, encode
from schemas.calibration import fit_homography
from schemas.settings.config import Config, TopicNames, parse_config

CAMERA_ID = "busy"
IMAGE_SIZE = (1280, 720)
# A 20 m x 12 m square seen from above at an angle: image corners of ground (0,0), (20,0), (20,12), (0,12).
GROUND = [(0.0, 0.0), (20.0, 0.0), (20.0, 12.0), (0.0, 12.0)]
IMAGE = [(160.0, 680.0), (1120.0, 680.0), (960.0, 220.0), (320.0, 220.0)]
# The walkers are as tall as people by the calibration, which the analyzer checks (a crowd of 4.8 m giants is a
# calibration in feet, and its zones go unknown), and as wide as shoulders; where the view is from straight above, a
# box is head and shoulders, as wide as it is tall.
PERSON_HEIGHT_M = 1.7
SHOULDERS_M = 0.5
START_AT = 1_700_000_000.0
# The road above the square, outside its zone (a vehicle in a crowd zone is an event): eastbound over westbound.
LANES = [("east", 40.0, 120.0, 1.0), ("west", 120.0, 200.0, -1.0)]  # id, top, bottom, direction along x
FIRST_VEHICLE_ID = 1_000_000  # above any walker's


def add_arguments(parser) -> None:
    parser.add_argument("--people", type=int, default=100, help="people in view in every frame")
    parser.add_argument("--vehicles", type=int, default=0,
                        help="vehicles driving along a road above the square in every frame (the camera then has a "
                        "traffic scene and the traffic analyzer runs too)")
    parser.add_argument("--fps", type=float, default=5.0, help="frames a second of the synthetic camera")
    parser.add_argument("--frames", type=COUNT, default=3_000, help="frames in the measured run")
    parser.add_argument("--window", type=float, default=10.0, help="analytics window, seconds")
    parser.add_argument("--no-stage", action="store_true", help="only the pure loop (no broker, no faust worker)")
    parser.add_argument("--profile", type=Path, default=None, help="write a cProfile of the pure loop here")
    parser.add_argument("--profile-stage", type=Path, default=None,
                        help="write a cProfile of the analytics worker here (its CPU figures then include profiling)")
    parser.add_argument("--json", dest="json_path", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="stage logs (default: a temporary folder, kept when the run fails)")


def site(window_s: float, fps: float, topics: TopicNames | None = None, cameras: int = 1, road: bool = False) -> dict:
    """The bench site as configuration data: calibrated cameras with one zone each, entrance and exit lines; with
    `road`, a traffic scene too: the two lanes of LANES."""
    homography = fit_homography(IMAGE, GROUND)
    entrance = homography.to_image(np.array([[-0.5, 1.0], [20.5, 1.0]])).tolist()
    exit_ = homography.to_image(np.array([[-0.5, 11.0], [20.5, 11.0]])).tolist()
    zone = {"id": "square", "polygon": [list(p) for p in IMAGE],
            "entrances": [{"id": "south", "start": entrance[0], "end": entrance[1]},
                          {"id": "north", "start": exit_[0], "end": exit_[1]}]}
    calibration = {"image_points": [list(p) for p in IMAGE], "ground_points": [list(p) for p in GROUND]}
    data = {"site": "bench-analytics", "analytics": {"window_seconds": window_s},
            "metrics": {"analytics_port": 0},  # any free port: the bench may run beside a pipeline
            "cameras": [{"id": camera_id(index, cameras), "source": "0", "fps": fps, "calibration": calibration,
                         "zones": [zone]} for index in range(cameras)]}
    if road:
        lanes = [{"id": lane, "polygon": [[0, top], [IMAGE_SIZE[0], top], [IMAGE_SIZE[0], bottom], [0, bottom]],
                  "direction": [direction, 0]} for lane, top, bottom, direction in LANES]
        for camera in data["cameras"]:
            camera["scene"] = {"lanes": lanes}
    if topics is not None:
        data["broker"] = {"topics": topics.model_dump()}
    return data


def camera_id(index: int, cameras: int) -> str:
    return CAMERA_ID if cameras == 1 else f"{CAMERA_ID}{index:03d}"


def crowd_frames(people: int, fps: float, frames: int, seed: int = 7, camera: str = CAMERA_ID) -> list[Detections]:
    """People walking across the square (south to north or back) at 0.6-1.6 m/s; one who leaves is replaced by a new
    track at the other edge, so the count stays at `people` and the counting lines see crossings."""
    rng = np.random.default_rng(seed)
    homography = fit_homography(IMAGE, GROUND)
    xy = np.column_stack((rng.uniform(0.3, 19.7, people), rng.uniform(-0.5, 12.5, people)))
    heading = rng.choice([-1, 1], people)
    velocity = np.column_stack((rng.normal(0, 0.1, people), heading * rng.uniform(0.6, 1.6, people)))
    ids = np.arange(1, people + 1)
    next_id = people + 1
    messages = []
    for seq in range(frames):
        xy += velocity / fps + rng.normal(0, 0.02, xy.shape)
        gone = (xy[:, 1] < -1.0) | (xy[:, 1] > 13.0) | (xy[:, 0] < 0) | (xy[:, 0] > 20)
        if gone.any():
            count = int(gone.sum())
            north = velocity[gone, 1] > 0
            xy[gone] = np.column_stack((rng.uniform(0.3, 19.7, count), np.where(north, -0.9, 12.9)))
            ids[gone] = np.arange(next_id, next_id + count)
            next_id += count
        feet = homography.to_image(xy) + rng.normal(0, 1.0, xy.shape)
        width = np.linalg.norm(homography.to_image(xy + (SHOULDERS_M, 0)) - homography.to_image(xy), axis=1)
        height = np.maximum(homography.standing_height_px(feet, PERSON_HEIGHT_M), width)
        boxes = np.column_stack((feet[:, 0] - width / 2, feet[:, 1] - height, feet[:, 0] + width / 2, feet[:, 1]))
        messages.append(Detections(
            camera_id=camera, seq=seq, captured_at=START_AT + seq / fps, image_width=IMAGE_SIZE[0],
            image_height=IMAGE_SIZE[1], model="synthetic", inference_ms=0.0,
            xyxy=[tuple(box) for box in boxes.tolist()], confidence=[0.8] * people, class_id=[0] * people,
            class_name=["person"] * people, track_id=ids.tolist()))
    return messages


def with_vehicles(messages: list[Detections], vehicles: int, fps: float, seed: int = 11) -> list[Detections]:
    """The frames with `vehicles` more boxes, tracked: cars and lorries 40-90 px long driving along LANES at 60-240
    px/s, each in its lane's direction, bumper to bumper and overlapping when there are many; one that leaves the
    picture comes back in at the other end as a new track, so the count stays at `vehicles`."""
    if not vehicles:
        return messages
    rng = np.random.default_rng(seed)
    lane = rng.integers(0, len(LANES), vehicles)
    top = np.array([LANES[n][1] for n in lane])
    bottom = np.array([LANES[n][2] for n in lane])
    direction = np.array([LANES[n][3] for n in lane])
    length = rng.uniform(40, 90, vehicles)
    height = np.minimum(rng.uniform(0.45, 0.75, vehicles) * length, bottom - top)
    x = rng.uniform(0, IMAGE_SIZE[0], vehicles)
    y = top + rng.uniform(0, 1, vehicles) * (bottom - top - height)
    speed = direction * rng.uniform(60, 240, vehicles)
    names = np.where(rng.random(vehicles) < 0.8, "car", "truck")
    class_ids = np.where(names == "car", 2, 7)
    ids = np.arange(FIRST_VEHICLE_ID, FIRST_VEHICLE_ID + vehicles)
    next_id = FIRST_VEHICLE_ID + vehicles
    result = []
    for message in messages:
        x += speed / fps
        gone = (x < -length) | (x > IMAGE_SIZE[0])
        if gone.any():
            x[gone] = np.where(speed[gone] > 0, -length[gone], IMAGE_SIZE[0])
            ids[gone] = np.arange(next_id, next_id + int(gone.sum()))
            next_id += int(gone.sum())
        boxes = np.column_stack((x, y, x + length, y + height)).clip(0, IMAGE_SIZE[0])
        result.append(message.model_copy(update={
            "xyxy": [*message.xyxy, *map(tuple, boxes.tolist())],
            "confidence": [*message.confidence, *[0.8] * vehicles],
            "class_id": [*message.class_id, *class_ids.tolist()],
            "class_name": [*message.class_name, *names.tolist()],
            "track_id": [*message.track_id, *ids.tolist()]}))
    return result


def pure_loop(config: Config, messages: list[Detections], profile: Path | None) -> dict:
    """The camera's analyzers alone, one frame after another, and separately the cost of encoding their state every
    frame (the bytes, encode and restore times of all of them together)."""
    camera = config.cameras[0]
    factories = analyzers_for(camera)
    analyzers = [factory(camera, config, None) for factory in factories.values()]
    profiler = cProfile.Profile() if profile else None
    windows = 0
    wall, cpu = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    for message in messages:
        for analyzer in analyzers:
            windows += len(analyzer.update(message).zone_metrics)
    if profiler:
        profiler.disable()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    encoded = [[analyzer.state_bytes() for analyzer in analyzers] for _ in range(50)]
    encode_cpu = time.process_time()
    if profiler:
        profiler.enable()
    for _ in range(200):
        for analyzer in analyzers:
            analyzer.state_bytes()
    if profiler:
        profiler.disable()
        profiler.dump_stats(str(profile))
    encode_cpu = (time.process_time() - encode_cpu) / 200
    restore_cpu = time.process_time()
    for _ in range(50):
        for factory, state in zip(factories.values(), encoded[-1], strict=True):
            factory(camera, config, state)
    restore_cpu = (time.process_time() - restore_cpu) / 50
    return {"frames": len(messages), "windows": windows, "fps_wall": len(messages) / wall,
            "fps_cpu": len(messages) / cpu, "cpu_ms_per_frame": 1000 * cpu / len(messages),
            "state_bytes": sum(map(len, encoded[-1])), "state_encode_ms": 1000 * encode_cpu,
            "state_restore_ms": 1000 * restore_cpu}


def run_stage(config: Config, config_path: Path, messages: list[Detections], log_dir: Path,
              profile: Path | None = None) -> dict:
    """One analytics worker draining the queued frames: frames/s, CPU per frame, changelog bytes per frame."""
    topics = config.broker.topics
    broker = EmbeddedBroker(log_path=log_dir / "broker.log").start()
    worker = None
    try:
        servers = broker.bootstrap_servers
        create_topics(servers, topics.all(), config.broker.partitions)
        producer = make_producer(servers)
        for message in messages:
            producer.send(topics.detections, key=CAMERA_ID.encode(), value=encode(message))
        producer.flush()
        producer.close()
        output = make_consumer(servers, None, topics.zone_metrics, auto_offset_reset="earliest")
        expected_windows = windows_closed(messages, config.analytics.step_seconds)
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": servers, "PYTHONUNBUFFERED": "1"}
        profiler = ("-m", "cProfile", "-o", str(profile.resolve())) if profile else ()
        worker = spawn("analyze", config_path, env, log_dir, interpreter_args=profiler)
        process = psutil.Process(worker.pid)
        stamps: list[int] = []
        cpu_at_first = None  # start-up (imports, group join, table recovery) is not per-frame work
        deadline = time.monotonic() + 60 + len(messages) / 5
        while len(stamps) < expected_windows and time.monotonic() < deadline:
            for records in output.poll(timeout_ms=50).values():
                stamps.extend(record.timestamp for record in records)
            if stamps and cpu_at_first is None:
                cpu_at_first = cpu_seconds(process)
            if worker.poll() is not None:
                raise RuntimeError(f"the analytics worker {exit_description(worker.returncode)}; see {log_dir}")
        cpu_total = cpu_seconds(process)
        output.close()
        changelog = _topic_bytes(servers, f"{config.group_id('analytics')}-analyzer-state-changelog")
    finally:
        if worker is not None:
            stop_children({"analyze": worker})
        broker.stop()
    if len(stamps) < 2:
        raise RuntimeError(f"the analytics worker closed {len(stamps)} of {expected_windows} windows; see {log_dir}")
    # Windows close once per step: frames/s and CPU per frame from the first window's output to the last one's.
    stamps.sort()
    frames_between = (len(stamps) - 1) * config.analytics.step_seconds * config.cameras[0].fps
    return {"windows": len(stamps), "expected_windows": expected_windows,
            "fps_wall": frames_between / ((stamps[-1] - stamps[0]) / 1000),
            "fps_cpu": frames_between / (cpu_total - cpu_at_first), "worker_cpu_s_total": cpu_total,
            "cpu_ms_per_frame": 1000 * (cpu_total - cpu_at_first) / frames_between,
            "changelog_records": changelog[0], "changelog_bytes_per_frame": changelog[1] / len(messages)}


def windows_closed(messages: list[Detections], step: float) -> int:
    """Windows one camera's frames close: the last one stays open."""
    starts = {int(message.captured_at // step) for message in messages}
    return len(starts) - 1


def refuse_too_few_windows(frames: int, windows: int, step: float, fps: float) -> None:
    """The worker's rate is timed between the first and the last window's output: fewer than two time nothing."""
    if windows < 2:
        raise ValueError(f"--frames {frames} closes {counted(windows, 'analytics window')} "
                         f"({step:g} s at {fps:g} fps): give more than {2 * step * fps:.0f}")


def _topic_bytes(servers: str, topic: str) -> tuple[int, int]:
    """Records and value bytes on a topic, every partition, read from the start."""
    consumer = make_consumer(servers, None)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    if not partitions:
        consumer.close()
        return 0, 0
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    ends = consumer.end_offsets(partitions)
    records = size = 0
    while any(consumer.position(tp) < ends[tp] for tp in partitions):
        for batch in consumer.poll(timeout_ms=500).values():
            records += len(batch)
            size += sum(len(record.value or b"") for record in batch)
    consumer.close()
    return records, size


def run(args, config: Config) -> int:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # as in the analytics worker (cityguard.stages.run_analyze)
    run_id = uuid.uuid4().hex[:8]
    topics = TopicNames(**{name: f"bench-{run_id}.{name}" for name in TopicNames.model_fields})
    data = site(args.window, args.fps, topics, road=args.vehicles > 0)
    bench_config = parse_config(data, Path("."))
    messages = with_vehicles(crowd_frames(args.people, args.fps, args.frames), args.vehicles, args.fps)
    if not args.no_stage:  # refused before any figures
        step = bench_config.analytics.step_seconds
        refuse_too_few_windows(args.frames, windows_closed(messages, step), step, args.fps)
    load = os.getloadavg()
    figures: dict = {"people": args.people, "vehicles": args.vehicles, "fps": args.fps, "frames": args.frames,
                     "window_seconds": args.window, "load_average_1m": round(load[0], 2),
                     "pure": pure_loop(bench_config, messages, args.profile)}
    if not args.no_stage:
        with log_folder(args.log_dir, "cityguard-bench-analytics-") as log_dir:
            config_path = log_dir / f"site-{run_id}.yaml"
            config_path.write_text(yaml.safe_dump(data))
            figures["stage"] = run_stage(bench_config, config_path, messages, log_dir, args.profile_stage)
        figures["stage_to_pure_ratio_wall"] = figures["stage"]["fps_wall"] / figures["pure"]["fps_wall"]
        figures["stage_to_pure_ratio_cpu"] = figures["stage"]["fps_cpu"] / figures["pure"]["fps_cpu"]
    print_figures(figures)
    if args.json_path:
        args.json_path.write_text(json.dumps(figures, indent=2))
    return 0


def print_figures(figures: dict, indent: str = "") -> None:
    for key, value in figures.items():
        if isinstance(value, dict):
            print(f"{indent}{key}:")
            print_figures(value, indent + "  ")
        else:
            print(f"{indent}{key:>28}: {round(value, 3) if isinstance(value, float) else value}")


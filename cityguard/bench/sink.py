"""`cityguard bench sink`: CPU time of the metrics sink per frame it reads, in process (no broker).

The metrics sink reads every frame's detections (objects counted per camera and class, people per camera) and every
zone's window: of the consumers of the detections it is the one whose work grows with the cameras and not with the
model. This times its handlers on a site of `--cameras` cameras with one zone each, at 5 frames per second of video and
a window per zone every 10 s, for each `--boxes` count per frame, and says how many cameras one core keeps up with.
"""
from __future__ import annotations

import time

from cityguard.arguments import COUNT, numbers_from
from schemas import Detections, RiskLevel, ZoneMetrics, encode
from schemas.settings.config import Config

FPS = 5.0
WINDOW_S = 10.0


def add_arguments(parser) -> None:
    parser.add_argument("--cameras", type=COUNT, default=100, help="cameras of the site, one zone each")
    parser.add_argument("--boxes", type=numbers_from(1), default="10,40,100",
                        help="comma-separated boxes per frame (three in four people, the rest cars)")
    parser.add_argument("--frames", type=COUNT, default=5000, help="frames timed per boxes count")


def site(cameras: int) -> Config:
    return Config(site="bench-sink", cameras=[
        {"id": f"bench-sink-{n}", "source": "bench.mp4",
         "zones": [{"id": "plaza", "polygon": [[0, 0], [640, 0], [640, 480], [0, 480]], "area_m2": 400}]}
        for n in range(cameras)])


def frame(camera_id: str, seq: int, captured_at: float, boxes: int) -> Detections:
    cars = boxes // 4
    return Detections(camera_id=camera_id, seq=seq, captured_at=captured_at, image_width=640, image_height=480,
                      model="bench", inference_ms=10.0, xyxy=[(10.0 + n % 600, 20.0, 40.0 + n % 600, 90.0)
                                                              for n in range(boxes)],
                      confidence=[0.8] * boxes, class_id=[0] * (boxes - cars) + [2] * cars,
                      class_name=["person"] * (boxes - cars) + ["car"] * cars, track_id=list(range(1, boxes + 1)))


def window(camera_id: str, end: float) -> ZoneMetrics:
    return ZoneMetrics(camera_id=camera_id, zone_id="plaza", window_start=end - WINDOW_S, window_end=end,
                       frames=int(FPS * WINDOW_S), area_m2=400, people_mean=30.0, people_max=34,
                       density_mean_per_m2=0.075, density_max_per_m2=0.085, risk_level=RiskLevel.NORMAL,
                       risk_reason="", last_seq=1)


def messages(config: Config, frames: int, boxes: int, start: float, first_seq: int = 0) -> list[tuple[str, bytes]]:
    """The topic and bytes of `frames` frames' detections spread over the cameras in video order, with each zone's
    windows as they close; the frames of each camera numbered from `first_seq` (the sink counts a frame once)."""
    topics, cameras = config.broker.topics, [camera.id for camera in config.cameras]
    out = []
    for index in range(frames):
        camera_id, tick = cameras[index % len(cameras)], index // len(cameras)
        captured_at = start + tick / FPS
        out.append((topics.detections, encode(frame(camera_id, first_seq + tick, captured_at, boxes))))
        if (tick + 1) % int(FPS * WINDOW_S) == 0:
            out.append((topics.zone_metrics, encode(window(camera_id, captured_at))))
    return out


def run(args, config) -> int:
    from sinks.metrics_exporter import MetricsSink

    config = site(args.cameras)  # its own cameras: the figures are per camera, whatever the site
    sink = MetricsSink(config, consumer=None, group_readers={})
    sink.take_zones(sink.labels.zones, time.time())  # as a sink given every partition
    sink.take_cameras(sink.labels.cameras)
    print(f"metrics sink, {args.cameras} cameras with one zone each, {FPS:g} fps, a window per zone every "
          f"{WINDOW_S:g} s; {args.frames} frames per row, handlers only (no broker)")
    now = time.time()
    for row, boxes in enumerate(args.boxes):
        # A frame of every camera first, untimed: each camera's and class's series are made at its first frame.
        for topic, value in messages(config, args.cameras, boxes, now, first_seq=(2 * row + 1) * 10**6):
            sink.handle(topic, value)
        batch = messages(config, args.frames, boxes, now, first_seq=2 * row * 10**6)
        started = time.process_time()
        for topic, value in batch:
            sink.handle(topic, value)
        per_frame = (time.process_time() - started) / args.frames
        print(f"{boxes:4d} boxes a frame: {per_frame * 1e6:6.0f} us CPU per frame, {1 / per_frame:7.0f} frames/s per "
              f"core, {1 / per_frame / FPS:6.0f} cameras at {FPS:g} fps per core")
    return 0

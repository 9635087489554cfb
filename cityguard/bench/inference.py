"""`cityguard bench inference`: the inference consumer on the embedded broker next to a bare model loop.

Two phases on the same JPEG frames and the same loaded model, in one process:
1. throughput: the frames are queued on the broker first, then the worker drains them (frames/s from its first to
   its last output), against the bare loop (decode + detect in batches of the same size, no Kafka);
2. latency: frames are published at a steady rate below capacity and the time from each frame's capture stamp to
   its detections' record timestamp is measured (both stamped on this machine's clock).
"""
from __future__ import annotations

import json
import threading
import time
import uuid

import cv2
import numpy as np

from cityguard.arguments import COUNT
from cityguard.bench import BACKLOG_MODEL_SETTINGS, refuse_single_batch
from infra import assets
from infra.broker import broker_for
from infra.frame_client import FrameConsumer
from infra.kafka import make_consumer, make_producer
from processors.inference.jpeg_header import jpeg_dimensions
from processors.inference.stage import InferenceWorker
from producers.capture import sample_frames
from producers.picture import encode_jpeg
from schemas import Detections, Frame, decode, encode
from schemas.settings.config import Config, TopicNames


def add_arguments(parser) -> None:
    parser.add_argument("--frames", type=COUNT, default=300, help="frames in the throughput phase")
    parser.add_argument("--latency-frames", type=COUNT, default=100, help="frames in the paced latency phase")
    parser.add_argument("--latency-load", type=float, default=0.5, help="paced rate as a fraction of bare fps")
    parser.add_argument("--camera", default=None, help="camera whose source supplies the frames (default: first)")
    parser.add_argument("--tiling", action="store_true",
                        help="also time the tiled detector (model.tiling settings) on the same frames: its cost")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the figures here")


def sample_jpegs(config: Config, camera_id: str | None, count: int) -> tuple[str, list[bytes]]:
    camera = config.camera(camera_id) if camera_id else config.cameras[0]
    looping = camera.model_copy(update={"loop": True})
    jpegs = []
    for sampled in sample_frames(looping, config.resolve_path(assets.resolve(camera.source)), realtime=False):
        jpegs.append(encode_jpeg(sampled.picture, camera.max_width, camera.jpeg_quality)[0])
        if len(jpegs) >= count:
            break
    return camera.id, jpegs


def bare_loop(detector, jpegs: list[bytes], batch: int) -> tuple[float, float]:
    """Frames/s of decode + detect with no broker, in the worker's batch size, and people found per frame."""
    started = time.perf_counter()
    people = 0
    for start in range(0, len(jpegs), batch):
        images = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs[start:start + batch]]
        people += sum(int((result.class_id == 0).sum()) for result in detector.detect(images))
    return len(jpegs) / (time.perf_counter() - started), people / len(jpegs)


def publish(producer, topic: str, camera_id: str, jpegs: list[bytes], first_seq: int, rate_fps: float | None) -> None:
    for offset, jpeg in enumerate(jpegs):
        if rate_fps:
            time.sleep(1 / rate_fps)
        width, height = jpeg_dimensions(jpeg)
        frame = Frame(camera_id=camera_id, seq=first_seq + offset, captured_at=time.time(), width=width,
                      height=height, jpeg=jpeg)
        producer.send(topic, key=camera_id.encode(), value=encode(frame))
    producer.flush()


def drain_detections(consumer, expected: int, timeout_s: float) -> list:
    records: list = []
    deadline = time.monotonic() + timeout_s
    while len(records) < expected and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200).values():
            records.extend(batch)
    return records


def run(args, config: Config) -> int:
    from cityguard.stages import build_trackers, serving_detectors

    batch = config.model.max_batch_size
    refuse_single_batch(args.frames, f"--frames {args.frames}", batch)  # before any model loads
    run_id = uuid.uuid4().hex[:8]
    topics = TopicNames(**{name: f"bench-{run_id}.{name}" for name in TopicNames.model_fields})
    config = config.model_copy(update={"broker": config.broker.model_copy(update={"topics": topics}),
                                       "model": config.model.model_copy(update=BACKLOG_MODEL_SETTINGS)})
    camera_id, jpegs = sample_jpegs(config, args.camera, args.frames)
    width, height = jpeg_dimensions(jpegs[0])
    detectors = serving_detectors(config)
    bare_loop(detectors.detector, jpegs[:2 * batch], batch)  # warm-up: model compilation is not measured
    bare_fps, people_per_frame = bare_loop(detectors.detector, jpegs, batch)
    tiled_figures = {}
    if args.tiling:
        from cityguard.stages import tiled_detector

        tiled_fps, tiled_people = bare_loop(tiled_detector(config, detectors.detector), jpegs, batch)
        tiled_figures = {"tiled_bare_loop_fps": round(tiled_fps, 2), "people_per_frame": round(people_per_frame, 2),
                         "tiled_people_per_frame": round(tiled_people, 2),
                         "tiling_cost_ratio": round(bare_fps / tiled_fps, 2)}

    with broker_for(config) as servers:
        producer = make_producer(servers)
        consumer = FrameConsumer(servers, config.group_id(f"bench-{run_id}"), topics.frames)
        output = make_consumer(servers, None, topics.detections, auto_offset_reset="earliest")
        worker_producer = make_producer(servers)
        worker = InferenceWorker(config, consumer, worker_producer, detectors, "bench", build_trackers(config))
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        try:
            publish(producer, topics.frames, camera_id, jpegs, 0, None)
            thread.start()
            first_phase = drain_detections(output, len(jpegs), timeout_s=600)
            # Steady state, from the worker's first output to its last (record timestamps): the one-off
            # consumer-group join (about half the session timeout) is not throughput.
            stamps = sorted(record.timestamp for record in first_phase)
            pipeline_fps = (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1000)

            latency_jpegs = jpegs[:args.latency_frames]
            rate = bare_fps * args.latency_load
            publish(producer, topics.frames, camera_id, latency_jpegs, len(jpegs), rate)
            second_phase = drain_detections(output, len(latency_jpegs), timeout_s=120)
        finally:  # on Ctrl-C too: a client still open at exit tries to flush into the broker stopped by then
            stop.set()
            if thread.is_alive():
                thread.join(10)
            for closable in (output, consumer, producer, worker_producer):
                closable.close()
    # Capture time is stamped just before publishing; the detections record is stamped when the worker sends it.
    latencies_ms = np.array([record.timestamp - decode(record.value, Detections).captured_at * 1000
                             for record in second_phase])
    figures = {
        "model": detectors.detector.name, "model_version": detectors.version, "frames": len(jpegs),
        "frame_size": f"{width}x{height}", "batch": batch,
        "bare_loop_fps": round(bare_fps, 2), "pipeline_fps": round(pipeline_fps, 2),
        "pipeline_to_bare_ratio": round(pipeline_fps / bare_fps, 3),
        "latency_phase_rate_fps": round(rate, 2),
        "latency_ms_p50": round(float(np.percentile(latencies_ms, 50)), 1),
        "latency_ms_p99": round(float(np.percentile(latencies_ms, 99)), 1),
        **tiled_figures,
    }
    for key, value in figures.items():
        print(f"{key:>26}: {value}")
    if args.json_path:
        with open(args.json_path, "w") as handle:
            json.dump(figures, handle, indent=2)
    return 0

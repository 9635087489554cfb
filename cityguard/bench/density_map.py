"""`cityguard bench density-map`: seconds per frame of the CSRNet density-map counter on this machine."""
from __future__ import annotations

import time

import cv2

from infra import assets


def add_arguments(parser) -> None:
    parser.add_argument("--video", default="asset:vtest.avi", help="frames to time: a path (relative to cwd) or asset")
    parser.add_argument("--width", type=int, default=1024, help="frames are resized to this width first")
    parser.add_argument("--frames", type=int, default=10)


def run(args, config) -> int:
    from processors.inference.density_map import DensityMapCounter

    started = time.perf_counter()
    counter = DensityMapCounter.from_config(config)
    print(f"load (and first-time OpenVINO conversion): {time.perf_counter() - started:.1f} s")
    capture = cv2.VideoCapture(assets.resolve(args.video))
    images = []
    while len(images) < args.frames:
        ok, image = capture.read()
        if not ok:
            break
        height = round(image.shape[0] * args.width / image.shape[1])
        images.append(cv2.resize(image, (args.width, height)))
    capture.release()
    if not images:
        print(f"no frames read from {args.video}")
        return 1
    counter.density_map(images[0])  # warm-up
    started = time.perf_counter()
    counts = [float(counter.density_map(image).sum()) for image in images]
    per_frame = (time.perf_counter() - started) / len(images)
    print(f"CSRNet OpenVINO, {images[0].shape[1]}x{images[0].shape[0]}: {per_frame:.3f} s per frame "
          f"over {len(images)} frames; mean count {sum(counts) / len(counts):.1f}")
    return 0

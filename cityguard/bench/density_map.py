"""`cityguard bench density-map`: seconds per map of the CSRNet density-map counter on this machine, per input width
(the inference stage makes each map at analytics.density_model.max_width, and a second one at dense_max_width when
that map has locally dense cells)."""
from __future__ import annotations

import time

import cv2

from infra import assets


def add_arguments(parser) -> None:
    parser.add_argument("--video", default="asset:vtest.avi", help="frames to time: a path (relative to cwd) or asset")
    parser.add_argument("--widths", default="384,512,768,1024",
                        help="comma-separated input widths; frames are resized to each first")
    parser.add_argument("--frames", type=int, default=10)


def run(args, config) -> int:
    from processors.inference.density_map import DensityMapCounter

    started = time.perf_counter()
    counter = DensityMapCounter.from_config(config)
    print(f"load (and first-time OpenVINO conversion): {time.perf_counter() - started:.1f} s")
    capture = cv2.VideoCapture(assets.resolve(args.video))
    frames = []
    while len(frames) < args.frames:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    if not frames:
        print(f"no frames read from {args.video}")
        return 1
    for width in (int(part) for part in args.widths.split(",") if part.strip()):
        images = [cv2.resize(image, (width, round(image.shape[0] * width / image.shape[1]))) for image in frames]
        counter.density_map(images[0], width)  # compiles this shape
        started = time.perf_counter()
        counts = [float(counter.density_map(image, width).sum()) for image in images]
        per_frame = (time.perf_counter() - started) / len(images)
        print(f"CSRNet OpenVINO, {images[0].shape[1]}x{images[0].shape[0]}: {per_frame:.3f} s per map "
              f"over {len(images)} frames; mean count {sum(counts) / len(counts):.1f}")
    return 0

"""`cityguard bench density-map`: seconds per map of the CSRNet density-map counter on this machine, per input width
(the inference stage makes each map at analytics.density_model.max_width, and a second one at dense_max_width when
that map has locally dense cells), and maps per second when a batch of frames is mapped together (on a GPU)."""
from __future__ import annotations

import time

import cv2

from cityguard.arguments import COUNT, numbers_from
from infra import assets


def add_arguments(parser) -> None:
    parser.add_argument("--video", default="asset:vtest.avi", help="frames to time: a path (relative to cwd) or asset")
    parser.add_argument("--widths", type=numbers_from(32), default="384,512,768,1024",
                        help="comma-separated input widths; frames are resized to each first")
    parser.add_argument("--frames", type=COUNT, default=10)
    parser.add_argument("--device", default=None,
                        help="cpu or cuda[:N] (default: analytics.density_model.device of the config)")
    parser.add_argument("--batch", type=COUNT, default=1, help="frames mapped together in one call")


def run(args, config) -> int:
    from processors.inference.density_map import DensityMapCounter

    if args.device:
        settings = config.analytics.density_model.model_copy(update={"device": args.device})
        config = config.model_copy(update={"analytics": config.analytics.model_copy(
            update={"density_model": settings})})
    started = time.perf_counter()
    counter = DensityMapCounter.from_config(config)
    print(f"{counter.name} on {config.analytics.density_model.device}: load (and first-time OpenVINO conversion) "
          f"{time.perf_counter() - started:.1f} s")
    capture = cv2.VideoCapture(assets.resolve(args.video))
    frames = []
    while len(frames) < args.frames:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    if not frames:
        raise ValueError(f"--video {args.video}: no frames could be read")
    batch = max(1, min(args.batch, len(frames)))
    for width in args.widths:
        images = [cv2.resize(image, (width, round(image.shape[0] * width / image.shape[1]))) for image in frames]
        counter.scaled_maps(images[:batch], width)  # compiles this shape, warms the device
        started = time.perf_counter()
        counts = []
        for first in range(0, len(images) - batch + 1, batch):
            counts += [float(one.sum()) for one in counter.scaled_maps(images[first:first + batch], width)]
        elapsed = time.perf_counter() - started
        print(f"{images[0].shape[1]}x{images[0].shape[0]}, batch {batch}: {elapsed / len(counts):.3f} s per map, "
              f"{len(counts) / elapsed:.1f} maps/s over {len(counts)} frames; mean count "
              f"{sum(counts) / len(counts):.1f}")
    return 0

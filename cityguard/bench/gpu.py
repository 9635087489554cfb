"""GPU inference benchmark: nvJPEG decode + GPU letterbox (GpuJpegDetector) vs the plain ultralytics predict path.

Run on a CUDA host: `python -m cityguard.bench.gpu --jpegs DIR [--weights yolo11n.pt]`. Prints frames/s per batch
size for both paths (the GPU one as the inference stage runs it when its model.max_batch_size is the largest of
--batches, with its milliseconds per frame in each step), and checks that both paths agree (letterbox pixels and
detections) on the same weights.
With an ultralytics yaml (the default, yolo11n.yaml) the weights are random: valid for speed, not for accuracy.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from cityguard.arguments import COUNTS
from processors.inference.backends.gpu_nvjpeg import GpuJpegDetector, letterbox_gpu


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (cuDNN autotune, allocator)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jpegs", type=Path, required=True)
    parser.add_argument("--weights", default="yolo11n.yaml")
    parser.add_argument("--batches", type=COUNTS, default="1,8,32,64")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--confidence", type=float, default=0.25)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    jpegs = [path.read_bytes() for path in sorted(args.jpegs.glob("*.jpg"))]
    if not jpegs:
        raise SystemExit(f"--jpegs {args.jpegs}: no .jpg files there")
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark times the GPU path: it needs a CUDA GPU, and torch finds none on this machine")

    from ultralytics import YOLO
    from ultralytics.data.augment import LetterBox

    torch.manual_seed(0)
    decoded = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs]
    batches = args.batches
    # Captured at the largest batch, as the stage captures at its own (GpuJpegDetector.forward says which batches
    # replay it).
    gpu = GpuJpegDetector(args.weights, confidence=args.confidence, largest_batch=max(batches))
    plain = YOLO(args.weights, task="detect")
    # Identical weights on both paths (random ones too), in the layout ultralytics runs them in.
    plain.model = copy.deepcopy(gpu.model).to(memory_format=torch.contiguous_format)
    figures = {"device": torch.cuda.get_device_name(), "weights": args.weights,
               "frame_size": f"{decoded[0].shape[1]}x{decoded[0].shape[0]}", "batches": {}}

    # Parity of the preprocessing: GPU letterbox vs ultralytics' CPU LetterBox, same pixels within rounding.
    cpu_boxed = LetterBox((640, 640), auto=False)(image=decoded[0])[..., ::-1].astype(np.float32) / 255
    gpu_boxed, _ = letterbox_gpu([torch.from_numpy(decoded[0][..., ::-1].copy()).cuda().permute(2, 0, 1)], 640)
    figures["letterbox_mean_abs_diff"] = float(np.abs(gpu_boxed[0].permute(1, 2, 0).cpu().numpy() - cpu_boxed).mean())

    # Parity of the model's output on the two preprocessings (meaningful with random weights too).
    with torch.inference_mode():
        cpu_tensor = torch.from_numpy(cpu_boxed.copy()).permute(2, 0, 1)[None].cuda().half()
        outputs = [gpu.model(x)[0].float() for x in (cpu_tensor, gpu_boxed.half())]
    scale = outputs[0].abs().max().item()
    figures["model_output_max_abs_diff_relative"] = float((outputs[0] - outputs[1]).abs().max().item() / scale)
    figures["boxes_per_frame_gpu_path"] = float(np.mean([len(r.xyxy) for r in gpu.detect_jpegs(jpegs[:8])]))

    for batch in batches:
        chunk = (jpegs * (batch // len(jpegs) + 1))[:batch]
        frames = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in chunk]
        nvjpeg = timed(lambda chunk=chunk: gpu.detect_jpegs(chunk), args.repeats)
        steps = gpu.detect_jpegs(chunk)[0]
        predict = timed(lambda frames=frames: plain.predict(frames, half=True, device=0, conf=args.confidence,
                                                            verbose=False), args.repeats)
        cpu_decode_predict = timed(lambda chunk=chunk: plain.predict(
            [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in chunk],
            half=True, device=0, conf=args.confidence, verbose=False), max(2, args.repeats // 2))
        figures["batches"][batch] = {
            "nvjpeg_gpu_letterbox_fps": round(batch / nvjpeg, 1),
            "nvjpeg_gpu_letterbox_ms_per_frame": {step: round(getattr(steps, f"{step}_ms"), 3)
                                                  for step in ("preprocess", "inference", "postprocess")},
            "predict_on_decoded_frames_fps": round(batch / predict, 1),
            "cpu_decode_plus_predict_fps": round(batch / cpu_decode_predict, 1),
        }
        print(f"batch {batch:3d}: {figures['batches'][batch]}", flush=True)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

"""GPU detector: JPEG decode with nvJPEG, letterbox and NMS on the GPU, fused FP16 YOLO.

On one H100 the model is not the bottleneck: CPU JPEG decode and letterboxing are (`python -m cityguard.bench.gpu`
compares the two paths). This backend takes the frames' JPEG bytes straight to the GPU, so the
CPU only moves bytes. It needs PyTorch weights (a .pt file or an ultralytics model yaml) and a CUDA device.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from processors.inference.detector import ImageDetections

LETTERBOX_FILL = 114 / 255  # ultralytics' grey padding
LETTERBOX_GROUP = 16


def letterbox_gpu(images: list[torch.Tensor], size: int) -> tuple[torch.Tensor, list[tuple[float, float, float]]]:
    """Resize each CHW uint8 image to fit size x size keeping its aspect ratio, pad centred; returns the NCHW float
    batch in [0, 1] and (scale, pad_x, pad_y) per image to map boxes back. Images of one size (a camera model's
    frames) are resized together, up to LETTERBOX_GROUP at a time: one kernel for them rather than one per image,
    with the float copies of that many full frames (about 400 MB at 1080p) in GPU memory at once."""
    batch = torch.full((len(images), 3, size, size), LETTERBOX_FILL, device=images[0].device)
    by_size: dict[tuple[int, int], list[int]] = {}
    for index, image in enumerate(images):
        by_size.setdefault(tuple(image.shape[1:]), []).append(index)
    placement: dict[tuple[int, int], tuple[float, float, float]] = {}  # image size -> (scale, pad_x, pad_y)
    for (height, width), indices in by_size.items():
        scale = min(size / height, size / width)
        new_height, new_width = round(height * scale), round(width * scale)
        pad_y, pad_x = (size - new_height) / 2, (size - new_width) / 2
        top, left = round(pad_y - 0.1), round(pad_x - 0.1)  # same rounding as ultralytics LetterBox
        for first in range(0, len(indices), LETTERBOX_GROUP):
            group = indices[first:first + LETTERBOX_GROUP]
            resized = F.interpolate(torch.stack([images[i] for i in group]).float().div_(255),
                                    size=(new_height, new_width), mode="bilinear", align_corners=False)
            batch[group, :, top:top + new_height, left:left + new_width] = resized
        placement[height, width] = (scale, left, top)
    return batch, [placement[tuple(image.shape[1:])] for image in images]


def boxes_in_frames(kept: list[torch.Tensor], geometry: list[tuple[float, float, float]],
                    sizes: list[tuple[int, int]]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """NMS output per letterboxed image (N, 6: xyxy, confidence, class) -> (xyxy, confidence, class id) arrays in
    each frame's pixels. All images' boxes are mapped in one pass and copied to the host once: per-image tensor
    operations cost a kernel launch and a device sync each, which at batch 64 took longer than the model."""
    counts = [len(boxes) for boxes in kept]
    if not sum(counts):
        return [(np.zeros((0, 4)), np.zeros(0, np.float32), np.zeros(0, np.int32)) for _ in kept]
    boxes = torch.cat(kept).float()
    per_box = torch.tensor([(*frame, *size[::-1]) for frame, size in zip(geometry, sizes, strict=True)],
                           dtype=torch.float32, device=boxes.device).repeat_interleave(
        torch.tensor(counts, device=boxes.device), dim=0)  # scale, pad_x, pad_y, width, height per box
    scale, pad, limit = per_box[:, :1], per_box[:, 1:3].repeat(1, 2), per_box[:, 3:5].repeat(1, 2)
    xyxy = torch.minimum(((boxes[:, :4] - pad) / scale).clamp(min=0), limit)
    host = torch.cat([xyxy, boxes[:, 4:6]], dim=1).cpu().numpy()
    return [(part[:, :4].astype(float), part[:, 4].astype(np.float32), part[:, 5].astype(np.int32))
            for part in np.split(host, np.cumsum(counts)[:-1])]


class GpuJpegDetector:
    """Same interface as YoloDetector (`detect(images)`), plus `detect_jpegs(jpegs)` for the nvJPEG path."""

    def __init__(self, weights: str, image_size: int = 640, confidence: float = 0.25, iou: float = 0.7,
                 classes: list[int] | None = None, device: str = "cuda", half: bool = True):
        from ultralytics import YOLO

        yolo = YOLO(weights, task="detect")
        self.names = yolo.names
        self.name = f"{weights}-cuda-{'fp16' if half else 'fp32'}"
        self.device = torch.device(device)
        self.dtype = torch.float16 if half else torch.float32
        self.model = yolo.model.fuse().to(self.device, self.dtype).eval()
        self.image_size = image_size
        self.confidence = confidence
        self.iou = iou
        self.classes = classes

    @torch.inference_mode()
    def detect_jpegs(self, jpegs: list[bytes]) -> list[ImageDetections]:
        started = time.perf_counter()
        encoded = [torch.frombuffer(bytearray(jpeg), dtype=torch.uint8) for jpeg in jpegs]
        images = torchvision.io.decode_jpeg(encoded, mode=torchvision.io.ImageReadMode.RGB, device=self.device)
        return self._detect_tensors(images, started)

    @torch.inference_mode()
    def detect(self, images: list[np.ndarray]) -> list[ImageDetections]:
        """BGR numpy images (already decoded on the CPU), for the tiled detector and comparisons."""
        started = time.perf_counter()
        tensors = [torch.from_numpy(np.ascontiguousarray(image[..., ::-1])).to(self.device).permute(2, 0, 1)
                   for image in images]
        return self._detect_tensors(tensors, started)

    def _synchronize(self) -> None:
        """Waits for queued GPU work, so the step timings are real (a no-op on the CPU)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _detect_tensors(self, images: list[torch.Tensor], started: float) -> list[ImageDetections]:
        from ultralytics.utils.nms import non_max_suppression

        batch, geometry = letterbox_gpu(images, self.image_size)
        self._synchronize()
        preprocessed = time.perf_counter()
        output = self.model(batch.to(self.dtype))
        predictions = output[0] if isinstance(output, (list, tuple)) else output
        self._synchronize()
        inferred = time.perf_counter()
        kept = non_max_suppression(predictions, self.confidence, self.iou, classes=self.classes)
        boxes_per_image = boxes_in_frames(kept, geometry, [tuple(image.shape[1:]) for image in images])
        per_image_ms = 1000 * (time.perf_counter() - inferred) / len(images)
        timings = {"preprocess_ms": 1000 * (preprocessed - started) / len(images),
                   "inference_ms": 1000 * (inferred - preprocessed) / len(images), "postprocess_ms": per_image_ms}
        return [ImageDetections(xyxy, confidence, class_id, tuple(self.names[int(c)] for c in class_id), **timings)
                for xyxy, confidence, class_id in boxes_per_image]

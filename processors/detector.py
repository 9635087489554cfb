"""Object detector adapter: ultralytics YOLO in, plain per-image results out. The only module that imports it."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from infra import assets

if TYPE_CHECKING:  # keeps this adapter importable where only the model's dependencies exist (GPU hosts)
    from cityguard.config import Config


@dataclass(frozen=True)
class ImageDetections:
    """Detector output for one image, before it becomes a Detections message."""

    xyxy: np.ndarray  # (N, 4) pixels
    confidence: np.ndarray  # (N,)
    class_id: np.ndarray  # (N,)
    class_names: tuple[str, ...]  # (N,)
    inference_ms: float  # model forward time for this image
    preprocess_ms: float = 0.0  # letterbox + normalisation
    postprocess_ms: float = 0.0  # NMS + box scaling


def resolve_weights(config: Config) -> str:
    """The configured ultralytics model, or the local offline copy when YOLO_OFFLINE=1 and it exists (an asset name
    is fetched into the cache when no mirror has it)."""
    model = config.model
    if os.environ.get("YOLO_OFFLINE") == "1" and model.offline_weights:
        offline = Path(config.resolve_path(assets.resolve(model.offline_weights)))
        if offline.exists():
            return str(offline)
    if os.path.sep in model.weights or model.weights.startswith("."):
        return config.resolve_path(model.weights)
    return model.weights


class YoloDetector:
    def __init__(self, weights: str, image_size: int = 640, confidence: float = 0.25, iou: float = 0.7,
                 classes: list[int] | None = None):
        from ultralytics import YOLO  # heavy import kept out of module import time

        self.weights = weights
        self.name = Path(weights).name
        self.model = YOLO(weights, task="detect")
        self.predict_args = {"imgsz": image_size, "conf": confidence, "iou": iou, "classes": classes,
                             "verbose": False}


    def detect(self, images: list[np.ndarray]) -> list[ImageDetections]:
        """One result per BGR image, in order."""
        if not images:
            return []
        results = self.model.predict(images, **self.predict_args)
        output = []
        for result in results:
            boxes = result.boxes
            class_id = boxes.cls.cpu().numpy().astype(int)
            output.append(ImageDetections(
                xyxy=boxes.xyxy.cpu().numpy().astype(float),
                confidence=boxes.conf.cpu().numpy().astype(float),
                class_id=class_id,
                class_names=tuple(result.names[int(c)] for c in class_id),
                inference_ms=float(result.speed.get("inference") or 0.0),
                preprocess_ms=float(result.speed.get("preprocess") or 0.0),
                postprocess_ms=float(result.speed.get("postprocess") or 0.0),
            ))
        return output


def keep_confident(result: ImageDetections, default: float, per_class: dict[int, float]) -> ImageDetections:
    """Drops detections below their class's threshold (`per_class`, else `default`)."""
    if not per_class or len(result.confidence) == 0:
        return result
    thresholds = np.array([per_class.get(int(c), default) for c in result.class_id])
    keep = result.confidence >= thresholds
    return ImageDetections(result.xyxy[keep], result.confidence[keep], result.class_id[keep],
                           tuple(name for name, kept in zip(result.class_names, keep) if kept), result.inference_ms,
                           result.preprocess_ms, result.postprocess_ms)


def create_detector(config: Config):
    """The configured backend (config.model.backend), built with the configured model and thresholds.

    The model runs at the lowest configured confidence; CameraDetectors then applies the per-class thresholds.
    """
    model = config.model
    floor = min([model.confidence, *model.class_confidence.values()])
    args = (resolve_weights(config), model.image_size, floor, model.iou, model.classes)
    if model.backend == "openvino":
        from processors.openvino_detector import OpenVinoDetector

        return OpenVinoDetector(*args, performance_hint=model.openvino_hint)
    if model.backend == "gpu-nvjpeg":
        from processors.gpu_detector import GpuJpegDetector  # needs torch with CUDA

        return GpuJpegDetector(*args)
    return YoloDetector(*args)

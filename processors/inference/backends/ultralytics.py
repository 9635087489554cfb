"""ultralytics backend: any ultralytics model file in, plain per-image results out."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from processors.inference.detector import ImageDetections


class YoloDetector:
    def __init__(self, weights: str, image_size: int = 640, confidence: float = 0.25, iou: float = 0.7,
                 classes: list[int] | None = None):
        from ultralytics import YOLO  # heavy import kept out of module import time

        self.weights = weights
        self.name = Path(weights).name
        self.model = YOLO(weights, task="detect")
        self.predict_args = {"imgsz": image_size, "conf": confidence, "iou": iou, "classes": classes,
                             "verbose": False}
        # An exported model (OpenVINO, ONNX, TensorRT) knows its class names only once a predictor has loaded it,
        # and asking before the first prediction loads it into a throwaway predictor: a second load of the model
        # (1-2 s on a CPU). A first prediction on a blank image sets up the predictor every later call uses; a .pt
        # model, which has its names anyway, pays one inference for it.
        self.model.predict(np.zeros((image_size, image_size, 3), np.uint8), **self.predict_args)
        self.names = {int(k): str(v) for k, v in self.model.names.items()}


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

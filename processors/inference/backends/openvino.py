"""OpenVINO backend with an explicit performance hint.

ultralytics picks OpenVINO's hint itself from the model's batch size (LATENCY for a static batch-1 export).
LATENCY runs one request at a time on all cores; THROUGHPUT runs several requests in parallel
streams, which raises frames/s on a micro-batch at the cost of per-frame latency. This backend lets the
configuration choose, and keeps ultralytics' own letterbox and NMS so boxes match the ultralytics backend.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import yaml

from processors.inference.detector import ImageDetections


class OpenVinoDetector:
    def __init__(self, model_dir: str, image_size: int = 640, confidence: float = 0.25, iou: float = 0.7,
                 classes: list[int] | None = None, performance_hint: str = "LATENCY"):
        import openvino as ov
        from ultralytics.data.augment import LetterBox

        directory = Path(model_dir)
        xml = next(directory.glob("*.xml"))
        metadata = yaml.safe_load((directory / "metadata.yaml").read_text())
        self.names = {int(k): v for k, v in metadata["names"].items()}
        self.image_size = int(metadata.get("imgsz", [image_size])[0])
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(xml), "CPU", {"PERFORMANCE_HINT": performance_hint})
        self.requests = self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
        self.queue = ov.AsyncInferQueue(self.compiled, self.requests)
        self.letterbox = LetterBox((self.image_size, self.image_size), auto=False)
        self.name = f"{directory.name}:{performance_hint.lower()}"
        self.confidence, self.iou, self.classes = confidence, iou, classes

    def detect(self, images: list[np.ndarray]) -> list[ImageDetections]:
        from ultralytics.utils.nms import non_max_suppression
        from ultralytics.utils.ops import scale_boxes

        started = time.perf_counter()
        inputs = [np.ascontiguousarray(self.letterbox(image=image)[..., ::-1].transpose(2, 0, 1))[None]
                  .astype(np.float32) / 255 for image in images]
        preprocessed = time.perf_counter()
        outputs: list = [None] * len(images)

        def collect(request, index: int) -> None:
            outputs[index] = request.get_output_tensor(0).data.copy()

        self.queue.set_callback(collect)
        for index, tensor in enumerate(inputs):
            self.queue.start_async({0: tensor}, index)
        self.queue.wait_all()
        inferred = time.perf_counter()
        kept = non_max_suppression(torch.from_numpy(np.concatenate(outputs)), self.confidence, self.iou,
                                   classes=self.classes)
        results = []
        for boxes, image in zip(kept, images, strict=True):
            xyxy = scale_boxes((self.image_size, self.image_size), boxes[:, :4].clone(), image.shape[:2])
            class_id = boxes[:, 5].int().numpy()
            results.append((xyxy.numpy().astype(float), boxes[:, 4].numpy().astype(float), class_id))
        count = len(images)
        timings = {"preprocess_ms": 1000 * (preprocessed - started) / count,
                   "inference_ms": 1000 * (inferred - preprocessed) / count,
                   "postprocess_ms": 1000 * (time.perf_counter() - inferred) / count}
        return [ImageDetections(xyxy, confidence, class_id, tuple(self.names[int(c)] for c in class_id), **timings)
                for xyxy, confidence, class_id in results]

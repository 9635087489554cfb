"""What every detector backend returns and what the inference stage needs from one."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from schemas import PERSON_CLASS_ID


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

    def person_boxes(self) -> np.ndarray:
        """(M, 4) xyxy of the people found: what a density map of the image is told about it."""
        return self.xyxy[self.class_id == PERSON_CLASS_ID]


class Detector(Protocol):
    """What the inference stage needs from a model (the backends, and the tiling wrapper).

    A detector with `detect_jpegs` takes the frames' JPEG bytes and decodes them itself (on the GPU), so the stage
    skips its CPU decode for it.
    """

    name: str

    def detect(self, images: list[np.ndarray]) -> list[ImageDetections]: ...


def keep_confident(result: ImageDetections, default: float, per_class: dict[int, float]) -> ImageDetections:
    """Drops detections below their class's threshold (`per_class`, else `default`)."""
    if not per_class or len(result.confidence) == 0:
        return result
    thresholds = np.array([per_class.get(int(c), default) for c in result.class_id])
    keep = result.confidence >= thresholds
    return ImageDetections(result.xyxy[keep], result.confidence[keep], result.class_id[keep],
                           tuple(name for name, kept in zip(result.class_names, keep, strict=True) if kept),
                           result.inference_ms, result.preprocess_ms, result.postprocess_ms)

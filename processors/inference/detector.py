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

    def subset(self, keep: np.ndarray) -> ImageDetections:
        """The detections `keep` selects (a boolean mask or ascending indices), with the same timings."""
        indices = np.flatnonzero(keep) if keep.dtype == bool else keep
        return ImageDetections(self.xyxy[indices], self.confidence[indices], self.class_id[indices],
                               tuple(self.class_names[i] for i in indices), self.inference_ms, self.preprocess_ms,
                               self.postprocess_ms)

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
    return result.subset(result.confidence >= thresholds)

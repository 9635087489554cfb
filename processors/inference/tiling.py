"""Tiled (SAHI-style) inference for wide or distant views: overlapping slices at native resolution, merged by NMS.

People far from the camera are a few pixels tall once a 1280-pixel frame is shrunk to the model's 640; slicing
keeps them at native size. A whole-frame pass is added so objects larger than a tile are still found whole.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from processors.inference.detector import ImageDetections


def tile_origins(length: int, tile: int, overlap: float) -> list[int]:
    """Start offsets covering [0, length) with tiles of `tile` pixels overlapping by `overlap` (0..1)."""
    if length <= tile:
        return [0]
    stride = max(1, int(tile * (1 - overlap)))
    origins = list(range(0, length - tile, stride))
    origins.append(length - tile)  # the last tile ends exactly at the edge
    return origins


def merge_by_nms(parts: list[ImageDetections], iou_threshold: float) -> ImageDetections:
    """Class-aware NMS over detections gathered from several passes."""
    xyxy = np.concatenate([p.xyxy for p in parts]) if parts else np.zeros((0, 4))
    if len(xyxy) == 0:
        return ImageDetections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=int), (), 0.0)
    confidence = np.concatenate([p.confidence for p in parts])
    class_id = np.concatenate([p.class_id for p in parts])
    class_names = tuple(name for p in parts for name in p.class_names)
    keep: list[int] = []
    for cls in np.unique(class_id):
        index = np.flatnonzero(class_id == cls)
        boxes = xyxy[index]
        xywh = np.column_stack((boxes[:, :2], boxes[:, 2:] - boxes[:, :2])).tolist()
        kept = cv2.dnn.NMSBoxes(xywh, confidence[index].tolist(), 0.0, iou_threshold)
        keep.extend(index[np.asarray(kept, dtype=int).reshape(-1)].tolist())
    keep.sort()
    return ImageDetections(xyxy[keep], confidence[keep], class_id[keep], tuple(class_names[i] for i in keep),
                           inference_ms=sum(p.inference_ms for p in parts),
                           preprocess_ms=sum(p.preprocess_ms for p in parts),
                           postprocess_ms=sum(p.postprocess_ms for p in parts))


class TiledDetector:
    """Wraps any detector with `.detect(images)`; same interface, more small objects found, more model time."""

    def __init__(self, detector, tile_size: int = 640, overlap: float = 0.2, iou: float = 0.5,
                 whole_frame_pass: bool = True):
        self.detector = detector
        self.name = f"{detector.name}+tiles{tile_size}"
        self.tile_size = tile_size
        self.overlap = overlap
        self.iou = iou
        self.whole_frame_pass = whole_frame_pass

    def detect(self, images: list[np.ndarray]) -> list[ImageDetections]:
        return [self._detect_one(image) for image in images]

    def _detect_one(self, image: np.ndarray) -> ImageDetections:
        height, width = image.shape[:2]
        crops, offsets = [], []
        for y in tile_origins(height, self.tile_size, self.overlap):
            for x in tile_origins(width, self.tile_size, self.overlap):
                crops.append(image[y:y + self.tile_size, x:x + self.tile_size])
                offsets.append((x, y))
        parts = []
        for result, (x, y) in zip(self.detector.detect(crops), offsets, strict=True):
            parts.append(dataclasses.replace(result, xyxy=result.xyxy + np.array([x, y, x, y], dtype=float)))
        if self.whole_frame_pass and len(crops) > 1:
            parts.extend(self.detector.detect([image]))
        return merge_by_nms(parts, self.iou)

"""Tiled (SAHI-style) inference for wide or distant views: overlapping slices at native resolution, merged by NMS
that knows a tile cuts objects at its inner edges.

People far from the camera are a few pixels tall once a 1280-pixel frame is shrunk to the model's 640; slicing
keeps them at native size. A whole-frame pass is added so objects larger than a tile are still found whole.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from processors.inference.detector import ImageDetections
from schemas.geometry import box_cover, box_iou

# A box within this share of the tile's size of an edge of its tile that lies inside the frame was cut off by the
# tile (the model's box edge of a cut-off person falls a few pixels short of the border).
FRAGMENT_EDGE_SHARE = 0.01
# A cut-off box and a box of another pass (tile or whole frame) are one object when at least this share of the
# smaller of the two lies inside the other: the part a tile saw of a person is not another person.
FRAGMENT_COVER = 0.5


def tile_origins(length: int, tile: int, overlap: float) -> list[int]:
    """Start offsets covering [0, length) with tiles of `tile` pixels overlapping by `overlap` (0..1)."""
    if length <= tile:
        return [0]
    stride = max(1, int(tile * (1 - overlap)))
    origins = list(range(0, length - tile, stride))
    origins.append(length - tile)  # the last tile ends exactly at the edge
    return origins


def cut_by_tile(xyxy: np.ndarray, origin: tuple[int, int], tile_size: tuple[int, int],
                frame_size: tuple[int, int]) -> np.ndarray:
    """Which boxes (in the tile's pixels) touch an edge of their tile that lies inside the frame."""
    (x, y), (width, height), (frame_width, frame_height) = origin, tile_size, frame_size
    near = FRAGMENT_EDGE_SHARE * max(width, height)
    return (((xyxy[:, 0] <= near) & (x > 0))
            | ((xyxy[:, 1] <= near) & (y > 0))
            | ((xyxy[:, 2] >= width - near) & (x + width < frame_width))
            | ((xyxy[:, 3] >= height - near) & (y + height < frame_height)))


def nms(xyxy: np.ndarray, confidence: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes greedy NMS keeps, most confident first."""
    xywh = np.column_stack((xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2])).tolist()
    return np.asarray(cv2.dnn.NMSBoxes(xywh, confidence.tolist(), 0.0, iou_threshold), dtype=int).reshape(-1)


def merge_by_nms(parts: list[ImageDetections], iou_threshold: float,
                 cut: list[np.ndarray] | None = None) -> ImageDetections:
    """Class-aware NMS over detections gathered from several passes.

    cut: per part, which of its boxes its tile cut off (cut_by_tile). A cut-off box and a box of another pass
    holding FRAGMENT_COVER of the smaller one are one object, whatever their IoU: half a person has an IoU of about
    0.5 with the whole one. The uncut boxes are merged first, so a tile's part of an object never displaces another
    pass's whole box of it; then each cut-off box, most confident first, is kept unless it is one object with a box
    already kept. The kept box is not grown to cover the other: in a crowd, the part a tile saw may be of the person
    behind. Only cut-off boxes are merged by cover: a whole box inside another pass's box is mostly someone behind
    (on the crowd dev set, merging every tile box by cover with the whole-frame pass's lost 35-84 of 1,091 people).
    """
    if not parts or not sum(len(p.xyxy) for p in parts):
        return ImageDetections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=int), (), 0.0)
    xyxy = np.concatenate([p.xyxy for p in parts]).astype(float)
    confidence = np.concatenate([p.confidence for p in parts])
    class_id = np.concatenate([p.class_id for p in parts])
    class_names = tuple(name for p in parts for name in p.class_names)
    source = np.concatenate([np.full(len(p.xyxy), index) for index, p in enumerate(parts)])
    fragment = np.concatenate(cut) if cut is not None else np.zeros(len(xyxy), dtype=bool)

    def one_object(cut_off: np.ndarray, others: np.ndarray) -> np.ndarray:
        """(len(cut_off), len(others)): whether each cut-off box is one object with each of the others."""
        a, b = xyxy[cut_off], xyxy[others]
        other_pass = source[cut_off][:, None] != source[others][None]
        return (box_iou(a, b) > iou_threshold) | (other_pass & (box_cover(a, b) >= FRAGMENT_COVER))

    keep: list[int] = []
    for cls in np.unique(class_id):
        index = np.flatnonzero(class_id == cls)
        whole, cut_off = index[~fragment[index]], index[fragment[index]]
        kept = whole[nms(xyxy[whole], confidence[whole], iou_threshold)]
        cut_off = cut_off[np.argsort(-confidence[cut_off], kind="stable")]
        cut_off = cut_off[~one_object(cut_off, kept).any(axis=1)]  # parts of objects found whole
        kept_parts: list[int] = []
        for candidate in cut_off:
            if not kept_parts or not one_object(np.array([candidate]), np.array(kept_parts)).any():
                kept_parts.append(int(candidate))
        keep.extend([*kept.tolist(), *kept_parts])
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
        crops, origins = [], []
        for y in tile_origins(height, self.tile_size, self.overlap):
            for x in tile_origins(width, self.tile_size, self.overlap):
                crops.append(image[y:y + self.tile_size, x:x + self.tile_size])
                origins.append((x, y))
        parts, cut = [], []
        for result, crop, (x, y) in zip(self.detector.detect(crops), crops, origins, strict=True):
            cut.append(cut_by_tile(result.xyxy, (x, y), (crop.shape[1], crop.shape[0]), (width, height)))
            parts.append(dataclasses.replace(result, xyxy=result.xyxy + np.array([x, y, x, y], dtype=float)))
        if self.whole_frame_pass and len(crops) > 1:
            whole = self.detector.detect([image])[0]
            parts.append(whole)
            cut.append(np.zeros(len(whole.xyxy), dtype=bool))
        return merge_by_nms(parts, self.iou, cut)

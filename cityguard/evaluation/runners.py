"""Running a detector over labelled images, for the detector and counting evaluations. The only I/O is reading
images and label files; the figures come from the pure metric modules.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cityguard.evaluation.counting import DEFAULT_SIZE_EDGES, CountErrors, count_errors, count_errors_by_size
from cityguard.evaluation.detection import Boxes, DetectionResult, evaluate_detections
from cityguard.evaluation.loaders import (
    image_files,
    load_count_csv,
    load_mot_counts,
    load_shanghaitech_points,
    load_yolo_labels,
    read_image,
    shanghaitech_truth_file,
)
from processors.inference.stage import Detector
from schemas import PERSON_CLASS_ID
from schemas.settings.config import Config

if TYPE_CHECKING:
    from processors.inference.backends.registry import ServedModel

TRUTH_FORMATS = ("csv", "shanghaitech", "mot")


@dataclass(frozen=True)
class ImageResult:
    path: Path
    width: int
    height: int
    predicted: Boxes
    class_names: dict[int, str]


def evaluation_detector(config: Config, confidence: float, weights: Path | None = None) -> Detector:
    """The configured backend keeping boxes down to `confidence` (a PR curve needs the low ones), with the given
    `weights` (a model registry version, a candidate) or else the model the settings name."""
    from processors.inference.backends.registry import create_detector

    return create_detector(at_confidence(config, confidence), None if weights is None else Path(weights).resolve())


def evaluation_model(config: Config, confidence: float) -> ServedModel:
    """The model the inference stage serves here (the model registry's serving version where the site has one, else
    the configured model), keeping boxes down to `confidence`: what the site's figures are figures of."""
    from processors.inference.backends.registry import load_served_model

    return load_served_model(at_confidence(config, confidence))


def at_confidence(config: Config, confidence: float) -> Config:
    return config.model_copy(update={"model": config.model.model_copy(update={"confidence": confidence})})


def detect_images(detector: Detector, paths: list[Path], batch_size: int = 8) -> Iterator[ImageResult]:
    """Detections per image, `batch_size` images per detector call (bounds memory on big folders)."""
    for first in range(0, len(paths), batch_size):
        batch = paths[first:first + batch_size]
        images = [read_image(path) for path in batch]
        for path, image, result in zip(batch, images, detector.detect(images), strict=True):
            height, width = image.shape[:2]
            yield ImageResult(path, width, height, Boxes.of(result.xyxy, result.class_id, result.confidence),
                              dict(zip(result.class_id.tolist(), result.class_names, strict=True)))


def evaluate_detector(detector: Detector, images_dir: Path, labels_dir: Path, confidence: float,
                      iou_threshold: float = 0.5, class_ids: list[int] | None = None,
                      batch_size: int = 8) -> DetectionResult:
    """Runs `detector` (which should keep low-confidence boxes) on every image and scores it against the labels.

    Class ids in the labels must be the model's (COCO: 0 person, 2 car, ...); a class the model never reported is
    named by its id.
    """
    if not Path(labels_dir).is_dir():
        raise FileNotFoundError(f"no labels folder {labels_dir} (--labels)")
    pairs, names = [], {}
    started = time.perf_counter()
    for image in detect_images(detector, image_files(images_dir), batch_size):
        pairs.append((load_yolo_labels(Path(labels_dir) / f"{image.path.stem}.txt", image.width, image.height),
                      image.predicted))
        names.update(image.class_names)
    elapsed = time.perf_counter() - started
    result = evaluate_detections(pairs, names, confidence, iou_threshold, class_ids)
    return DetectionResult(result.confidence, result.iou_threshold, result.images, result.classes, result.confusion,
                           {"detector": detector.name, "seconds_per_image": elapsed / max(1, len(pairs))})


def infer_truth_format(truth: Path) -> str:
    if truth.is_dir():
        return "shanghaitech"
    if truth.suffix.lower() == ".csv":
        return "csv"
    if truth.suffix.lower() == ".txt":
        return "mot"
    raise ValueError(f"cannot tell the format of {truth}: give --truth-format ({', '.join(TRUTH_FORMATS)})")


def true_counts(images: list[Path], truth: Path, truth_format: str, mot_min_visibility: float = 0.0) -> list[float]:
    """The labelled count of each image, in order.

    csv: `file,count` keyed by file name; shanghaitech: `truth` is the ground-truth folder with GT_<image>.mat (or
    the images' sibling folder when `truth` is a file); mot: gt.txt, image stems are frame numbers (000001.jpg).
    """
    if truth_format == "csv":
        counts = load_count_csv(truth)
        missing = [image.name for image in images if image.name not in counts]
        if missing:
            raise ValueError(f"{truth} has no count for {len(missing)} images, e.g. {missing[0]}")
        return [counts[image.name] for image in images]
    if truth_format == "shanghaitech":
        files = [truth / f"GT_{image.stem}.mat" if truth.is_dir() else shanghaitech_truth_file(image)
                 for image in images]
        return [float(len(load_shanghaitech_points(path))) for path in files]
    if truth_format == "mot":
        counts = load_mot_counts(truth, len(images), mot_min_visibility)
        return [float(counts.get(int(image.stem), 0)) for image in images]
    raise ValueError(f"unknown truth format {truth_format!r}; use one of {', '.join(TRUTH_FORMATS)}")


COUNTERS = ("detector", "tiled", "density", "fused")


@dataclass(frozen=True)
class CounterSet:
    """What `counter_counts` may run: the whole-frame detector, the tiled one, the density-map counter and the
    zone-count settings; a counter not asked for may be None."""

    detector: Detector | None
    tiled: Detector | None
    density: object | None  # processors.inference.density_map.DensityMapCounter
    counting: object  # schemas.settings.crowd.CountingConfig
    density_model: object  # schemas.settings.crowd.DensityModelConfig
    confidence: float
    fused_uses_tiled: bool = False  # the zone camera runs the tiled detector


def counter_counts(counters: list[str], images: list[Path], runners: CounterSet) -> dict[str, list[float]]:
    """People per image by each named counter. `density` is the density-map counter as the inference stage runs it
    (the multi-scale map: reduced width, full width in locally dense cells, rescaled for the height of the people
    the camera's detector finds in a sparse scene, without the texture around them where it does not see them);
    `fused` is the analytics' zone counter (processors.analytics.crowd.counting.fuse_counts) on a zone covering the
    whole image, fed what the inference stage sends: the camera's detector's person boxes and a fresh density map."""
    from processors.analytics.crowd.counting import fuse_counts
    from processors.inference.density_map import without_texture

    unknown = sorted(set(counters) - set(COUNTERS))
    if unknown:
        raise ValueError(f"unknown counter {unknown[0]!r}; use {', '.join(COUNTERS)}")
    counts: dict[str, list[float]] = {name: [] for name in counters}
    for path in images:
        image = read_image(path)
        boxes: dict[str, np.ndarray] = {}
        fused_detector = "tiled" if runners.fused_uses_tiled else "detector"
        for name, detector in (("detector", runners.detector), ("tiled", runners.tiled)):
            if name in counters or (name == fused_detector and ("fused" in counters or "density" in counters)):
                result = detector.detect([image])[0]
                people = (result.class_id == PERSON_CLASS_ID) & (result.confidence >= runners.confidence)
                boxes[name] = result.xyxy[people]
        model_people = None
        if "density" in counters or "fused" in counters:
            zone_boxes = boxes[fused_detector]
            made = runners.density.multi_scale_map(image, zone_boxes)
            model_people = float(without_texture(made, zone_boxes, image.shape[:2], runners.density_model).sum())
        for name in counters:
            if name == "density":
                counts[name].append(model_people)
            elif name == "fused":
                counts[name].append(float(fuse_counts(len(zone_boxes), model_people, runners.counting, 0.0).people))
            else:
                counts[name].append(float(len(boxes[name])))
    return counts


@dataclass(frozen=True)
class CountResult:
    images: list[str]
    true: list[float]
    predicted: list[float]
    overall: CountErrors
    by_size: dict[str, CountErrors]
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"overall": self.overall.to_json(), "by_crowd_size": {k: v.to_json() for k, v in self.by_size.items()},
                "per_image": [{"image": name, "true": t, "predicted": p}
                              for name, t, p in zip(self.images, self.true, self.predicted, strict=True)], **self.extra}


def evaluate_counts(images: list[Path], true: list[float], predicted: list[float],
                    size_edges: tuple[float, ...] = DEFAULT_SIZE_EDGES, extra: dict | None = None) -> CountResult:
    return CountResult([image.name for image in images], list(true), list(predicted), count_errors(true, predicted),
                       count_errors_by_size(true, predicted, size_edges), extra or {})

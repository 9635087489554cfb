"""A site's own detection dataset in the YOLO layout ultralytics trains from, built from operator feedback.

Sources, each frame tagged with its camera and capture time:
- false alarms an operator marked (JPEG + JSON under a feedback folder): kept as hard negatives, with the
  operator's corrected labels if given, else the detector's boxes minus the false ones (no boxes at all: a
  background image with an empty label file);
- frames around missed events (intervals as in `cityguard eval events` truth CSVs), read from the camera's clip;
- an even sample of each camera's footage, so the model keeps seeing the normal scene.
Frames without operator labels are pre-labelled by the detector and marked unreviewed in the manifest; operators
correct them in a labelling tool (export, edit, import).

Layout: images/<split>/<name>.jpg, labels/<split>/<name>.txt, data.yaml (class names = the serving model's, so a
fine-tuned model keeps its class ids), manifest.csv (name, split, camera, captured_at, source, reviewed).
The split is by camera and time: each camera's frames are cut into contiguous time blocks and whole blocks go to
validation; validation frames close in time to a training frame are dropped, so near-identical neighbours never sit
on both sides.
"""
from __future__ import annotations

import csv
import json
import os
import random
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import yaml

from cityguard.evaluation.detection import Boxes, box_iou
from cityguard.evaluation.loaders import (
    IMAGE_SUFFIXES,
    load_event_csv,
    load_yolo_labels,
    read_image,
)
from cityguard.training.labels import ImageLabels, class_id_of, yolo_text
from processors.inference.detector import Detector

SPLITS = ("train", "val")
SOURCES = ("false-alarm", "missed", "background")
MANIFEST_FIELDS = ["name", "split", "camera", "captured_at", "source", "reviewed"]
DATASET_ENTRIES = ("images", "labels", "manifest.csv", "data.yaml")  # all a dataset folder holds


@dataclass(frozen=True)
class DatasetItem:
    camera: str
    captured_at: float  # unix seconds, or seconds from the start of the camera's clip
    source: str  # one of SOURCES
    image: np.ndarray | Path  # BGR pixels, or a JPEG already on disk
    boxes: Boxes
    reviewed: bool  # labels checked by an operator (not only the detector's)
    split: str = ""

    @property
    def name(self) -> str:
        return f"{self.camera}_{round(self.captured_at * 1000):013d}_{self.source}"

    def size(self) -> tuple[int, int]:
        if isinstance(self.image, np.ndarray):
            return self.image.shape[1], self.image.shape[0]
        image = read_image(self.image)
        return image.shape[1], image.shape[0]


def detector_boxes(detector: Detector, images: list[np.ndarray], confidence: float) -> list[Boxes]:
    results = detector.detect(images) if images else []
    return [Boxes.of(r.xyxy, r.class_id, r.confidence).select(np.asarray(r.confidence) >= confidence)
            for r in results]


def _feedback_boxes(record: dict, names: dict[int, str], where: str, key: str) -> Boxes:
    """Boxes listed under `key` as {"class": name or id, "xyxy": [x1, y1, x2, y2]}, or for the false-alarm record
    itself `boxes` (list of xyxy) with one `class`."""
    if key == "boxes":
        class_name = record.get("class")
        class_id = class_name if isinstance(class_name, int) else class_id_of(str(class_name), names, where)
        return Boxes.of(record.get("boxes") or [], [class_id] * len(record.get("boxes") or []))
    entries = record[key]
    return Boxes.of([entry["xyxy"] for entry in entries],
                    [entry["class"] if isinstance(entry["class"], int) else class_id_of(entry["class"], names, where)
                     for entry in entries])


@dataclass(frozen=True)
class FalseAlarm:
    """A false alarm an operator marked: the frame, the wrong boxes, and optionally the full corrected labels."""

    camera: str
    captured_at: float
    image: Path
    wrong: Boxes
    corrected: Boxes | None


def read_false_alarms(folder: Path, names: dict[int, str]) -> list[FalseAlarm]:
    """The records under <folder>/<camera>/: <stem>.jpg with <stem>.json {"camera", "time", "event_id",
    "boxes": [[x1, y1, x2, y2], ...], "class", optional "labels": [{"class", "xyxy"}, ...]}."""
    records = []
    for sidecar in sorted(Path(folder).glob("*/*.json")):
        image = next((sidecar.with_suffix(s) for s in IMAGE_SUFFIXES if sidecar.with_suffix(s).exists()), None)
        if image is None:
            raise ValueError(f"{sidecar}: no image with the same name beside it")
        try:
            record = json.loads(sidecar.read_text())
            records.append(FalseAlarm(
                str(record["camera"]), float(record["time"]), image,
                _feedback_boxes(record, names, str(sidecar), "boxes"),
                _feedback_boxes(record, names, str(sidecar), "labels") if "labels" in record else None))
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{sidecar}: not a false-alarm record (camera, time, boxes, class): {exc}") from None
    return records


def false_alarm_items(records: list[FalseAlarm], detector: Detector | None = None,
                      confidence: float = 0.25) -> list[DatasetItem]:
    """Hard negatives: the operator's corrected labels as they are; else the detector's boxes that do not repeat a
    marked false alarm (the rest of the scene stays labelled); without a detector, a background image."""
    items = []
    for record in records:
        if record.corrected is not None:
            boxes, reviewed = record.corrected, True
        elif detector is not None:
            detected = detector_boxes(detector, [read_image(record.image)], confidence)[0]
            overlaps = box_iou(detected.xyxy, record.wrong.xyxy)
            same_class = detected.class_id[:, None] == record.wrong.class_id[None, :]
            boxes, reviewed = detected.select(~((overlaps >= 0.5) & same_class).any(axis=1)), False
        else:
            boxes, reviewed = Boxes.of(np.zeros((0, 4)), []), True
        items.append(DatasetItem(record.camera, record.captured_at, "false-alarm", record.image, boxes, reviewed))
    return items


def clip_frames(clip: Path, times: list[float]) -> list[tuple[float, np.ndarray]]:
    """Frames of a video file at the given seconds from its start (those past its end are skipped)."""
    capture = cv2.VideoCapture(str(clip))
    if not capture.isOpened():
        raise ValueError(f"{clip}: not a readable video")
    try:
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        frames = []
        for seconds in sorted(times):
            capture.set(cv2.CAP_PROP_POS_FRAMES, round(seconds * fps))
            ok, image = capture.read()
            if ok:
                frames.append((round(seconds * fps) / fps, image))
        return frames
    finally:
        capture.release()


def clip_duration(clip: Path) -> float:
    capture = cv2.VideoCapture(str(clip))
    try:
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        return capture.get(cv2.CAP_PROP_FRAME_COUNT) / fps
    finally:
        capture.release()


def labelled_clip_items(camera: str, clip: Path, times: list[float], source: str, detector: Detector | None,
                        confidence: float) -> list[DatasetItem]:
    frames = clip_frames(clip, times)
    images = [image for _, image in frames]
    boxes = (detector_boxes(detector, images, confidence) if detector is not None
             else [Boxes.of(np.zeros((0, 4)), [])] * len(images))
    return [DatasetItem(camera, seconds, source, image, found, reviewed=False)
            for (seconds, image), found in zip(frames, boxes, strict=True)]


def missed_event_times(truth_csv: Path, window_s: float, step_s: float) -> dict[str, list[float]]:
    """Per camera, the seconds to sample around each missed event (its interval widened by `window_s`)."""
    times: dict[str, set[float]] = defaultdict(set)
    for event in load_event_csv(truth_csv):
        for seconds in np.arange(max(0.0, event.start - window_s), event.end + window_s + 1e-9, step_s):
            times[event.camera].add(round(float(seconds), 3))
    return {camera: sorted(values) for camera, values in times.items()}


def background_times(clip: Path, count: int) -> list[float]:
    """`count` instants evenly spread over the clip."""
    duration = clip_duration(clip)
    return [duration * (i + 0.5) / count for i in range(count)] if count and duration > 0 else []


def deduplicate(items: list[DatasetItem]) -> list[DatasetItem]:
    """One item per (camera, time): a false alarm beats a missed-event frame, which beats a background sample."""
    best: dict[tuple[str, int], DatasetItem] = {}
    for item in sorted(items, key=lambda i: SOURCES.index(i.source)):
        best.setdefault((item.camera, round(item.captured_at * 1000)), item)
    return sorted(best.values(), key=lambda i: (i.camera, i.captured_at))


def keep_reviewed(items: list[DatasetItem], previous: Dataset | None) -> list[DatasetItem]:
    """Rebuilding never loses an operator's work: a frame reviewed in the previous build keeps its labels, and a
    reviewed frame the sources no longer give is carried over (its pixels read now, before the folder is rewritten)."""
    if previous is None:
        return items
    reviewed = {item.name: item for item in previous.items if item.reviewed}
    kept = [replace(item, boxes=reviewed[item.name].boxes, reviewed=True) if item.name in reviewed else item
            for item in items]
    names = {item.name for item in items}
    return kept + [replace(item, image=read_image(previous.image_path(item)), split="")
                   for name, item in reviewed.items() if name not in names]


@dataclass(frozen=True)
class SplitPlan:
    """How frames are divided: contiguous blocks of `block_seconds` per camera, about `val_fraction` of the blocks
    to validation (cameras in `val_cameras` entirely), validation frames within `guard_seconds` of a training frame
    of the same camera dropped."""

    val_fraction: float = 0.2
    block_seconds: float = 60.0
    guard_seconds: float = 2.0
    val_cameras: frozenset[str] = frozenset()
    seed: int = 0


def time_block(item: DatasetItem, block_seconds: float) -> int:
    return int(item.captured_at // block_seconds)


def assign_splits(items: list[DatasetItem], plan: SplitPlan) -> tuple[list[DatasetItem], int]:
    """Items with their split set, and how many validation frames the guard dropped."""
    rng = random.Random(plan.seed)
    by_camera: dict[str, list[DatasetItem]] = defaultdict(list)
    for item in items:
        by_camera[item.camera].append(item)
    assigned, dropped = [], 0
    for camera, frames in sorted(by_camera.items()):
        blocks = sorted({time_block(item, plan.block_seconds) for item in frames})
        if camera in plan.val_cameras:
            val_blocks = set(blocks)
        elif len(blocks) < 2:
            val_blocks = set()  # one block cannot be split without leaking; it all trains
        else:
            wanted = min(len(blocks) - 1, max(1, round(len(blocks) * plan.val_fraction)))
            val_blocks = set(rng.sample(blocks, wanted))
        train_times = np.array(sorted(i.captured_at for i in frames
                                      if time_block(i, plan.block_seconds) not in val_blocks))
        for item in frames:
            if time_block(item, plan.block_seconds) not in val_blocks:
                assigned.append(replace(item, split="train"))
            elif len(train_times) and np.min(np.abs(train_times - item.captured_at)) < plan.guard_seconds:
                dropped += 1
            else:
                assigned.append(replace(item, split="val"))
    return assigned, dropped


def verify_no_leakage(items: list[DatasetItem], plan: SplitPlan) -> None:
    """Raises if a camera's time block has frames in two splits, or a validation frame sits within the guard of a
    training frame of the same camera."""
    splits_of_block: dict[tuple[str, int], set[str]] = defaultdict(set)
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    for item in items:
        splits_of_block[(item.camera, time_block(item, plan.block_seconds))].add(item.split)
        times[(item.camera, item.split)].append(item.captured_at)
    for (camera, block), splits in splits_of_block.items():
        if len(splits) > 1:
            raise AssertionError(f"camera {camera} block {block} is in {sorted(splits)}")
    for (camera, split), values in times.items():
        if split != "val" or not times.get((camera, "train")):
            continue
        train = np.asarray(times[(camera, "train")])
        closest = min(float(np.min(np.abs(train - t))) for t in values)
        if closest < plan.guard_seconds:
            raise AssertionError(f"camera {camera}: a validation frame is {closest:.2f} s from a training frame")


def write_dataset(root: Path, items: list[DatasetItem], names: dict[int, str]) -> Path:
    """Writes images, labels, data.yaml and manifest.csv (replacing a dataset already there); returns data.yaml.

    The new dataset is written beside `root` and renamed into place, so an interruption leaves the previous one
    whole (at worst under its `.previous` name for a moment, which the next load or write puts back)."""
    root = Path(root).resolve()  # a link to a bigger disk: the dataset is swapped there, and the link stays
    if os.path.ismount(root):
        raise ValueError(f"{root} is a mount point, and a dataset is swapped in beside its folder: give a folder "
                         "inside it")
    restore_interrupted_write(root)
    foreign = sorted(path.name for path in root.iterdir() if path.name not in DATASET_ENTRIES) if root.is_dir() else []
    if foreign:
        raise ValueError(f"{root} holds more than a dataset ({', '.join(foreign[:3])}): give an empty or dataset "
                         "folder")
    staging = root.parent / f".{root.name}.building"
    shutil.rmtree(staging, ignore_errors=True)  # left by a build that was killed
    staging.mkdir(parents=True)
    try:
        _write_dataset_files(staging, items, names)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = _previous_folder(root)
    shutil.rmtree(previous, ignore_errors=True)  # still there only when a write stopped after its swap
    if root.exists():
        root.rename(previous)
    staging.rename(root)
    shutil.rmtree(previous, ignore_errors=True)
    return root / "data.yaml"


def _write_dataset_files(folder: Path, items: list[DatasetItem], names: dict[int, str]) -> None:
    for split in SPLITS:
        (folder / "images" / split).mkdir(parents=True)
        (folder / "labels" / split).mkdir(parents=True)
    for item in items:
        image_path = folder / "images" / item.split / f"{item.name}.jpg"
        if isinstance(item.image, np.ndarray):
            if not cv2.imwrite(str(image_path), item.image):
                raise OSError(f"could not write {image_path}")
        else:
            shutil.copyfile(item.image, image_path)
        width, height = item.size()
        (folder / "labels" / item.split / f"{item.name}.txt").write_text(
            yolo_text(ImageLabels(image_path.name, width, height, item.boxes)))
    write_manifest(Dataset(folder, names, items))
    # No `path` key: ultralytics then resolves train/val against this file's folder.
    data = {"train": "images/train", "val": "images/val", "names": dict(sorted(names.items()))}
    (folder / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def _previous_folder(root: Path) -> Path:
    return root.parent / f".{root.name}.previous"


def restore_interrupted_write(root: Path) -> None:
    """Puts back the previous dataset when a write stopped between moving it aside and renaming the new one in."""
    root = Path(root).resolve()  # as write_dataset swaps it: a link's target, even while the link dangles
    previous = _previous_folder(root)
    if previous.is_dir() and not root.exists():
        previous.rename(root)


@dataclass
class Dataset:
    """A dataset folder as written by write_dataset."""

    root: Path
    names: dict[int, str]
    items: list[DatasetItem] = field(default_factory=list)

    def image_path(self, item: DatasetItem) -> Path:
        return self.root / "images" / item.split / f"{item.name}.jpg"

    def label_path(self, item: DatasetItem) -> Path:
        return self.root / "labels" / item.split / f"{item.name}.txt"

    def labels(self, item: DatasetItem) -> ImageLabels:
        width, height = item.size()
        return ImageLabels(f"{item.name}.jpg", width, height, item.boxes)


def load_dataset(root: Path) -> Dataset:
    root = Path(root)
    restore_interrupted_write(root)
    try:
        names = {int(k): str(v) for k, v in yaml.safe_load((root / "data.yaml").read_text())["names"].items()}
        with (root / "manifest.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, KeyError, AttributeError) as exc:
        raise ValueError(f"{root}: not a cityguard dataset (data.yaml with names, manifest.csv): {exc}") from None
    dataset = Dataset(root, names)
    for row in rows:
        image = root / "images" / row["split"] / f"{row['name']}.jpg"
        height, width = read_image(image).shape[:2]
        boxes = load_yolo_labels(root / "labels" / row["split"] / f"{row['name']}.txt", width, height)
        item = DatasetItem(row["camera"], float(row["captured_at"]), row["source"], image, boxes,
                           row["reviewed"] == "1", row["split"])
        if item.name != row["name"]:
            raise ValueError(f"{root}/manifest.csv: row {row['name']} does not match its camera/time/source")
        dataset.items.append(item)
    return dataset


def replace_labels(dataset: Dataset, imported: list[ImageLabels]) -> int:
    """Writes imported labels over the dataset's (matched by image file name) and marks them reviewed; returns
    how many images were updated. An image the dataset does not have is an error."""
    by_name = {f"{item.name}.jpg": index for index, item in enumerate(dataset.items)}
    unknown = [labels.name for labels in imported if Path(labels.name).name not in by_name]
    if unknown:
        raise ValueError(f"{len(unknown)} labelled images are not in {dataset.root}, e.g. {unknown[0]}")
    for labels in imported:
        index = by_name[Path(labels.name).name]
        item = replace(dataset.items[index], boxes=labels.boxes, reviewed=True)
        dataset.items[index] = item
        dataset.label_path(item).write_text(yolo_text(labels))
    write_manifest(dataset)
    return len(imported)


def write_manifest(dataset: Dataset) -> None:
    with (dataset.root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, MANIFEST_FIELDS)
        writer.writeheader()
        for item in dataset.items:
            writer.writerow({"name": item.name, "split": item.split, "camera": item.camera,
                             "captured_at": f"{item.captured_at:.3f}", "source": item.source,
                             "reviewed": int(item.reviewed)})


def statistics(dataset: Dataset) -> dict:
    """Images and boxes per split, class, camera and source; background images (no boxes) counted apart."""
    per_class: dict[str, Counter] = defaultdict(Counter)
    per_camera: dict[str, Counter] = defaultdict(Counter)
    per_source: Counter = Counter()
    per_split: Counter = Counter()
    for item in dataset.items:
        per_split[item.split] += 1
        per_source[item.source] += 1
        camera = per_camera[item.camera]
        camera[f"{item.split}_images"] += 1
        camera["boxes"] += len(item.boxes)
        camera["background_images"] += not len(item.boxes)
        camera["unreviewed_images"] += not item.reviewed
        for class_id in set(item.boxes.class_id.tolist()):
            per_class[dataset.names.get(class_id, str(class_id))][f"{item.split}_images"] += 1
        for class_id in item.boxes.class_id.tolist():
            per_class[dataset.names.get(class_id, str(class_id))][f"{item.split}_boxes"] += 1
    return {"images": dict(per_split), "sources": dict(per_source),
            "classes": {name: dict(counts) for name, counts in sorted(per_class.items())},
            "cameras": {name: dict(counts) for name, counts in sorted(per_camera.items())}}

"""A site's own detection dataset in the YOLO layout ultralytics trains from, built from operator feedback.

Sources, each frame tagged with its camera and capture time:
- false alarms an operator marked (JPEG + JSON under a feedback folder, see read_false_alarms): kept as hard
  negatives (the records of one frame as one), with the operator's corrected labels if given, else the detector's
  boxes minus the false ones (no boxes at all: a background image with an empty label file); their time is the
  producer's wall clock (unix seconds);
- frames around missed events (intervals as in `cityguard eval events` truth CSVs), read from the camera's clip;
- an even sample of each camera's footage, so the model keeps seeing the normal scene; clip frames' times are
  seconds from the clip's start.
Frames without operator labels are pre-labelled by the detector as the stages would report them (its confidence and
the per-class ones) and marked unreviewed in the manifest; operators correct them in a labelling tool (export, edit,
import).

Layout: images/<split>/<name>.jpg, labels/<split>/<name>.txt, data.yaml (class names = the serving model's, so a
fine-tuned model keeps its class ids; `split`: the plan_record its blocks were split by; `dropped_false_alarms`: the
false alarms the guards dropped), manifest.csv (name, split, camera, captured_at, source, reviewed).
The split is by camera and time: each camera's frames are cut into contiguous time blocks (on each clock apart) and
whole blocks go to one split, decided by a hash of the block and kept from the previous build, so a rebuild with more
footage or cameras never turns a validation frame into a training one. Validation frames close in time to a training
frame of the same camera and clock, or showing the same picture as one (a false alarm beside any other frame of its
camera), are dropped, so near-identical frames never sit on both sides.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import yaml
from pydantic import TypeAdapter, ValidationError

from cityguard.evaluation.detection import Boxes, box_iou
from cityguard.evaluation.loaders import (
    IMAGE_SUFFIXES,
    checked_boxes,
    load_event_csv,
    load_yolo_labels,
    read_image,
)
from cityguard.training.labels import ImageLabels, class_id_of, yolo_text
from infra.files import replace_file, replace_tree, replaceable_folder, restore_replaced
from processors.inference.detector import Detector, ImageDetections, keep_confident
from schemas.base import ID_MAX_CHARS
from schemas.settings.base import Identifier

SPLITS = ("train", "val")
SOURCES = ("false-alarm", "missed", "background")
MANIFEST_FIELDS = ["name", "split", "camera", "captured_at", "source", "reviewed"]
DATASET_ENTRIES = ("images", "labels", "manifest.csv", "data.yaml")  # all a dataset folder holds
WALL_CLOCK_SOURCES = frozenset({"false-alarm"})  # the others are clip frames, timed from the clip's start
# data.yaml's list of the false alarms the guards dropped: a model trained on the dataset has as good as seen them.
DROPPED_ALARMS_KEY = "dropped_false_alarms"
CAMERA_ID = TypeAdapter(Identifier)


def item_name(camera: str, captured_at: float, source: str) -> str:
    return f"{camera}_{round(captured_at * 1000):013d}_{source}"


@dataclass(frozen=True)
class DatasetItem:
    camera: str
    captured_at: float  # unix seconds for a false alarm, seconds from the start of the camera's clip for the others
    source: str  # one of SOURCES
    image: np.ndarray | Path  # BGR pixels, or a JPEG already on disk
    boxes: Boxes
    reviewed: bool  # labels checked by an operator (not only the detector's)
    split: str = ""

    @property
    def name(self) -> str:
        return item_name(self.camera, self.captured_at, self.source)

    def pixels(self) -> np.ndarray:
        return self.image if isinstance(self.image, np.ndarray) else read_image(self.image)

    def size(self) -> tuple[int, int]:
        height, width = self.pixels().shape[:2]
        return width, height


def as_served(result: ImageDetections, confidence: float, class_confidence: dict[int, float]) -> ImageDetections:
    """What the stages pass on of a detector's output: above the lowest configured confidence (where the backend
    cuts), then each class above its own (keep_confident)."""
    floor = min([confidence, *class_confidence.values()])
    return keep_confident(result.subset(result.confidence >= floor), confidence, class_confidence)


def detector_boxes(detector: Detector, images: list[np.ndarray], confidence: float,
                   class_confidence: dict[int, float] | None = None) -> list[Boxes]:
    """The boxes the stages would report on each image, clipped to it; a box left without area is dropped, as a
    label it would not load back (labels are checked on every load)."""
    results = detector.detect(images) if images else []
    boxes = []
    for result, image in zip(results, images, strict=True):
        served = as_served(result, confidence, class_confidence or {})
        height, width = image.shape[:2]
        xyxy = np.clip(np.asarray(served.xyxy, dtype=float).reshape(-1, 4), 0, [width, height, width, height])
        found = Boxes.of(xyxy, served.class_id, served.confidence)
        boxes.append(found.select((xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])))
    return boxes


def _feedback_boxes(entries, names: dict[int, str], width: int, height: int, where: str) -> Boxes:
    """Boxes listed as [{"class": name or id, "xyxy": [x1, y1, x2, y2]}, ...], each checked against the image."""
    if not isinstance(entries, list):
        raise ValueError(f"{where}: expected a list of {{class, xyxy}} boxes, got {json.dumps(entries)}")

    def rows():
        for number, entry in enumerate(entries, 1):
            place = f"{where}[{number}]"
            if not isinstance(entry, dict) or not {"class", "xyxy"} <= set(entry):
                raise ValueError(f"{place}: expected {{\"class\": name, \"xyxy\": [x1, y1, x2, y2]}}, got "
                                 f"{json.dumps(entry)}")
            class_id = entry["class"]
            yield place, entry["xyxy"], class_id_of(class_id, names, place) if isinstance(class_id, str) else class_id

    return checked_boxes(rows(), width, height, names)


def _wrong_entries(record: dict) -> tuple[str, list]:
    """The field the blamed boxes come from and its {class, xyxy} entries: `wrong`, or an older record's `boxes`
    with one `class` for all of them."""
    if "wrong" in record:
        return "wrong", record["wrong"]
    boxes = record["boxes"]
    return "boxes", [{"class": record["class"], "xyxy": box} for box in boxes] if isinstance(boxes, list) else boxes


@dataclass(frozen=True)
class FalseAlarm:
    """A false alarm an operator marked: the frame, the wrong boxes, and optionally the full corrected labels."""

    camera: str
    captured_at: float
    image: Path
    wrong: Boxes
    corrected: Boxes | None

    @property
    def name(self) -> str:
        """Its frame's name in a dataset."""
        return item_name(self.camera, self.captured_at, "false-alarm")


def read_false_alarms(folder: Path, names: dict[int, str]) -> list[FalseAlarm]:
    """The records under <folder>/<camera>/: <stem>.jpg with <stem>.json {"camera" (the folder's), "time" (unix
    seconds), "event_id", "wrong": [{"class": name, "xyxy": [x1, y1, x2, y2]}, ...], optional "labels": the corrected
    labels as the same entries}. A record written before `wrong` existed gives `boxes` ([[x1, y1, x2, y2], ...]) and
    one `class` for all of them instead. Boxes are in the JPEG's pixels and must lie in it; classes are the
    dataset's. The records of one frame (two incidents on it: same camera and time) come back as one
    (merged_false_alarm)."""
    by_frame: dict[str, list[FalseAlarm]] = defaultdict(list)
    for sidecar in sorted(Path(folder).glob("*/*.json")):
        record = read_false_alarm(sidecar, names)
        by_frame[record.name].append(record)
    return [merged_false_alarm(records) for records in by_frame.values()]


def read_false_alarm(sidecar: Path, names: dict[int, str]) -> FalseAlarm:
    """One record of read_false_alarms. Its camera becomes part of file names in the dataset, so it must be a camera
    id and the folder's."""
    image = next((sidecar.with_suffix(s) for s in IMAGE_SUFFIXES if sidecar.with_suffix(s).exists()), None)
    if image is None:
        raise ValueError(f"{sidecar}: no image with the same name beside it")
    height, width = read_image(image).shape[:2]
    try:
        record = json.loads(sidecar.read_text())
        camera, captured_at = record["camera"], float(record["time"])
        field_name, wrong = _wrong_entries(record)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{sidecar}: not a false-alarm record (camera, time, wrong or boxes and class): "
                         f"{exc}") from None
    if camera != sidecar.parent.name:
        raise ValueError(f"{sidecar}: field 'camera' must be {json.dumps(sidecar.parent.name)}, the camera folder it "
                         f"is in, not {json.dumps(camera)}")
    try:
        CAMERA_ID.validate_python(camera)
    except ValidationError:
        raise ValueError(f"{sidecar}: field 'camera' {json.dumps(camera)} is not a camera id (letters, digits, _ . -, "
                         f"starting with a letter or digit, at most {ID_MAX_CHARS} characters)") from None
    if not math.isfinite(captured_at):
        raise ValueError(f"{sidecar}: field 'time' must be a finite number of unix seconds, not "
                         f"{json.dumps(record['time'])}")
    return FalseAlarm(
        camera, captured_at, image, _feedback_boxes(wrong, names, width, height, f"{sidecar}: {field_name}"),
        _feedback_boxes(record["labels"], names, width, height, f"{sidecar}: labels") if "labels" in record else None)


def merged_false_alarm(records: list[FalseAlarm]) -> FalseAlarm:
    """The records of one frame as one false alarm: every record's wrong boxes, and the corrected labels they give
    (a box repeating one already taken counts once), less those any record marks wrong. One record's alone would
    leave the box another blamed labelled as a true detection."""
    wrong = joined([record.wrong for record in records])
    corrected = None
    for labels in (record.corrected for record in records if record.corrected is not None):
        corrected = labels if corrected is None else joined(
            [corrected, labels.select(~repeats(labels, corrected).any(axis=1))])
    if corrected is not None:
        corrected = corrected.select(~repeats(corrected, wrong).any(axis=1))
    return replace(records[0], wrong=wrong, corrected=corrected)


def joined(parts: list[Boxes]) -> Boxes:
    return Boxes.of(np.concatenate([part.xyxy for part in parts]), np.concatenate([part.class_id for part in parts]),
                    np.concatenate([part.confidence for part in parts]))


def repeats(boxes: Boxes, marked: Boxes, iou_threshold: float = 0.5) -> np.ndarray:
    """(boxes, marked) matrix: whether a box repeats a marked one (same class, IoU >= threshold)."""
    return ((box_iou(boxes.xyxy, marked.xyxy) >= iou_threshold)
            & (boxes.class_id[:, None] == marked.class_id[None, :]))


def false_alarm_items(records: list[FalseAlarm], detector: Detector | None = None, confidence: float = 0.25,
                      class_confidence: dict[int, float] | None = None) -> list[DatasetItem]:
    """Hard negatives: the operator's corrected labels; else the detector's boxes that do not repeat a
    marked false alarm (the rest of the scene stays labelled); without a detector, a background image."""
    items = []
    for record in records:
        if record.corrected is not None:
            boxes, reviewed = record.corrected, True
        elif detector is not None:
            detected = detector_boxes(detector, [read_image(record.image)], confidence, class_confidence)[0]
            boxes, reviewed = detected.select(~repeats(detected, record.wrong).any(axis=1)), False
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
                        confidence: float, class_confidence: dict[int, float] | None = None) -> list[DatasetItem]:
    frames = clip_frames(clip, times)
    images = [image for _, image in frames]
    boxes = (detector_boxes(detector, images, confidence, class_confidence) if detector is not None
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
    """How frames are divided: contiguous blocks of `block_seconds` per camera and clock, about `val_fraction` of
    the blocks to validation (cameras in `val_cameras` entirely), validation frames within `guard_seconds` of a
    training frame of the same camera and clock, or showing the same picture as one (compared_by_picture),
    dropped. `seed` picks another division of new blocks."""

    val_fraction: float = 0.2
    block_seconds: float = 60.0
    guard_seconds: float = 2.0
    val_cameras: frozenset[str] = frozenset()
    seed: int = 0


BlockKey = tuple[str, str, int]  # camera, time base, block number


def plan_record(plan: SplitPlan) -> dict[str, float | list[str]]:
    """What decides each block's split, kept in data.yaml: a rebuild keeps its blocks' splits only under the same
    (with other block boundaries, a block holding one frame the previous build validated on takes training frames
    with it into validation), and its held-out cameras only while they stay held out."""
    return {"block_seconds": plan.block_seconds, "val_fraction": plan.val_fraction, "seed": plan.seed,
            "val_cameras": sorted(plan.val_cameras)}


def time_base(item: DatasetItem) -> str:
    """The clock an item's time reads: false alarms carry the producer's wall clock, clip frames seconds from the
    clip's start. Times on different clocks are never compared (a file camera loops its clip at any wall time)."""
    return "wall" if item.source in WALL_CLOCK_SOURCES else "clip"


def time_block(item: DatasetItem, block_seconds: float) -> BlockKey:
    return item.camera, time_base(item), int(item.captured_at // block_seconds)


def block_share(block: BlockKey, seed: int) -> float:
    """Where a block falls in [0, 1): a hash of the block itself, so its split depends on no other block, camera or
    frame order, and a rebuild with more footage or cameras decides it the same way."""
    digest = hashlib.sha256(json.dumps([seed, *block]).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def camera_block_splits(camera: str, blocks: list[BlockKey], plan: SplitPlan,
                        kept: dict[BlockKey, set[str]]) -> dict[BlockKey, str]:
    """The split of each of one camera's blocks. A held-out camera's all go to validation. A block the previous
    build had keeps its split (validation if any of its frames was there: a frame a model was gated on never
    becomes training data of the next one). A new block goes to validation when its share is below val_fraction;
    when that leaves a camera nothing to train on, or nothing to validate on with two blocks or more, the new block
    with the highest (lowest) share goes there instead."""
    if camera in plan.val_cameras:
        return dict.fromkeys(blocks, "val")
    splits = {block: ("val" if "val" in kept[block] else "train") if block in kept
              else "val" if block_share(block, plan.seed) < plan.val_fraction else "train"
              for block in blocks}
    new = sorted((block for block in blocks if block not in kept), key=lambda block: block_share(block, plan.seed))
    if new and "train" not in splits.values():
        splits[new[-1]] = "train"
    if new and len(blocks) > 1 and "val" not in splits.values():
        splits[new[0]] = "val"
    return splits


# False alarms are also compared by picture with the camera's other frames: they carry the wall clock and clip
# frames seconds into the clip, and nothing ties the two (a file camera loops its clip at any wall time, a live
# camera's recording has no trusted start), so only the pictures can tell that a false alarm shows the very scene of
# a clip frame, or of another false alarm a loop later. Two clip frames are each one moment of the clip: the time
# guard keeps them apart, and a still scene does not make them the same picture.
# The pictures are grey thumbnails (area-averaged, so JPEG noise and the frame's size wash out). The second is moved
# onto the first by the shift phase correlation finds (a camera nudged, a recording cropped), the edges that shift
# exposes are cut off, and both are set to mean 0 and standard deviation 1 (the producer's JPEG of a frame is about
# 1.2 grey levels brighter than OpenCV's decode of it; exposure and gain drift). The measure is the largest
# difference between their cells, in those standard deviations: a moving person or car shows as one cell far off.
# Calibrated on the shared clips: the producer's JPEG (simplejpeg, quality 80) of a frame against the build's own
# decode of it, by day and dimmed to a fifth as at night, also re-encoded at quality 50, at half size, shifted by 2
# to 16 px, 3 or 6 grey levels brighter or darker, or with 15 % less or more gain, measures at most 0.80; campus
# frames 2 s or more apart (the default time guard) at least 1.95, street frames 0.08 s apart at least 1.04. A
# featureless scene (the car clip's road seen from above) measures under 1 for a third of its frames 2 s or more
# apart: there validation loses more false alarms than it need, and keeps none beside its own frame.
THUMBNAIL_SIZE = (128, 96)
SHIFT_MARGIN = 8  # thumbnail pixels (1/16 of the width): a larger shift is no nudge, and is not undone
COMPARED_SIZE = (32, 24)
SAME_PICTURE_DEVIATIONS = 1.0
_PHASE_WINDOW = cv2.createHanningWindow(THUMBNAIL_SIZE, cv2.CV_32F)
# A validation frame is compared with this many training frames at a time: batches large enough for numpy to pay off,
# and small enough to stop soon after the first training frame showing its picture.
PICTURE_BATCH = 64


def thumbnail(item: DatasetItem) -> np.ndarray:
    grey = cv2.cvtColor(item.pixels(), cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, THUMBNAIL_SIZE, interpolation=cv2.INTER_AREA)


def standardised(cells: np.ndarray) -> np.ndarray:
    """Each picture's cells (the last two axes) at mean 0 and standard deviation 1 (at least one grey level, so a
    black frame's noise is not blown up)."""
    centred = cells - cells.mean(axis=(-2, -1), keepdims=True)
    return centred / np.maximum(centred.std(axis=(-2, -1), keepdims=True), 1.0)


def inner_cells(picture: np.ndarray) -> np.ndarray:
    """The thumbnail without the edges a shift would bring in, in COMPARED_SIZE cells."""
    inner = picture[SHIFT_MARGIN:-SHIFT_MARGIN, SHIFT_MARGIN:-SHIFT_MARGIN]
    return cv2.resize(inner, COMPARED_SIZE, interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class Pictures:
    """Frames as the same-picture guard compares them, one row each, computed once per frame (a JPEG on disk is
    decoded once): grey thumbnails, their standardised cells as they are, and the phases of the windowed thumbnails'
    spectra, which phase correlation compares."""

    thumbnails: np.ndarray  # uint8, as area-averaged from the grey frame
    cells: np.ndarray
    phases: np.ndarray  # each spectrum over its magnitude (0 where it has none)

    @classmethod
    def of(cls, items: list[DatasetItem]) -> Pictures:
        thumbnails = np.stack([thumbnail(item) for item in items])
        grey = thumbnails.astype(np.float32)
        spectra = np.fft.rfft2(grey * _PHASE_WINDOW)
        return cls(thumbnails, standardised(np.stack([inner_cells(picture) for picture in grey])),
                   spectra / np.maximum(np.abs(spectra), np.finfo(np.float32).tiny))

    def __len__(self) -> int:
        return len(self.thumbnails)

    def rows(self, selected: slice) -> Pictures:
        return Pictures(self.thumbnails[selected], self.cells[selected], self.phases[selected])


def phase_shifts(reference: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """(dx, dy) of each picture against the reference, from their spectra's phases, as cv2.phaseCorrelate(reference,
    picture, _PHASE_WINDOW) finds it: the peak of the inverse of their normalised cross-power spectrum (the product
    of the phases), taken to sub-pixel by the weighted centroid of the 5 x 5 values around it (those inside the
    surface, centred as fftshift does)."""
    cross = np.conj(phases)
    cross *= reference
    height, width = THUMBNAIL_SIZE[1], THUMBNAIL_SIZE[0]
    surfaces = np.fft.irfft2(cross, s=(height, width))
    peak_y, peak_x = np.divmod(surfaces.reshape(len(phases), -1).argmax(axis=1), width)
    offsets = np.arange(-2, 3)
    rows = ((peak_y + height // 2) % height)[:, None] + offsets  # centred coordinates, as cv2 weighs them
    columns = ((peak_x + width // 2) % width)[:, None] + offsets
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((columns >= 0) & (columns < width))[:, None, :]
    values = surfaces[np.arange(len(phases))[:, None, None], ((rows - height // 2) % height)[:, :, None],
                      ((columns - width // 2) % width)[:, None, :]] * inside
    total = values.sum(axis=(1, 2)) + np.finfo(float).eps
    centre_y = (values.sum(axis=2) * rows).sum(axis=1) / total
    centre_x = (values.sum(axis=1) * columns).sum(axis=1) / total
    return np.stack([width / 2 - centre_x, height / 2 - centre_y], axis=1)


def moved(picture: np.ndarray, dx: float, dy: float) -> np.ndarray:
    return cv2.warpAffine(picture.astype(np.float32), np.float32([[1, 0, dx], [0, 1, dy]]), THUMBNAIL_SIZE,
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)


def picture_differences(first: Pictures, others: Pictures) -> np.ndarray:
    """How far each of `others` is from the `first` picture: the largest cell difference in standard deviations,
    once it is moved onto the first by the shift phase correlation finds; as it is when that shift is larger than
    SHIFT_MARGIN (also what a uniform picture, which has no phase, gives: half its size)."""
    shifts = phase_shifts(first.phases[0], others.phases)
    nudged = np.flatnonzero(np.abs(shifts).max(axis=1) <= SHIFT_MARGIN)
    cells = others.cells.copy()
    if len(nudged):
        cells[nudged] = standardised(np.stack([inner_cells(moved(others.thumbnails[row], *shifts[row]))
                                               for row in nudged]))
    return np.abs(cells - first.cells[0]).max(axis=(1, 2))


def compared_by_picture(clock: str, training_clock: str) -> bool:
    """Whether a validation frame on `clock` is compared by picture with training frames on `training_clock`."""
    return "wall" in (clock, training_clock)


# (validation frame, training frames) found to show different pictures, by name: what assign_splits has compared,
# verify_no_leakage, given the same set, does not compare (nor decode) again.
UnlikePictures = set[tuple[str, frozenset[str]]]


class TrainingFrames:
    """One camera's training frames as the guards see them, per clock: their names and times, and their pictures,
    computed when first compared."""

    def __init__(self, frames: list[DatasetItem]):
        self.frames: dict[str, list[DatasetItem]] = defaultdict(list)
        for item in frames:
            self.frames[time_base(item)].append(item)
        self.names = {clock: frozenset(item.name for item in items) for clock, items in self.frames.items()}
        self.times = {clock: np.asarray([item.captured_at for item in items]) for clock, items in self.frames.items()}
        self._pictures: dict[str, Pictures] = {}

    def pictures(self, clock: str) -> Pictures:
        if clock not in self._pictures:
            self._pictures[clock] = Pictures.of(self.frames[clock])
        return self._pictures[clock]

    def same_picture(self, item: DatasetItem, clock: str, picture: Pictures) -> str | None:
        """The name of the first training frame on `clock` showing the same picture as `item`, or None."""
        training = self.pictures(clock)
        for start in range(0, len(training), PICTURE_BATCH):
            batch = training.rows(slice(start, start + PICTURE_BATCH))
            same = np.flatnonzero(picture_differences(picture, batch) <= SAME_PICTURE_DEVIATIONS)
            if len(same):
                return self.frames[clock][start + same[0]].name
        return None

    def leak(self, item: DatasetItem, plan: SplitPlan, unlike: UnlikePictures) -> str | None:
        """Why `item` may not be a validation frame beside these training frames, or None; adds to `unlike` the
        training frames it was found not to look like."""
        clock = time_base(item)
        times = self.times.get(clock, np.zeros(0))
        if len(times):
            closest = float(np.min(np.abs(times - item.captured_at)))
            if closest < plan.guard_seconds:
                return f"is {closest:.2f} s from a training frame"
        picture = None
        for training_clock, names in self.names.items():
            if compared_by_picture(clock, training_clock) and (item.name, names) not in unlike:
                if picture is None:
                    picture = Pictures.of([item])
                same = self.same_picture(item, training_clock, picture)
                if same:
                    return f"shows the same picture as training frame {same}"
                unlike.add((item.name, names))
        return None


def assign_splits(items: list[DatasetItem], plan: SplitPlan, kept_splits: dict[str, str] | None = None,
                  unlike: UnlikePictures | None = None) -> tuple[list[DatasetItem], int]:
    """Items with their split set, and how many validation frames the guards dropped. `kept_splits` (frame name ->
    split) is the previous build's: its blocks keep their split. `unlike` collects the comparisons that found no
    same picture, for verify_no_leakage."""
    previous = kept_splits or {}
    unlike = set() if unlike is None else unlike
    kept: dict[BlockKey, set[str]] = defaultdict(set)
    for item in items:
        if item.name in previous:
            kept[time_block(item, plan.block_seconds)].add(previous[item.name])
    by_camera: dict[str, list[DatasetItem]] = defaultdict(list)
    for item in items:
        by_camera[item.camera].append(item)
    assigned, dropped = [], 0
    for camera, frames in sorted(by_camera.items()):
        blocks = sorted({time_block(item, plan.block_seconds) for item in frames})
        splits = camera_block_splits(camera, blocks, plan, kept)
        split_of = [splits[time_block(item, plan.block_seconds)] for item in frames]
        training = TrainingFrames([item for item, split in zip(frames, split_of, strict=True) if split == "train"])
        for item, split in zip(frames, split_of, strict=True):
            if split == "val" and training.leak(item, plan, unlike):
                dropped += 1
            else:
                assigned.append(replace(item, split=split))
    return assigned, dropped


def verify_no_leakage(items: list[DatasetItem], plan: SplitPlan, unlike: UnlikePictures | None = None) -> None:
    """Raises if a camera's time block has frames in two splits, or a validation frame sits within the guard of a
    training frame of the same camera and clock, or shows the same picture as one (compared_by_picture). Pictures
    `unlike` (assign_splits') already holds are not compared again."""
    unlike = set() if unlike is None else unlike
    splits_of_block: dict[BlockKey, set[str]] = defaultdict(set)
    for item in items:
        splits_of_block[time_block(item, plan.block_seconds)].add(item.split)
    for (camera, base, block), splits in splits_of_block.items():
        if len(splits) > 1:
            raise AssertionError(f"camera {camera} {base}-clock block {block} is in {sorted(splits)}")
    by_camera: dict[str, dict[str, list[DatasetItem]]] = defaultdict(lambda: defaultdict(list))
    for item in items:
        by_camera[item.camera][item.split].append(item)
    for camera in sorted(by_camera):
        training = TrainingFrames(by_camera[camera]["train"])
        for item in by_camera[camera]["val"]:
            reason = training.leak(item, plan, unlike)
            if reason:
                raise AssertionError(f"camera {camera}: validation frame {item.name} {reason}")


def write_dataset(root: Path, items: list[DatasetItem], names: dict[int, str], plan: SplitPlan | None = None,
                  dropped_alarms: list[str] | None = None) -> Path:
    """Writes images, labels, data.yaml (with the plan's plan_record, and the names of the false alarms the guards
    dropped, when given) and manifest.csv (replacing a dataset already there); returns data.yaml.

    The new dataset is written beside `root` and renamed into place, so an interruption leaves the previous one
    whole (at worst under its `.previous` name for a moment, which the next load or write puts back)."""
    root = replaceable_folder(root, DATASET_ENTRIES, "a dataset")  # a link to a bigger disk: swapped there
    replace_tree(root, lambda folder: _write_dataset_files(folder, items, names, plan, dropped_alarms))
    return root / "data.yaml"


def _write_dataset_files(folder: Path, items: list[DatasetItem], names: dict[int, str], plan: SplitPlan | None,
                         dropped_alarms: list[str] | None) -> None:
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
    if plan is not None:
        data["split"] = plan_record(plan)
    if dropped_alarms:
        data[DROPPED_ALARMS_KEY] = sorted(dropped_alarms)
    (folder / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def dropped_false_alarms(candidates: list[DatasetItem], assigned: list[DatasetItem]) -> list[str]:
    """The names of the false alarms among `candidates` that assign_splits dropped (not in `assigned`)."""
    kept = {item.name for item in assigned}
    return [item.name for item in candidates if item.source == "false-alarm" and item.name not in kept]


def read_dropped_false_alarms(root: Path) -> set[str]:
    """The false alarms a dataset's build dropped from validation as beside or looking like a training frame, as its
    data.yaml lists them."""
    try:
        data = yaml.safe_load((Path(root) / "data.yaml").read_text())
    except OSError as exc:
        raise ValueError(f"{root}: not a cityguard dataset (no data.yaml): {exc}") from None
    return set(data.get(DROPPED_ALARMS_KEY) or [])


def restore_interrupted_write(root: Path) -> None:
    """Puts back the previous dataset when a write stopped between moving it aside and renaming the new one in."""
    restore_replaced(Path(root).resolve())  # as write_dataset swaps it: a link's target, even while the link dangles


@dataclass
class Dataset:
    """A dataset folder as written by write_dataset."""

    root: Path
    names: dict[int, str]
    items: list[DatasetItem] = field(default_factory=list)
    split_plan: dict[str, float | list[str]] | None = None  # its data.yaml's plan_record; None when built without one

    def image_path(self, item: DatasetItem) -> Path:
        return self.root / "images" / item.split / f"{item.name}.jpg"

    def label_path(self, item: DatasetItem) -> Path:
        return self.root / "labels" / item.split / f"{item.name}.txt"

    def labels(self, item: DatasetItem) -> ImageLabels:
        width, height = item.size()
        return ImageLabels(f"{item.name}.jpg", width, height, item.boxes)


def read_manifest(root: Path) -> list[dict[str, str]]:
    """The rows of a dataset's manifest.csv (MANIFEST_FIELDS), without reading its images."""
    root = Path(root)
    restore_interrupted_write(root)
    try:
        with (root / "manifest.csv").open(newline="") as handle:
            return list(csv.DictReader(handle))
    except OSError as exc:
        raise ValueError(f"{root}: not a cityguard dataset (no manifest.csv): {exc}") from None


def load_dataset(root: Path) -> Dataset:
    root = Path(root)
    rows = read_manifest(root)
    try:
        data = yaml.safe_load((root / "data.yaml").read_text())
        names = {int(k): str(v) for k, v in data["names"].items()}
    except (OSError, KeyError, AttributeError, TypeError) as exc:
        raise ValueError(f"{root}: not a cityguard dataset (data.yaml with names, manifest.csv): {exc}") from None
    dataset = Dataset(root, names, split_plan=data.get("split"))
    for row in rows:
        image = root / "images" / row["split"] / f"{row['name']}.jpg"
        height, width = read_image(image).shape[:2]
        boxes = load_yolo_labels(root / "labels" / row["split"] / f"{row['name']}.txt", width, height, names)
        item = DatasetItem(row["camera"], float(row["captured_at"]), row["source"], image, boxes,
                           row["reviewed"] == "1", row["split"])
        if item.name != row["name"]:
            raise ValueError(f"{root}/manifest.csv: row {row['name']} does not match its camera/time/source")
        dataset.items.append(item)
    return dataset


def replace_labels(dataset: Dataset, imported: list[ImageLabels]) -> int:
    """Writes imported labels over the dataset's (matched by image file name) and marks them reviewed; returns
    how many images were updated.

    Everything is checked before anything is written: an image the dataset does not have, labels for another size
    of the image, a box outside it, a class the dataset does not have. Each label file is then replaced whole, and
    the manifest is rewritten even when the import stops part way, so it marks exactly the label files written as
    reviewed and a rebuild keeps them."""
    by_name = {f"{item.name}.jpg": index for index, item in enumerate(dataset.items)}
    unknown = [labels.name for labels in imported if Path(labels.name).name not in by_name]
    if unknown:
        raise ValueError(f"{len(unknown)} labelled images are not in {dataset.root}, e.g. {unknown[0]}")
    indices = [by_name[Path(labels.name).name] for labels in imported]
    staged = [(index, checked_labels(labels, dataset.items[index], dataset.names))
              for index, labels in zip(indices, imported, strict=True)]
    try:
        for index, labels in staged:
            item = replace(dataset.items[index], boxes=labels.boxes, reviewed=True)
            replace_file(dataset.label_path(item), yolo_text(labels))
            dataset.items[index] = item
    finally:
        write_manifest(dataset)
    return len(staged)


def checked_labels(labels: ImageLabels, item: DatasetItem, names: dict[int, str]) -> ImageLabels:
    """`labels` with every box checked against the item's image (its own size) and the dataset's classes."""
    width, height = item.size()
    if (labels.width, labels.height) != (width, height):
        raise ValueError(f"labels of {labels.name} are for a {labels.width}x{labels.height} image; it is "
                         f"{width}x{height}")
    rows = ((f"labels of {labels.name}, box {number}", box, class_id) for number, (box, class_id)
            in enumerate(zip(labels.boxes.xyxy, labels.boxes.class_id.tolist(), strict=True), 1))
    return replace(labels, boxes=checked_boxes(rows, width, height, names))


def write_manifest(dataset: Dataset) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, MANIFEST_FIELDS)
    writer.writeheader()
    for item in dataset.items:
        writer.writerow({"name": item.name, "split": item.split, "camera": item.camera,
                         "captured_at": f"{item.captured_at:.3f}", "source": item.source,
                         "reviewed": int(item.reviewed)})
    replace_file(dataset.root / "manifest.csv", text.getvalue())


def statistics(dataset: Dataset) -> dict:
    """Images and boxes per split, class, camera and source; per camera, images without boxes counted apart (not
    the "background" source: frames sampled evenly from a clip, which may hold boxes)."""
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
        camera["images_without_boxes"] += not len(item.boxes)
        camera["unreviewed_images"] += not item.reviewed
        for class_id in set(item.boxes.class_id.tolist()):
            per_class[dataset.names.get(class_id, str(class_id))][f"{item.split}_images"] += 1
        for class_id in item.boxes.class_id.tolist():
            per_class[dataset.names.get(class_id, str(class_id))][f"{item.split}_boxes"] += 1
    return {"images": dict(per_split), "sources": dict(per_source),
            "classes": {name: dict(counts) for name, counts in sorted(per_class.items())},
            "cameras": {name: dict(counts) for name, counts in sorted(per_camera.items())}}

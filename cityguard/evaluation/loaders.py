"""Readers for the labelled-data formats operators bring: YOLO label folders, counting CSVs, ShanghaiTech head
points, MOTChallenge ground truth, event intervals (CSV, or Event messages recorded as JSON lines) and line counts
(CSV, or LineCounts messages recorded as JSON lines).

Every error names the file and, where there is one, the line.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
from pydantic import BaseModel

from cityguard.evaluation.detection import Boxes
from cityguard.evaluation.events import EventInterval
from cityguard.evaluation.lines import LineKey, crossings
from processors.inference.jpeg_header import START_OF_IMAGE, jpeg_is_whole
from schemas import Event, EventState, LineCounts

M = TypeVar("M", bound=BaseModel)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MOT_PEDESTRIAN_CLASSES = (1,)  # MOT16/17/20; MOT15 files hold only pedestrians
MOT15_COLUMNS = 10  # a 2D MOT 2015 row (its last three columns a world position); MOT16/17/20 rows have 9
# How far a labelled box may reach past the image's edge and be clipped to it: labelling tools round to whole pixels
# (Pascal VOC counts them from 1) and YOLO text to 6 decimals; anything further is a box from another image or size.
EDGE_TOLERANCE_PX = 1.0


def open_csv(path: Path) -> io.StringIO:
    """A CSV file's text for the csv module: UTF-8, with or without the byte-order mark spreadsheet programs write
    first (it would stick to the first column's name or file name), any line endings. A file in another encoding (a
    spreadsheet's plain CSV in its Windows code page) is refused naming it, not failed on halfway through."""
    path = Path(path)
    try:
        return io.StringIO(path.read_bytes().decode("utf-8-sig"), newline="")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start}); save it as CSV UTF-8") from None


def csv_header_reader(handle) -> csv.DictReader:
    """A DictReader of an open CSV whose column names are read without the spaces around them ("camera, type")."""
    reader = csv.DictReader(handle)
    if reader.fieldnames is not None:
        reader.fieldnames = [name.strip() for name in reader.fieldnames]
    return reader


def image_files(folder: Path) -> list[Path]:
    """Images directly in `folder`, sorted by name."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


def read_image(path: Path) -> np.ndarray:
    """The image's BGR pixels. A JPEG must be whole: a cut one would go into a dataset as it is."""
    data = Path(path).read_bytes()
    if data.startswith(START_OF_IMAGE) and not jpeg_is_whole(data):
        raise ValueError(f"{path}: a cut JPEG (no end-of-image marker)")
    # OpenCV asserts on an empty file, where other bytes it cannot read decode to None.
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        raise ValueError(f"{path}: not a readable image")
    return image


def default_labels_folder(images: Path) -> Path:
    """The YOLO convention: .../images/... -> .../labels/..., else a labels folder beside the images folder."""
    parts = list(Path(images).parts)
    if "images" in parts:
        index = len(parts) - 1 - parts[::-1].index("images")
        parts[index] = "labels"
        return Path(*parts)
    return Path(images).parent / "labels"


def checked_box(xyxy, class_id, width: int, height: int,
                names: dict[int, str] | None = None) -> tuple[list[float], int]:
    """A labelled box [x1, y1, x2, y2] in pixels, clipped to the width x height image, and its class id (one of
    `names` when given); ValueError saying what is wrong, for the caller to put the file and line in front of."""
    try:
        x1, y1, x2, y2 = (float(value) for value in xyxy)
    except (TypeError, ValueError):
        raise ValueError(f"box {xyxy!r} is not four numbers") from None
    if not np.isfinite([x1, y1, x2, y2]).all():
        raise ValueError(f"box {[x1, y1, x2, y2]} is not four finite numbers")
    if isinstance(class_id, bool) or not isinstance(class_id, int | float | np.number) \
            or not float(class_id).is_integer():
        raise ValueError(f"class {class_id!r} is not a class id")
    if names is not None and int(class_id) not in names:
        raise ValueError(f"class {int(class_id)} is not one of the dataset's class ids {sorted(names)}")
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"box {[x1, y1, x2, y2]} has no area")
    reach = EDGE_TOLERANCE_PX
    if x1 < -reach or y1 < -reach or x2 > width + reach or y2 > height + reach:
        raise ValueError(f"box {[round(v, 2) for v in (x1, y1, x2, y2)]} is outside the {width}x{height} image")
    clipped = [max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)]
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:  # wholly within the tolerance past an edge
        raise ValueError(f"box {[round(v, 2) for v in (x1, y1, x2, y2)]} has no area inside the {width}x{height} "
                         "image")
    return clipped, int(class_id)


def checked_boxes(rows: Iterable[tuple[str, object, object]], width: int, height: int,
                  names: dict[int, str] | None = None) -> Boxes:
    """Boxes from (place, [x1, y1, x2, y2], class id) rows, each checked by checked_box; an error names its place."""
    xyxy, class_ids = [], []
    for place, box, class_id in rows:
        try:
            box, class_id = checked_box(box, class_id, width, height, names)
        except ValueError as exc:
            raise ValueError(f"{place}: {exc}") from None
        xyxy.append(box)
        class_ids.append(class_id)
    return Boxes.of(np.asarray(xyxy, dtype=float).reshape(-1, 4), class_ids)


def load_yolo_labels(path: Path, width: int, height: int, names: dict[int, str] | None = None) -> Boxes:
    """One image's YOLO label file (`class cx cy w h`, normalised); a missing file means no objects. Every box must
    lie in the image (and its class be one of `names`, when given)."""
    path = Path(path)
    if not path.exists():
        return Boxes.of(np.zeros((0, 4)), [])
    return checked_boxes(_yolo_rows(path, width, height), width, height, names)


def _yolo_rows(path: Path, width: int, height: int) -> Iterator[tuple[str, list[float], float]]:
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise ValueError(f"{path}:{number}: expected 'class cx cy w h', got {len(fields)} fields")
        try:
            class_id, cx, cy, w, h = (float(value) for value in fields)
        except ValueError:
            raise ValueError(f"{path}:{number}: not numbers: {line.strip()!r}") from None
        yield (f"{path}:{number}", [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width,
                                    (cy + h / 2) * height], class_id)


def load_count_csv(path: Path) -> dict[str, float]:
    """`file,count` rows (an optional header line is skipped) -> count per file name."""
    path = Path(path)
    counts: dict[str, float] = {}
    with open_csv(path) as handle:
        for number, row in enumerate(csv.reader(handle), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 2:
                raise ValueError(f"{path}:{number}: expected 'file,count', got {len(row)} columns")
            name, value = row[0].strip(), row[1].strip()
            try:
                count = float(value)
            except ValueError:
                if number == 1:
                    continue  # header
                raise ValueError(f"{path}:{number}: count {value!r} is not a number") from None
            if count < 0:
                raise ValueError(f"{path}:{number}: negative count {count:g}")
            if name in counts:
                raise ValueError(f"{path}:{number}: {name} is listed twice")
            counts[name] = count
    return counts


def load_shanghaitech_points(path: Path) -> np.ndarray:
    """Head points (N, 2) from a ShanghaiTech GT_IMG_*.mat: MATLAB image_info{1}.location."""
    from scipy.io import loadmat

    try:
        points = loadmat(str(path))["image_info"][0, 0][0, 0][0]
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a ShanghaiTech ground-truth file (image_info{{1}}.location): {exc}") from None
    return np.asarray(points, dtype=float).reshape(-1, 2)


def shanghaitech_truth_file(image: Path) -> Path:
    """images/IMG_12.jpg -> ground-truth/GT_IMG_12.mat (the dataset's layout; ground_truth is also accepted)."""
    for folder in ("ground-truth", "ground_truth"):
        candidate = image.parent.parent / folder / f"GT_{image.stem}.mat"
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"no ground-truth/GT_{image.stem}.mat beside the images folder of {image}")


def load_mot_counts(path: Path, frame_count: int | None = None, min_visibility: float = 0.0) -> dict[int, int]:
    """Pedestrians per frame from a MOTChallenge gt.txt: MOT16/17/20 rows frame,id,x,y,w,h,conf,class,visibility;
    2D MOT 2015 rows frame,id,x,y,w,h,conf,wx,wy,wz (pedestrians only; wx,wy,wz a world position or -1, never a
    class or a visibility).

    Rows count when conf (the "consider" flag) is not 0, the class is a pedestrian and visibility reaches
    `min_visibility`. With `frame_count`, frames 1..frame_count without rows count 0.
    """
    path = Path(path)
    counts: dict[int, int] = {frame: 0 for frame in range(1, (frame_count or 0) + 1)}
    with open_csv(path) as handle:
        for number, row in enumerate(csv.reader(handle), 1):
            while row and not row[-1].strip():
                row.pop()  # a trailing comma is no column
            if not row:
                continue
            if len(row) < 7:
                raise ValueError(f"{path}:{number}: expected frame,id,x,y,w,h,conf[,class,visibility]")
            try:
                values = [float(value) for value in row[:9]]
            except ValueError:
                raise ValueError(f"{path}:{number}: not numbers: {','.join(row)!r}") from None
            frame = int(values[0])
            mot15 = len(row) >= MOT15_COLUMNS
            class_id = int(values[7]) if len(values) > 7 and not mot15 else -1
            visibility = values[8] if len(values) > 8 and not mot15 else 1.0
            counts.setdefault(frame, 0)
            considered = values[6] != 0
            pedestrian = class_id in MOT_PEDESTRIAN_CLASSES or class_id == -1
            if considered and pedestrian and (visibility < 0 or visibility >= min_visibility):
                counts[frame] += 1
    return counts


# The column that marks a CSV of scores over time, one row a frame (`cityguard replay --frame-scores`), rather than
# events: the frame's number. Rows of frames look like events, short ones back to back, but are none.
FRAME_COLUMN = "frame"


def holds_frame_scores(path: Path) -> bool:
    """Whether the CSV at `path` holds per-frame scores (its header names FRAME_COLUMN), not events."""
    with open_csv(path) as handle:
        return FRAME_COLUMN in (csv_header_reader(handle).fieldnames or [])


def csv_rows(path: Path, required: tuple[str, ...], usage: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV with a header line holding the `required` columns; `usage` (the columns as the
    format names them) ends every error about a missing header column or a short row."""
    path = Path(path)
    with open_csv(path) as handle:
        reader = csv_header_reader(handle)
        missing = set(required) - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: header lacks {', '.join(sorted(missing))} (need {usage})")
        for row in reader:
            absent = [name for name in required if row[name] is None]  # DictReader's filler for a short row
            if absent:
                raise ValueError(f"{path}:{reader.line_num}: no {', '.join(absent)} (need {usage})")
            yield reader.line_num, row


def load_event_csv(path: Path) -> list[EventInterval]:
    """`camera,type,start,end[,score]` with a header line; times in seconds (unix or from the clip start)."""
    events = []
    for line, row in csv_rows(path, ("camera", "type", "start", "end"), "camera,type,start,end[,score]"):
        try:
            score = row.get("score")
            events.append(EventInterval(row["camera"].strip(), row["type"].strip(), event_number(row, "start"),
                                        event_number(row, "end"),
                                        event_number(row, "score") if score not in (None, "") else None))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}:{line}: {exc}") from None
    return events


def event_number(row: dict[str, str], name: str) -> float:
    """A number of an event CSV row; a ValueError naming the column otherwise."""
    try:
        return float(row[name])
    except ValueError:
        raise ValueError(f"{name} {row[name]!r} is not a number") from None


def json_messages(path: Path, schema: type[M]) -> Iterator[M]:
    """The messages of a JSON-lines file (one message a line, blank lines skipped), each an error naming its line
    where it is not a `schema` message."""
    article = "an" if schema.__name__[0] in "AEIOU" else "a"
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield schema.model_validate(json.loads(line))
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: not {article} {schema.__name__} message: {exc}") from None


def load_event_messages(path: Path) -> list[EventInterval]:
    """Event messages (one JSON object per line, as recorded from the events topic) -> one interval per event_id.

    The interval runs from started_at to ended_at, or to the last update of an event never resolved; the score is
    the highest confidence the event reached. Redelivered duplicates collapse into the same event.
    """
    lives: dict[str, list[Event]] = {}
    for event in json_messages(Path(path), Event):
        lives.setdefault(event.event_id, []).append(event)
    intervals = []
    for messages in lives.values():
        first = messages[0]
        resolved = [m.ended_at for m in messages if m.state is EventState.RESOLVED and m.ended_at is not None]
        end = max(resolved) if resolved else max(m.updated_at for m in messages)
        # An incident can be updated to what it turned out to be (a stopped vehicle that crashed): the last type.
        intervals.append(EventInterval(first.camera_id, messages[-1].type, min(m.started_at for m in messages), end,
                                       max(m.confidence for m in messages)))
    return intervals


def load_line_count_csv(path: Path) -> dict[LineKey, int]:
    """`camera,line,direction,count` with a header line: the crossings of each line in each direction."""
    counts: dict[LineKey, int] = {}
    for line, row in csv_rows(path, ("camera", "line", "direction", "count"), "camera,line,direction,count"):
        key = (row["camera"].strip(), row["line"].strip(), row["direction"].strip())
        if key in counts:
            raise ValueError(f"{path}:{line}: {','.join(key)} counted twice")
        try:
            counts[key] = int(row["count"])
        except ValueError:
            raise ValueError(f"{path}:{line}: count {row['count']!r} is not a whole number") from None
        if counts[key] < 0:
            raise ValueError(f"{path}:{line}: count {counts[key]} is negative")
    return counts


def load_line_count_messages(paths: Iterable[Path]) -> dict[LineKey, int]:
    """LineCounts messages (one JSON object per line, as `cityguard replay --line-counts` writes them or recorded
    from the line-counts topic) summed over their windows and classes. A window repeated in one file (redelivered on
    the topic) counts once; each file is footage of its own, so windows of two files count apart, even where they
    start at the same time (replays of two clips of one camera both count from the clip's start): a recording of the
    topic is given as one file, and one file given twice is refused."""
    windows: list[LineCounts] = []
    read: set[Path] = set()
    for path in paths:
        path = Path(path)
        if path.resolve() in read:
            raise ValueError(f"{path}: given twice (its crossings would count twice)")
        read.add(path.resolve())
        seen: set[tuple[str, str, float]] = set()
        for window in json_messages(path, LineCounts):
            if (window.camera_id, window.line_id, window.window_start) not in seen:
                seen.add((window.camera_id, window.line_id, window.window_start))
                windows.append(window)
    return crossings(windows)

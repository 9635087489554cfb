"""The promotion gate: a candidate model replaces the serving one only if it is not worse on the site's labelled
set and removes false alarms operators marked.

Checks, each with both figures and a verdict:
- mAP@0.5 over the labelled classes, and recall and precision at the operating point (the configured confidence,
  and each class's own where model.class_confidence sets one, as the stages report), not below the serving
  model's by more than the tolerance;
- AP@0.5 of every class the site's rules use, likewise (a class without labels is reported as not checked);
- on the false-alarm set, fewer detections repeating a marked false alarm (same class, IoU >= 0.5, reported at the
  operating point) than the serving model, or none when the serving model had none. Only false alarms the
  candidate did not train on count: all but those in its dataset's training split (unless the frame's labels there
  hold the wrong box) or dropped from its validation split as beside or looking like a training frame (none left:
  reported as not checked).
Precision counts the detections of every class labelled in the scored images or the candidate's dataset, so false
detections of a class the scored images happen not to hold count too. A detection of a class labelled nowhere
cannot be told right or wrong: such a class the rules act on or with its own confidence is reported as not checked
(reported_classes).
The scoring is cityguard.evaluation's; this module only compares.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cityguard.evaluation.detection import Boxes, DetectionResult, counts_at
from cityguard.evaluation.loaders import load_yolo_labels, read_image
from cityguard.evaluation.scoring import PrecisionRecall
from cityguard.training.dataset import (
    FalseAlarm,
    detector_boxes,
    read_dropped_false_alarms,
    read_manifest,
    repeats,
    restore_interrupted_write,
)
from cityguard.training.train import dataset_hash
from infra.files import replace_tree, replaceable_folder

REPORT_FILES = ("gate.json", "gate.md")  # all a gate report folder holds


@dataclass(frozen=True)
class Check:
    name: str
    serving: float | None  # None: not checked, nothing to measure it on
    candidate: float | None
    passed: bool
    reason: str

    @property
    def checked(self) -> bool:
        return self.serving is not None

    @property
    def verdict(self) -> str:
        return "not checked" if not self.checked else "pass" if self.passed else "FAIL"


@dataclass(frozen=True)
class GateReport:
    serving: str
    candidate: str
    passed: bool
    checks: list[Check]

    @property
    def reason(self) -> str:
        """The verdict with every check's reason when passed, else those that failed; either way those that could
        not be checked."""
        if self.passed:
            return "passed: " + "; ".join(check.reason for check in self.checks)
        return "refused: " + "; ".join(check.reason for check in self.checks if not check.passed or not check.checked)

    def outcome(self, promoted: bool) -> str:
        """What became of the candidate: serving, or why not."""
        if promoted:
            return f"promoted: {self.candidate} serves now"
        return "not promoted: run the gate with --promote to serve it" if self.passed else "not promoted"

    def to_json(self, promoted: bool) -> dict:
        return {"serving": self.serving, "candidate": self.candidate, "passed": self.passed, "promoted": promoted,
                "reason": self.reason, "checks": [asdict(check) for check in self.checks]}

    def markdown(self, promoted: bool) -> str:
        lines = [f"# Promotion gate: {self.candidate} against {self.serving}", "",
                 f"**{self.reason[0].upper()}{self.reason[1:]}**", "", f"{self.outcome(promoted).capitalize()}.", "",
                 "| check | serving | candidate | verdict |", "|---|---|---|---|"]
        lines += [f"| {c.name} | {_figure(c.serving)} | {_figure(c.candidate)} | {c.verdict} |" for c in self.checks]
        return "\n".join(lines) + "\n"


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def operating_counts(result: DetectionResult, class_confidence: dict[int, float]) -> PrecisionRecall:
    """True/false positives and misses over the scored classes (those labelled), each class at the confidence the
    stages report it at (its own in class_confidence, else the result's)."""
    counts = [counts_at(c.curve, c.truth_count, class_confidence.get(c.class_id, result.confidence))
              for c in result.classes]
    return PrecisionRecall(sum(c.true_positives for c in counts), sum(c.false_positives for c in counts),
                           sum(c.false_negatives for c in counts))


def not_worse(name: str, serving: float, candidate: float, tolerance: float) -> Check:
    passed = candidate >= serving - tolerance
    relation = "not below" if passed else "below"
    allowance = f" - {tolerance:g}" if tolerance else ""
    reason = f"{name} {candidate:.3f} {relation} serving {serving:.3f}{allowance}"
    return Check(name, serving, candidate, passed, reason)


def not_checked(name: str, why: str) -> Check:
    return Check(name, None, None, True, why)


def false_alarm_check(serving: int, candidate: int) -> Check:
    passed = candidate < serving or candidate == serving == 0
    if passed:
        reason = (f"repeats {candidate} of {serving} marked false alarms" if serving
                  else "repeats none of the marked false alarms")
    else:
        reason = f"repeats {candidate} marked false alarms, serving {serving}: none removed"
    return Check("false alarms repeated", float(serving), float(candidate), passed, reason)


def decide(serving: DetectionResult, candidate: DetectionResult, classes: list[str],
           false_alarms: tuple[int, int] | None, tolerance: float = 0.0, serving_name: str = "serving",
           candidate_name: str = "candidate", class_confidence: dict[int, float] | None = None) -> GateReport:
    """The verdict from both models' scores on the same labelled set, and (serving, candidate) counts of repeated
    false alarms (None: no held-out false alarm to score, that check is reported as not checked). Each of `classes`
    (reported_classes) has its AP compared where the set labels it, else is reported as not checked. A set without
    a labelled box refuses, and so does one on which the serving model finds none of the labelled boxes: 0 is not
    below 0, so any candidate would pass."""
    labelled = sum(c.truth_count for c in serving.classes)
    if not labelled:
        reason = f"no labelled boxes in the {serving.images} validation images: nothing to compare (check --labels)"
        return GateReport(serving_name, candidate_name, False, [Check("labelled boxes", 0.0, 0.0, False, reason)])
    if not serving.mean_average_precision:
        reason = (f"{serving_name} scores mAP@0.5 0 on the {labelled} labelled boxes of the {serving.images} "
                  "validation images: the set gives the serving model nothing to compare against (check --labels "
                  "and their class ids)")
        return GateReport(serving_name, candidate_name, False, [
            Check("mAP@0.5", 0.0, candidate.mean_average_precision, False, reason)])
    class_confidence = class_confidence or {}
    operating = f"@{serving.confidence:g}" + (" (class thresholds)" if class_confidence else "")
    serving_counts, candidate_counts = (operating_counts(r, class_confidence) for r in (serving, candidate))
    checks = [not_worse("mAP@0.5", serving.mean_average_precision, candidate.mean_average_precision, tolerance),
              not_worse(f"recall{operating}", serving_counts.recall, candidate_counts.recall, tolerance),
              not_worse(f"precision{operating}", serving_counts.precision, candidate_counts.precision, tolerance)]
    serving_ap = {c.name: c.average_precision for c in serving.classes if c.truth_count}
    candidate_ap = {c.name: c.average_precision for c in candidate.classes if c.truth_count}
    for name in classes:
        check = f"AP@0.5 {name}"
        checks.append(not_worse(check, serving_ap[name], candidate_ap.get(name, 0.0), tolerance) if name in serving_ap
                      else not_checked(check, f"{check} not checked (no labels)"))
    checks.append(false_alarm_check(*false_alarms) if false_alarms is not None
                  else not_checked("false alarms repeated", "no held-out false alarms: not checked"))
    return GateReport(serving_name, candidate_name, all(check.passed for check in checks), checks)


def repeated_false_alarms(detector, marked: list[tuple[Path, Boxes]], confidence: float,
                          class_confidence: dict[int, float] | None = None, iou_threshold: float = 0.5,
                          batch_size: int = 8) -> int:
    """How many marked false-alarm boxes the detector still reports as the stages would (same class, IoU >=
    threshold, at or above the confidence, or the class's own in class_confidence)."""
    repeated = 0
    for first in range(0, len(marked), batch_size):
        batch = marked[first:first + batch_size]
        found = detector_boxes(detector, [read_image(path) for path, _ in batch], confidence, class_confidence)
        for (_, wrong), boxes in zip(batch, found, strict=True):
            repeated += int(repeats(wrong, boxes, iou_threshold).any(axis=1).sum())
    return repeated


def dataset_split(images: Path) -> tuple[Path, str] | None:
    """(dataset folder, split) when `images` is a built dataset's images/<split> folder, else None."""
    images = Path(images).resolve()
    root = images.parent.parent
    if images.parent.name == "images" and (root / "manifest.csv").is_file():
        return root, images.name
    return None


def unreviewed_images(images: Path, labels: Path) -> tuple[int, int]:
    """(unreviewed, all) images of a built dataset's split when `labels` are its labels: the unreviewed ones carry
    only the detector's pre-labels, so scoring on them scores both models against the pre-labelling model."""
    built = dataset_split(images)
    if built is None or Path(labels).resolve() != built[0] / "labels" / built[1]:
        return 0, 0
    rows = [row for row in read_manifest(built[0]) if row["split"] == built[1]]
    return sum(row["reviewed"] != "1" for row in rows), len(rows)


def unseen_false_alarms(records: list[FalseAlarm], trained_on: Path | None) -> list[FalseAlarm]:
    """The false alarms a candidate is gated on, each with the wrong boxes it did not train on as such: all but those
    of frames the dataset it was trained on (its folder) dropped from validation as beside or looking like a
    training frame, and, on a frame of its training split, those its labels leave out (a box marked wrong after the
    build, on a frame already there, was trained on as a true detection); those marked since it was built count too.
    All of them for a model not trained here (None)."""
    if trained_on is None or not records:
        return records
    try:
        training = {row["name"] for row in read_manifest(trained_on) if row["split"] == "train"}
        dropped = read_dropped_false_alarms(trained_on)
    except ValueError as exc:
        raise ValueError(f"{exc}; it is the dataset the candidate was trained on, and without it the false alarms "
                         "it did not train on are unknown") from None
    unseen = []
    for record in records:
        if record.name in dropped:
            continue
        wrong = record.wrong
        if record.name in training:
            wrong = wrong.select(repeats(wrong, training_labels(trained_on, record.name)).any(axis=1))
        if len(wrong):
            unseen.append(replace(record, wrong=wrong))
    return unseen


def training_labels(dataset: Path, name: str) -> Boxes:
    """The labels a dataset's training frame `name` was trained with."""
    height, width = read_image(dataset / "images" / "train" / f"{name}.jpg").shape[:2]
    return load_yolo_labels(dataset / "labels" / "train" / f"{name}.txt", width, height)


class TrainingDataset(NamedTuple):
    folder: Path
    changed: bool  # its content differs from what the run trained on (rebuilt or relabelled since)


def training_dataset(run: dict, images: Path, given: Path | None) -> TrainingDataset | None:
    """The dataset a candidate was trained on: `given` (--dataset), else the one its run record names, else, when
    that is gone (moved to another disk), the dataset `images` are in when its content is the very one trained on
    (the run's data_hash); None for a model not trained here. ValueError when it cannot be found."""
    if given is not None:
        return TrainingDataset(given, _changed_since_training(run, given))
    if not run.get("data"):
        return None
    named = Path(run["data"]).parent
    restore_interrupted_write(named)
    if (named / "manifest.csv").is_file():
        return TrainingDataset(named, _changed_since_training(run, named))
    built = dataset_split(images)
    if built is not None and run.get("data_hash") == dataset_hash(built[0] / "data.yaml"):
        return TrainingDataset(built[0], False)
    raise ValueError(f"{named}: the dataset the candidate was trained on is not there, and {images} is not in a copy "
                     "of it (same content): give the dataset's folder with --dataset")


def _changed_since_training(run: dict, dataset: Path) -> bool:
    return bool(run.get("data_hash")) and dataset_hash(dataset / "data.yaml") != run["data_hash"]


def trained_images(images: list[Path], dataset: Path) -> list[Path]:
    """Those of `images` that are frames in the dataset's training folder, what ultralytics trains on (by name,
    wherever they were copied)."""
    training = dataset / "images" / "train"
    names = {path.stem for path in training.iterdir()} if training.is_dir() else set()
    return [image for image in images if image.stem in names]


def labelled_class_ids(label_files: list[Path]) -> set[int]:
    """The classes with a box in these YOLO label files (missing ones have none); each line's class field only, the
    files are checked in full when scored."""
    class_ids = set()
    for path in (path for path in label_files if path.exists()):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            try:
                class_ids.add(int(float(fields[0])))
            except (ValueError, OverflowError):
                raise ValueError(f"{path}:{number}: class {fields[0]!r} is not a class id") from None
    return class_ids


def dataset_label_files(dataset: Path) -> list[Path]:
    """Every label file of a built dataset, both splits."""
    return [dataset / "labels" / row["split"] / f"{row['name']}.txt" for row in read_manifest(dataset)]


def class_differences(serving: dict[int, str], candidate: dict[int, str]) -> list[str]:
    """Where a candidate's classes differ from the serving model's, id by id. Labels, datasets and
    model.class_confidence give classes by id and the rules act on names, so a candidate that numbers or names them
    otherwise is scored against labels it does not speak and would leave rules without their classes."""
    differences = []
    for class_id in sorted(serving.keys() | candidate.keys()):
        before, after = serving.get(class_id), candidate.get(class_id)
        if before != after:
            differences.append(f"{class_id} {before} missing" if after is None else f"{class_id} {after} added"
                               if before is None else f"{class_id} {before} is {after}")
    return differences


def reported_classes(rule_classes: list[str], class_confidence: dict[int, float], names: dict[int, str],
                     labelled: set[int]) -> list[str]:
    """The classes with a row of their own in the report (decide): those the rules act on, and those with their own
    confidence that nothing labels (`labelled`: the classes of the scored set and the candidate's dataset), which
    no figure counts and which are reported as not checked."""
    unlabelled = [names[class_id] for class_id in sorted(class_confidence)
                  if class_id in names and class_id not in labelled]
    return list(dict.fromkeys([*rule_classes, *unlabelled]))


def report_folder(out: Path) -> Path:
    """The folder write_report replaces; ValueError for one holding anything but a report, which replace_tree would
    remove. The gate asks before it scores the models, so a wrong --out costs no scoring."""
    return replaceable_folder(out, REPORT_FILES, "a gate report")


def write_report(report: GateReport, out: Path, promoted: bool) -> Path:
    """Writes gate.json and gate.md into a new folder and swaps it in for `out` whole (replace_tree), so that a
    reader (an operator, a script) meets both from one run and one outcome, never a gate.md that disagrees with
    gate.json, as a failure or a crash between two file replacements would leave them."""
    replace_tree(report_folder(out), lambda folder: _write_report_files(folder, report, promoted))
    return Path(out) / "gate.md"


def _write_report_files(folder: Path, report: GateReport, promoted: bool) -> None:
    folder.mkdir()
    (folder / "gate.json").write_text(json.dumps(report.to_json(promoted), indent=2, default=_plain) + "\n")
    (folder / "gate.md").write_text(report.markdown(promoted))


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")

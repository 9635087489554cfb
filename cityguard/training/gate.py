"""The promotion gate: a candidate model replaces the serving one only if it is not worse on the site's labelled
set and removes false alarms operators marked.

Checks, each with both figures and a verdict:
- mAP@0.5 over the labelled classes, and recall at the configured confidence, not below the serving model's by
  more than the tolerance;
- AP@0.5 of every class the site's rules use (that has labels), likewise;
- on the false-alarm set, fewer detections repeating a marked false alarm (same class, IoU >= 0.5) than the serving
  model, or none when the serving model had none.
The scoring is cityguard.evaluation's; this module only compares.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cityguard.evaluation.detection import Boxes, DetectionResult, box_iou
from cityguard.evaluation.runners import detect_images


@dataclass(frozen=True)
class Check:
    name: str
    serving: float
    candidate: float
    passed: bool
    reason: str


@dataclass(frozen=True)
class GateReport:
    serving: str
    candidate: str
    promoted: bool
    checks: list[Check]

    @property
    def reason(self) -> str:
        failed = [check for check in self.checks if not check.passed]
        if not failed:
            return "promoted: " + "; ".join(check.reason for check in self.checks)
        return "refused: " + "; ".join(check.reason for check in failed)

    def to_json(self) -> dict:
        return {"serving": self.serving, "candidate": self.candidate, "promoted": self.promoted,
                "reason": self.reason, "checks": [asdict(check) for check in self.checks]}

    def markdown(self) -> str:
        lines = [f"# Promotion gate: {self.candidate} against {self.serving}", "",
                 f"**{self.reason[0].upper()}{self.reason[1:]}**", "",
                 "| check | serving | candidate | verdict |", "|---|---|---|---|"]
        lines += [f"| {c.name} | {c.serving:.4g} | {c.candidate:.4g} | {'pass' if c.passed else 'FAIL'} |"
                  for c in self.checks]
        return "\n".join(lines) + "\n"


def overall_recall(result: DetectionResult) -> float:
    found = sum(c.counts.true_positives for c in result.classes)
    labelled = sum(c.truth_count for c in result.classes)
    return found / labelled if labelled else 0.0


def not_worse(name: str, serving: float, candidate: float, tolerance: float) -> Check:
    passed = candidate >= serving - tolerance
    relation = "not below" if passed else "below"
    allowance = f" - {tolerance:g}" if tolerance else ""
    reason = f"{name} {candidate:.3f} {relation} serving {serving:.3f}{allowance}"
    return Check(name, serving, candidate, passed, reason)


def false_alarm_check(serving: int, candidate: int) -> Check:
    passed = candidate < serving or candidate == serving == 0
    if passed:
        reason = (f"repeats {candidate} of {serving} marked false alarms" if serving
                  else "repeats none of the marked false alarms")
    else:
        reason = f"repeats {candidate} marked false alarms, serving {serving}: none removed"
    return Check("false alarms repeated", float(serving), float(candidate), passed, reason)


def decide(serving: DetectionResult, candidate: DetectionResult, rule_classes: list[str],
           false_alarms: tuple[int, int] | None, tolerance: float = 0.0, serving_name: str = "serving",
           candidate_name: str = "candidate") -> GateReport:
    """The verdict from both models' scores on the same labelled set, and (serving, candidate) counts of repeated
    false alarms (None: no false-alarm set, that check is left out). A set without a labelled box refuses: both
    models would score 0 on it, and 0 is not below 0, so any candidate would pass."""
    labelled = sum(c.truth_count for c in serving.classes)
    if not labelled:
        reason = f"no labelled boxes in the {serving.images} validation images: nothing to compare (check --labels)"
        return GateReport(serving_name, candidate_name, False, [Check("labelled boxes", 0.0, 0.0, False, reason)])
    checks = [not_worse("mAP@0.5", serving.mean_average_precision, candidate.mean_average_precision, tolerance),
              not_worse(f"recall@{serving.confidence:g}", overall_recall(serving), overall_recall(candidate),
                        tolerance)]
    serving_ap = {c.name: c.average_precision for c in serving.classes if c.truth_count}
    candidate_ap = {c.name: c.average_precision for c in candidate.classes if c.truth_count}
    for name in rule_classes:
        if name in serving_ap:
            checks.append(not_worse(f"AP@0.5 {name}", serving_ap[name], candidate_ap.get(name, 0.0), tolerance))
    if false_alarms is not None:
        checks.append(false_alarm_check(*false_alarms))
    return GateReport(serving_name, candidate_name, all(check.passed for check in checks), checks)


def repeated_false_alarms(detector, marked: list[tuple[Path, Boxes]], confidence: float,
                          iou_threshold: float = 0.5) -> int:
    """How many marked false-alarm boxes the detector still reports (same class, IoU >= threshold, at or above the
    confidence)."""
    by_path = dict(marked)
    repeated = 0
    for image in detect_images(detector, list(by_path)):
        wrong = by_path[image.path]
        found = image.predicted.select(image.predicted.confidence >= confidence)
        overlaps = box_iou(wrong.xyxy, found.xyxy)
        same_class = wrong.class_id[:, None] == found.class_id[None, :]
        repeated += int(((overlaps >= iou_threshold) & same_class).any(axis=1).sum())
    return repeated


def write_report(report: GateReport, out: Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gate.json").write_text(json.dumps(report.to_json(), indent=2, default=_plain) + "\n")
    (out / "gate.md").write_text(report.markdown())
    return out / "gate.md"


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")

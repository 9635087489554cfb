"""The promotion gate with stand-in detectors on drawn images: fewer repeated false alarms and no loss promotes,
a lost object refuses."""
import cv2
import numpy as np
import pytest

from cityguard.evaluation.detection import Boxes
from cityguard.evaluation.runners import evaluate_detector
from cityguard.training.gate import decide, repeated_false_alarms, write_report
from processors.inference.detector import ImageDetections

STATUE = (8, 8, 40, 40)  # a white square the site's people are not


class SquareDetector:
    """Finds white squares on black: a person per square; `ignores` lists squares (x, y) it has learnt to skip."""

    def __init__(self, name: str, ignores=()):
        self.name = name
        self.ignores = set(ignores)

    def detect(self, images):
        results = []
        for image in images:
            count, _, stats, _ = cv2.connectedComponentsWithStats((image[:, :, 0] > 128).astype(np.uint8))
            boxes = np.array([[x, y, x + w, y + h] for x, y, w, h, _ in stats[1:count] if (x, y) not in self.ignores],
                             dtype=float).reshape(-1, 4)
            results.append(ImageDetections(boxes, np.full(len(boxes), 0.9), np.zeros(len(boxes), dtype=int),
                                           ("person",) * len(boxes), 1.0))
        return results


@pytest.fixture
def site(tmp_path):
    """Labelled images with two people each, and a false-alarm frame with the statue and a person."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for index in range(3):
        image = np.zeros((128, 128, 3), dtype=np.uint8)
        people = [(60 + index * 5, 60, 90 + index * 5, 100), (10, 80, 30, 120)]
        lines = []
        for x1, y1, x2, y2 in people:
            cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), (255, 255, 255), -1)
            lines.append(f"0 {(x1 + x2) / 256} {(y1 + y2) / 256} {(x2 - x1) / 128} {(y2 - y1) / 128}")
        cv2.imwrite(str(images / f"{index}.png"), image)
        (labels / f"{index}.txt").write_text("\n".join(lines))
    false_alarm = np.zeros((128, 128, 3), dtype=np.uint8)
    cv2.rectangle(false_alarm, STATUE[:2], (STATUE[2] - 1, STATUE[3] - 1), (255, 255, 255), -1)
    cv2.rectangle(false_alarm, (70, 70), (99, 119), (255, 255, 255), -1)
    cv2.imwrite(str(tmp_path / "false-alarm.png"), false_alarm)
    return images, labels, [(tmp_path / "false-alarm.png", Boxes.of([STATUE], [0]))]


def gate(site, serving, candidate):
    images, labels, marked = site
    results = [evaluate_detector(detector, images, labels, 0.25) for detector in (serving, candidate)]
    repeats = tuple(repeated_false_alarms(detector, marked, 0.25) for detector in (serving, candidate))
    return decide(*results, ["person"], repeats, 0.0, serving.name, candidate.name)


def test_a_candidate_that_drops_the_marked_false_alarm_and_keeps_everything_else_is_promoted(site, tmp_path):
    report = gate(site, SquareDetector("serving"), SquareDetector("candidate", ignores=[STATUE[:2]]))
    assert report.promoted, report.reason
    assert report.reason.startswith("promoted:") and "repeats 0 of 1 marked false alarms" in report.reason
    markdown = write_report(report, tmp_path / "gate").read_text()
    assert "Promoted" in markdown and (tmp_path / "gate" / "gate.json").exists()


def test_a_candidate_that_misses_people_is_refused_even_without_the_false_alarm(site):
    report = gate(site, SquareDetector("serving"), SquareDetector("candidate", ignores=[STATUE[:2], (10, 80)]))
    assert not report.promoted
    failed = {check.name for check in report.checks if not check.passed}
    assert failed == {"mAP@0.5", "recall@0.25", "AP@0.5 person"}
    assert "recall@0.25 0.500 below serving 1.000" in report.reason


def test_a_candidate_that_changes_nothing_is_refused_for_keeping_the_false_alarm(site):
    report = gate(site, SquareDetector("serving"), SquareDetector("candidate"))
    assert not report.promoted
    assert report.reason == "refused: repeats 1 marked false alarms, serving 1: none removed"


def test_a_validation_set_without_labels_refuses_any_candidate(site, tmp_path):
    """Both models score 0 where nothing is labelled, and 0 is not below 0: the gate must not read that as a pass."""
    images, _, _ = site
    unlabelled = tmp_path / "no-labels"
    unlabelled.mkdir()  # every image's label file missing
    results = [evaluate_detector(detector, images, unlabelled, 0.25)
               for detector in (SquareDetector("serving"), SquareDetector("candidate"))]
    report = decide(*results, ["person"], None, 0.0, "serving", "candidate")
    assert not report.promoted
    assert report.reason == ("refused: no labelled boxes in the 3 validation images: nothing to compare "
                             "(check --labels)")

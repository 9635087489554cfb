"""The promotion gate with stand-in detectors on drawn images: fewer repeated false alarms and no loss promotes,
a lost object refuses."""
import json

import cv2
import numpy as np
import pytest

from cityguard.evaluation.detection import Boxes, evaluate_detections
from cityguard.evaluation.runners import evaluate_detector
from cityguard.training.dataset import DatasetItem, FalseAlarm, write_dataset
from cityguard.training.gate import (
    decide,
    repeated_false_alarms,
    reported_classes,
    unseen_false_alarms,
    write_report,
)
from processors.inference.detector import ImageDetections
from tests.conftest import files_limited_to

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


def test_a_candidate_that_drops_the_marked_false_alarm_and_keeps_everything_else_passes(site, tmp_path):
    report = gate(site, SquareDetector("serving"), SquareDetector("candidate", ignores=[STATUE[:2]]))
    assert report.passed, report.reason
    assert report.reason.startswith("passed:") and "repeats 0 of 1 marked false alarms" in report.reason
    markdown = write_report(report, tmp_path / "gate", promoted=False).read_text()
    assert "**Passed: " in markdown and "Not promoted: run the gate with --promote to serve it." in markdown
    saved = json.loads((tmp_path / "gate" / "gate.json").read_text())
    assert saved["passed"] and not saved["promoted"]


def test_a_candidate_that_misses_people_is_refused_even_without_the_false_alarm(site):
    report = gate(site, SquareDetector("serving"), SquareDetector("candidate", ignores=[STATUE[:2], (10, 80)]))
    assert not report.passed
    failed = {check.name for check in report.checks if not check.passed}
    assert failed == {"mAP@0.5", "recall@0.25", "AP@0.5 person"}
    assert "recall@0.25 0.500 below serving 1.000" in report.reason


def test_a_candidate_that_changes_nothing_is_refused_for_keeping_the_false_alarm(site):
    report = gate(site, SquareDetector("serving"), SquareDetector("candidate"))
    assert not report.passed
    assert report.reason == "refused: repeats 1 marked false alarms, serving 1: none removed"


def test_a_validation_set_without_labels_refuses_any_candidate(site, tmp_path):
    """Both models score 0 where nothing is labelled, and 0 is not below 0: the gate must not read that as a pass."""
    images, _, _ = site
    unlabelled = tmp_path / "no-labels"
    unlabelled.mkdir()  # every image's label file missing
    results = [evaluate_detector(detector, images, unlabelled, 0.25)
               for detector in (SquareDetector("serving"), SquareDetector("candidate"))]
    report = decide(*results, ["person"], None, 0.0, "serving", "candidate")
    assert not report.passed
    assert report.reason == ("refused: no labelled boxes in the 3 validation images: nothing to compare "
                             "(check --labels)")


def test_a_set_the_serving_model_finds_nothing_of_refuses_any_candidate(site, tmp_path):
    """Labels the serving model matches nowhere (another class numbering): 0 is not below 0 on every figure."""
    images, labels, _ = site
    elsewhere = tmp_path / "elsewhere-labels"
    elsewhere.mkdir()
    for label in labels.iterdir():
        (elsewhere / label.name).write_text("0 0.9 0.1 0.1 0.1\n")
    results = [evaluate_detector(detector, images, elsewhere, 0.25)
               for detector in (SquareDetector("serving"), SquareDetector("candidate"))]
    report = decide(*results, ["person"], None, 0.0, "v1", "v2")
    assert not report.passed
    assert report.reason == ("refused: v1 scores mAP@0.5 0 on the 3 labelled boxes of the 3 validation images: the "
                             "set gives the serving model nothing to compare against (check --labels and their class "
                             "ids)")


def test_a_false_alarm_on_a_training_frame_is_scored_for_the_boxes_its_labels_held(tmp_path):
    """The frame trained with a box marked wrong since (its second incident, marked after the build) as a true
    detection: the candidate has not learnt that false alarm."""
    image = tmp_path / "frame.jpg"
    cv2.imwrite(str(image), np.zeros((128, 128, 3), np.uint8))
    blamed_since, blamed_before = Boxes.of([[60, 60, 90, 100]], [0]), Boxes.of([STATUE], [0])
    trained = DatasetItem("campus", 1_760_000_000.0, "false-alarm", image, blamed_since, False, "train")
    write_dataset(tmp_path / "ds", [trained], {0: "person"})
    untrained = FalseAlarm("campus", 1_760_000_100.0, image, blamed_before, None)
    marked = FalseAlarm("campus", 1_760_000_000.0, image,
                        Boxes.of([[60, 60, 90, 100], STATUE], [0, 0]), None)
    (still, other) = unseen_false_alarms([marked, untrained], tmp_path / "ds")
    assert still.wrong.xyxy.tolist() == [[60, 60, 90, 100]] and other.wrong.xyxy.tolist() == [list(STATUE)]


def scored(truth, predicted):
    return evaluate_detections(list(zip(truth, predicted, strict=True)), {0: "person"}, 0.25)


def test_a_report_the_disk_cannot_take_whole_leaves_the_earlier_gate_json_and_gate_md_together(tmp_path):
    truth = [Boxes.of([[10, 10, 50, 90]], [0])]
    both = scored(truth, [Boxes.of(truth[0].xyxy, [0], [0.9])])
    write_report(decide(both, both, ["person"], None, 0.0, "v1", "v2"), tmp_path / "gate", promoted=False)
    # A promoted candidate is named twice in gate.md and once in gate.json: the disk fills up after gate.json.
    candidate = "v" * 20_000
    with files_limited_to(30_000), pytest.raises(OSError, match="too large"):
        write_report(decide(both, both, ["person"], None, 0.0, "v1", candidate), tmp_path / "gate", promoted=True)
    assert json.loads((tmp_path / "gate" / "gate.json").read_text())["candidate"] == "v2"
    assert (tmp_path / "gate" / "gate.md").read_text().startswith("# Promotion gate: v2 against v1")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["gate"]  # nothing temporary beside it
    assert sorted(path.name for path in (tmp_path / "gate").iterdir()) == ["gate.json", "gate.md"]


def test_a_report_folder_holding_more_than_a_report_is_not_replaced(tmp_path):
    truth = [Boxes.of([[10, 10, 50, 90]], [0])]
    both = scored(truth, [Boxes.of(truth[0].xyxy, [0], [0.9])])
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"holds more than a gate report \(notes.txt\)"):
        write_report(decide(both, both, ["person"], None, 0.0), tmp_path, promoted=False)
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]
    with pytest.raises(ValueError, match="is a file: give a folder for a gate report"):
        write_report(decide(both, both, ["person"], None, 0.0), tmp_path / "notes.txt", promoted=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_candidate_with_more_false_detections_at_the_operating_point_is_refused_on_precision():
    # the extra boxes rank below every true positive: AP and recall stay the same, precision at 0.25 falls
    truth = [Boxes.of([[10, 10, 50, 90], [100, 10, 140, 90]], [0, 0]) for _ in range(10)]
    serving = [Boxes.of(t.xyxy, [0, 0], [0.9, 0.9]) for t in truth]
    ghosts = [[200, 10, 240, 90], [260, 10, 300, 90], [320, 10, 360, 90]]
    candidate = [Boxes.of(np.vstack([t.xyxy, ghosts]), [0] * 5, [0.9, 0.9, 0.5, 0.5, 0.5]) for t in truth]
    report = decide(scored(truth, serving), scored(truth, candidate), ["person"], None, 0.0)
    assert not report.passed
    assert report.reason == ("refused: precision@0.25 0.400 below serving 1.000; no held-out false alarms: not "
                             "checked")
    assert decide(scored(truth, serving), scored(truth, candidate), ["person"], None, 0.6).passed  # tolerance


def test_recall_and_precision_are_taken_at_each_class_own_confidence():
    # class_confidence {0: 0.6}: the candidate's person at 0.5 is not reported in service, the serving one's is
    truth = [Boxes.of([[10, 10, 50, 90]], [0])]
    serving, candidate = [Boxes.of(truth[0].xyxy, [0], [0.9])], [Boxes.of(truth[0].xyxy, [0], [0.5])]
    assert decide(scored(truth, serving), scored(truth, candidate), [], None, 0.0).passed
    report = decide(scored(truth, serving), scored(truth, candidate), [], None, 0.0, class_confidence={0: 0.6})
    assert not report.passed
    assert "recall@0.25 (class thresholds) 0.000 below serving 1.000" in report.reason


class Scores:
    """Reports the statue as a person at a fixed confidence."""

    name = "scores"

    def __init__(self, score: float):
        self.score = score

    def detect(self, images):
        return [ImageDetections(np.array([STATUE], float), np.array([self.score]), np.array([0]), ("person",), 1.0)
                for _ in images]


def test_a_repeat_below_its_class_own_confidence_is_not_counted(site):
    *_, marked = site
    assert [repeated_false_alarms(Scores(score), marked, 0.25) for score in (0.9, 0.4)] == [1, 1]
    assert [repeated_false_alarms(Scores(score), marked, 0.25, {0: 0.6}) for score in (0.9, 0.4)] == [1, 0]
    assert repeated_false_alarms(Scores(0.2), marked, 0.25, {2: 0.1}) == 0  # other classes' thresholds aside


def test_a_rule_class_without_labels_and_a_missing_false_alarm_set_are_reported_as_not_checked(tmp_path):
    truth = [Boxes.of([[10, 10, 50, 90]], [0])]
    both = scored(truth, [Boxes.of(truth[0].xyxy, [0], [0.9])])
    report = decide(both, both, ["person", "car"], None, 0.0)
    assert report.passed
    assert report.reason.endswith("; AP@0.5 car not checked (no labels); no held-out false alarms: not checked")
    write_report(report, tmp_path, promoted=False)
    assert "| AP@0.5 car | - | - | not checked |" in (tmp_path / "gate.md").read_text()
    assert "| false alarms repeated | - | - | not checked |" in (tmp_path / "gate.md").read_text()
    checks = {check["name"]: check for check in json.loads((tmp_path / "gate.json").read_text())["checks"]}
    assert checks["AP@0.5 car"]["reason"] == "AP@0.5 car not checked (no labels)"
    assert checks["false alarms repeated"]["serving"] is None
    refused = decide(both, scored(truth, [Boxes.of(truth[0].xyxy, [0], [0.1])]), ["person", "car"], None, 0.0)
    assert refused.reason.endswith("; AP@0.5 car not checked (no labels); no held-out false alarms: not checked")


def test_cars_nobody_labelled_count_in_no_figure_whether_a_candidate_forgets_them_or_finds_more():
    """The scored images label persons only, each beside a parked car the rules act on: the serving model finds 30 of
    40 persons and 20 cars. Counted as false, cars would promote a candidate that stopped finding them and refuse one
    that finds them all."""
    names, person, car = {0: "person", 2: "car", 7: "truck"}, [10, 10, 50, 120], [200, 100, 320, 180]

    def scored_model(persons: int, cars: int):
        pairs = []
        for index in range(40):
            found = [(person, 0)] * (index < persons) + [(car, 2)] * (index < cars)
            pairs.append((Boxes.of([person], [0]), Boxes.of(np.asarray([box for box, _ in found], float).reshape(-1, 4),
                                                            [c for _, c in found], [0.9] * len(found))))
        return evaluate_detections(pairs, names, 0.25, class_ids=[0])

    classes = reported_classes(["person", "car"], {7: 0.5}, names, labelled={0})
    assert classes == ["person", "car", "truck"]
    for cars in (0, 40):
        report = decide(scored_model(30, 20), scored_model(30, cars), classes, None, 0.0)
        assert report.passed, report.reason
        assert report.reason.endswith("; AP@0.5 car not checked (no labels); AP@0.5 truck not checked (no labels); no "
                                      "held-out false alarms: not checked")
    assert reported_classes(["person"], {7: 0.5}, names, labelled={0, 7}) == ["person"]  # labelled: counted

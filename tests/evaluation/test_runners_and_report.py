"""The detector runner with a stand-in detector (any object with `.detect(images)`), and the reports it feeds."""
import json

import cv2
import matplotlib.image
import numpy as np
import pytest

from cityguard.evaluation.events import EventInterval, evaluate_events
from cityguard.evaluation.report import count_comparison_report, detector_report, event_report
from cityguard.evaluation.runners import CounterSet, counter_counts, evaluate_counts, evaluate_detector
from processors.inference.detector import ImageDetections
from processors.inference.tiling import TiledDetector

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class BrightSquareDetector:
    """Finds white squares on a black image: a person per square, confidence from its size."""

    name = "bright-squares"

    def detect(self, images):
        results = []
        for image in images:
            mask = (image[:, :, 0] > 128).astype(np.uint8)
            count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
            boxes = np.array([[x, y, x + w, y + h] for x, y, w, h, _ in stats[1:count]], dtype=float).reshape(-1, 4)
            confidence = np.clip(boxes[:, 2] - boxes[:, 0], 0, 99) / 100
            results.append(ImageDetections(boxes, confidence, np.zeros(len(boxes), dtype=int),
                                           ("person",) * len(boxes), 1.0))
        return results


@pytest.fixture
def labelled_folder(tmp_path):
    """Two 128x128 images with squares; labels for all but one small square, plus one phantom label."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    squares = {"a": [(10, 10, 40), (70, 70, 30)], "b": [(20, 60, 20)]}
    for stem, boxes in squares.items():
        image = np.zeros((128, 128, 3), dtype=np.uint8)
        for x, y, size in boxes:
            image[y:y + size, x:x + size] = 255
        cv2.imwrite(str(images / f"{stem}.png"), image)
    (labels / "a.txt").write_text("0 0.1953125 0.1953125 0.234375 0.234375\n0 0.66 0.66 0.234 0.234\n")
    (labels / "b.txt").write_text("0 0.9 0.1 0.05 0.05\n")  # a person the detector cannot see
    return images, labels


def test_detector_evaluation_on_a_labelled_folder(labelled_folder):
    images, labels = labelled_folder
    result = evaluate_detector(BrightSquareDetector(), images, labels, confidence=0.25)
    (person,) = result.classes
    # a: both squares labelled and found (conf 0.4, 0.3); b: the square is unlabelled, the label has no square
    assert person.truth_count == 3
    assert (person.counts.true_positives, person.counts.false_positives, person.counts.false_negatives) == (2, 0, 1)
    assert result.confusion.matrix.tolist() == [[2, 1], [0, 0]]  # the 0.2-confidence false one is below 0.25
    assert person.average_precision == pytest.approx(2 / 3)
    assert result.extra["detector"] == "bright-squares"


def test_tiled_detection_is_evaluated_through_the_same_interface(labelled_folder):
    images, labels = labelled_folder
    tiled = TiledDetector(BrightSquareDetector(), tile_size=64, overlap=0.25, iou=0.5, whole_frame_pass=True)
    result = evaluate_detector(tiled, images, labels, confidence=0.25)
    assert result.extra["detector"] == "bright-squares+tiles64"
    assert result.classes[0].counts.true_positives == 2  # whole-frame pass keeps the squares cut by tile edges


def test_detector_counts_respect_the_confidence(labelled_folder):
    images, _ = labelled_folder
    paths = sorted(images.iterdir())
    for confidence, expected in ((0.25, [2, 0]), (0.1, [2, 1])):
        counters = CounterSet(detector=BrightSquareDetector(), tiled=None, density=None, counting=None,
                              density_model=None, confidence=confidence)
        assert counter_counts(["detector"], paths, counters) == {"detector": expected}


def test_a_missing_labels_folder_is_an_error_not_an_unlabelled_set(labelled_folder, tmp_path):
    images, _ = labelled_folder
    with pytest.raises(FileNotFoundError, match="no labels folder .*lables"):
        evaluate_detector(BrightSquareDetector(), images, tmp_path / "lables", confidence=0.25)


def assert_png(path):
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert matplotlib.image.imread(path).ndim == 3


def test_reports_render_markdown_json_and_png_plots(labelled_folder, tmp_path):
    images, labels = labelled_folder
    plain = evaluate_detector(BrightSquareDetector(), images, labels, confidence=0.25)
    report = detector_report({"plain": plain}, tmp_path / "detector")
    assert "mAP@0.5" in report.read_text() and "![PR curves](pr_plain.png)" in report.read_text()
    assert json.loads((tmp_path / "detector" / "report.json").read_text())["plain"]["map50"] == pytest.approx(2 / 3)
    for name in ("pr_plain.png", "confusion_plain.png"):
        assert_png(tmp_path / "detector" / name)

    counts = evaluate_counts(sorted(images.iterdir()), [3, 1], [3, 0], (2,))
    count_comparison_report({"detector": counts}, tmp_path / "counts")
    assert_png(tmp_path / "counts" / "count_scatter.png")
    figures = json.loads((tmp_path / "counts" / "report.json").read_text())["detector"]
    assert figures["overall"]["mae"] == 0.5 and set(figures["by_crowd_size"]) == {"0-2", "3+"}
    assert (tmp_path / "counts" / "per_image.csv").read_text().splitlines()[0] == "image,true,detector"

    truth = [EventInterval("cam", "crowd", 0, 25), EventInterval("cam", "crowd", 50, 75)]
    predicted = [EventInterval("cam", "crowd", 1, 26, 0.9), EventInterval("cam", "crowd", 30, 35, 0.4)]
    event_report(evaluate_events(truth, predicted), tmp_path / "events")
    for name in ("confusion_events.png", "roc.png"):
        assert_png(tmp_path / "events" / name)
    figures = json.loads((tmp_path / "events" / "report.json").read_text())
    assert figures["types"][0]["roc"]["auc"] > 0.5 and figures["overall"]["recall"] == 0.5

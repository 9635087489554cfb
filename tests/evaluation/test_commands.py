"""`cityguard eval ...` end to end, as separate processes (the CLI registers every area's metrics)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import OFFLINE_MODEL, REPO, VTEST


def cityguard(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "cityguard", *args], check=False, cwd=REPO, capture_output=True,
                            text=True, timeout=timeout_s, env={**os.environ, "YOLO_OFFLINE": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_eval_events_writes_a_report(tmp_path):
    (tmp_path / "truth.csv").write_text("camera,type,start,end\ncam,crowd,0,10\ncam,crowd,30,40\n")
    (tmp_path / "predicted.csv").write_text("camera,type,start,end,score\ncam,crowd,2,9,0.9\ncam,crowd,50,55,0.3\n")
    out = tmp_path / "report"
    result = cityguard("eval", "events", "--truth", str(tmp_path / "truth.csv"),
                       "--predicted", str(tmp_path / "predicted.csv"), "--out", str(out))
    assert "P 0.500 R 0.500 F1 0.500" in result.stdout
    figures = json.loads((out / "report.json").read_text())
    assert figures["types"][0]["mean_detection_delay_s"] == 2.0
    assert (out / "roc.png").exists() and (out / "report.md").exists()


def test_eval_events_scores_the_cameras_given_and_warns_of_what_would_mislead(tmp_path):
    (tmp_path / "truth.csv").write_text("camera,type,start,end\ncam,crowd,0,10\nother,crowd,0,10\n"
                                        "cam,colision,20,30\n")
    (tmp_path / "predicted.csv").write_text("camera,type,start,end,score\ncam,crowd,2,9,0.9\n"
                                            "cam,collision,21,25,0.8\n")
    out = tmp_path / "report"
    result = cityguard("eval", "events", "--truth", str(tmp_path / "truth.csv"),
                       "--predicted", str(tmp_path / "predicted.csv"), "--out", str(out))
    assert "3 labelled, 2 predicted: P 0.500 R 0.333" in result.stdout
    assert result.stderr.splitlines() == [
        "cityguard: warning: no predicted event has type 'colision' (1 labelled): predicted types are collision, "
        "crowd",
        "cityguard: warning: no predicted event on 1 labelled camera (other): one not replayed scores as missed; "
        "--cameras scores only those given"]
    result = cityguard("eval", "events", "--truth", str(tmp_path / "truth.csv"), "--cameras", "cam",
                       "--predicted", str(tmp_path / "predicted.csv"), "--out", str(out))
    assert "2 labelled, 2 predicted: P 0.500 R 0.500" in result.stdout


def test_eval_counts_from_another_counters_csv(tmp_path):
    import cv2

    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.jpg", "b.jpg"):
        cv2.imwrite(str(images / name), np.zeros((8, 8, 3), dtype=np.uint8))
    (tmp_path / "truth.csv").write_text("file,count\na.jpg,10\nb.jpg,100\n")
    (tmp_path / "predicted.csv").write_text("a.jpg,12\nb.jpg,90\n")
    out = tmp_path / "report"
    cityguard("eval", "counts", "--images", str(images), "--truth", str(tmp_path / "truth.csv"),
              "--predictions", str(tmp_path / "predicted.csv"), "--out", str(out))
    figures = json.loads((out / "report.json").read_text())["predictions"]
    assert figures["overall"]["mae"] == 6.0
    assert figures["by_crowd_size"]["51-200"]["mean_relative_error"] == pytest.approx(0.1)
    assert (out / "count_scatter.png").exists()

    # A truth file of one regime of the folder, or of a larger set, scores the images both hold, and says so.
    (tmp_path / "truth-part.csv").write_text("file,count\nb.jpg,100\nc.jpg,4\n")
    result = cityguard("eval", "counts", "--images", str(images), "--truth", str(tmp_path / "truth-part.csv"),
                       "--predictions", str(tmp_path / "predicted.csv"), "--out", str(out))
    assert (f"scoring the 1 images truth-part.csv counts in {images} (1 other images there, 1 counted images not "
            "there)") in result.stdout
    assert json.loads((out / "report.json").read_text())["predictions"]["overall"]["mae"] == 10.0
    (tmp_path / "truth-part.csv").write_text("file,count\nc.jpg,4\n")
    refused = subprocess.run([sys.executable, "-m", "cityguard", "eval", "counts", "--images", str(images), "--truth",
                              str(tmp_path / "truth-part.csv"), "--predictions", str(tmp_path / "predicted.csv")],
                             check=False, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert refused.stderr == f"cityguard: error: {tmp_path / 'truth-part.csv'} counts none of the images in {images}\n"


@pytest.mark.slow
def test_eval_detector_with_the_real_model_recovers_its_own_confident_boxes(tmp_path):
    """Labels are the model's own boxes above 0.5, so at a lower confidence every one must be found again."""
    import cv2
    import ultralytics

    from processors.inference.backends.registry import create_detector
    from schemas.settings.config import DEFAULT_CONFIG, load_config

    source = Path(ultralytics.__file__).parent / "assets" / "bus.jpg"
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    image = cv2.imread(str(source))
    cv2.imwrite(str(images / "bus.jpg"), image)
    height, width = image.shape[:2]
    result = create_detector(load_config(DEFAULT_CONFIG)).detect([image])[0]
    confident = result.confidence >= 0.5
    rows = [f"{c} {(x0 + x1) / 2 / width} {(y0 + y1) / 2 / height} {(x1 - x0) / width} {(y1 - y0) / height}"
            for (x0, y0, x1, y1), c in zip(result.xyxy[confident], result.class_id[confident], strict=True)]
    assert any(result.class_id[confident] == 0), "bus.jpg shows people"
    (labels / "bus.txt").write_text("\n".join(rows) + "\n")
    out = tmp_path / "report"
    cityguard("eval", "detector", "--images", str(images), "--out", str(out), "--tiling", timeout_s=300)
    figures = json.loads((out / "report.json").read_text())
    for variant in ("plain", "tiled"):
        assert {c["name"] for c in figures[variant]["classes"]} >= {"person"}
    for person in (c for c in figures["plain"]["classes"] if c["name"] == "person"):
        assert person["recall"] == 1.0 and person["ap50"] == pytest.approx(1.0)
    assert (out / "pr_tiled.png").exists() and (out / "confusion_plain.png").exists()


def test_eval_detector_measures_the_model_the_site_serves_and_says_which(tmp_path):
    """A site with a model registry runs its serving version, so that is the model measured; where that does not
    load (its weights deleted since it was promoted), the one the inference stage serves instead, named as such."""
    import shutil

    import cv2
    import ultralytics

    from processors.inference.model_registry import ModelRegistry

    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    shutil.copyfile(Path(ultralytics.__file__).parent / "assets" / "bus.jpg", images / "bus.jpg")
    assert cv2.imread(str(images / "bus.jpg")) is not None
    (labels / "bus.txt").write_text("0 0.5 0.5 0.2 0.5\n")
    registry = ModelRegistry(tmp_path / "registry")
    served = registry.register(OFFLINE_MODEL, {"kind": "imported"})
    registry.promote(served.version, "first model")
    site = tmp_path / "site.yaml"  # the configured model is not on this machine: only a registry version loads
    site.write_text(f"model: {{weights: models/gone.pt, offline_weights: null, registry: registry}}\n"
                    f"cameras:\n  - id: walk\n    source: {VTEST}\n")

    def measured() -> str:
        result = cityguard("eval", "detector", "--config", str(site), "--images", str(images), "--labels",
                           str(labels), "--out", str(tmp_path / "report"), timeout_s=300)
        return next(line for line in result.stdout.splitlines() if line.startswith("model: "))

    assert measured() == f"model: v1 from the model registry ({served.weights}), serving"
    gone = registry.register(OFFLINE_MODEL, {"kind": "imported"})
    registry.promote(gone.version, "gate passed")
    shutil.rmtree(gone.weights)
    assert measured().startswith(f"model: v1 from the model registry ({served.weights}): the serving version v2 "
                                 "does not load (")


def test_eval_counts_names_the_counters_it_knows():
    result = subprocess.run([sys.executable, "-m", "cityguard", "eval", "counts", "--images", ".", "--truth", "x.csv",
                             "--counter", "detector,magic"], check=False, cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "counters are detector, tiled, density, fused; got 'detector,magic'" in result.stderr

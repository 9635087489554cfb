"""`dataset build` and `model gate` on a site laid out as an operator's machine has it (the configuration in one
folder, the console's false alarms relative to it, a model registry), with stand-in detectors: where the false
alarms are read from, which model pre-labels, held-out media refused, the plan and held-out cameras kept, unreviewed
labels refused, and only the false alarms the candidate did not train on scored."""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from cityguard.cli import main
from cityguard.evaluation.detection import Boxes
from cityguard.training.dataset import (
    DatasetItem,
    background_times,
    block_share,
    clip_frames,
    load_dataset,
    replace_labels,
    statistics,
    write_dataset,
)
from cityguard.training.train import dataset_hash
from processors.inference.detector import ImageDetections
from processors.inference.model_registry import ModelRegistry
from tests.conftest import VTEST
from tests.test_cli_errors import assert_one_line_error_printed
from tests.training.test_gate import STATUE, SquareDetector

NAMES = {0: "person"}
ELSEWHERE_STATUE = (70, 8, 102, 40)  # a second statue, marked on a frame the candidate trained on


class Stand(SquareDetector):
    """A square detector with the class names a backend reports."""

    names = NAMES


@pytest.fixture
def site(tmp_path, monkeypatch):
    """etc/site.yaml (the campus clip as a file camera, registry ../registry), the console's false alarms in
    var/hard-negatives (its default, relative to the configuration), and the command run from another folder."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "site.yaml").write_text(
        f"site: t\nmodel: {{registry: ../registry}}\ncameras:\n  - id: campus\n    source: {VTEST}\n    fps: 10\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return tmp_path


def mark_false_alarm(site: Path, stem: str, time: float, statue: tuple[int, int, int, int] | None,
                     image: np.ndarray | None = None) -> Path:
    """A frame with a statue the detector takes for a person, and the console's record blaming that box (or the
    given frame, blaming nothing)."""
    folder = site / "var" / "hard-negatives" / "campus"
    folder.mkdir(parents=True, exist_ok=True)
    if image is None:
        image = np.zeros((128, 128, 3), np.uint8)
        cv2.rectangle(image, statue[:2], (statue[2] - 1, statue[3] - 1), (255, 255, 255), -1)
    cv2.imwrite(str(folder / f"{stem}.jpg"), image)
    wrong = [{"class": "person", "xyxy": list(statue)}] if statue else []
    (folder / f"{stem}.json").write_text(json.dumps({"camera": "campus", "time": time, "event_id": stem,
                                                     "wrong": wrong}))
    return folder / f"{stem}.jpg"


def registry_with(site: Path, *weights: str) -> ModelRegistry:
    registry = ModelRegistry(site / "registry")
    for name in weights:
        (site / name).write_bytes(name.encode())
        registry.register(site / name, {})
    return registry


def stand_ins(monkeypatch, detectors: dict[str | None, Stand]) -> list:
    """Replaces the backends: create_detector gives the stand-in for the weights' file name (None: configured)."""
    asked = []

    def create_detector(config, weights=None):
        asked.append(weights)
        return detectors[Path(weights).name if weights else None]

    monkeypatch.setattr("processors.inference.backends.registry.create_detector", create_detector)
    return asked


def build(site: Path, *extra: str) -> int:
    return main(["dataset", "build", "--config", str(site / "etc" / "site.yaml"), "--out", str(site / "ds"),
                 "--background", "2", *extra])


def test_build_reads_the_false_alarms_where_the_console_writes_them_and_prelabels_with_the_serving_model(
        site, monkeypatch, capsys):
    mark_false_alarm(site, "e1", 1_760_000_000.0, STATUE)
    registry = registry_with(site, "serving.pt")
    registry.promote("v1", "first")
    asked = stand_ins(monkeypatch, {"serving.pt": Stand("serving"), None: Stand("configured")})
    assert build(site) == 0
    out = capsys.readouterr().out
    assert f"false alarms: 1 records read from {site / 'var' / 'hard-negatives'}\n" in out
    assert f"pre-labels: v1 from the model registry ({registry.get('v1').weights}), serving\n" in out
    assert asked == [registry.get("v1").weights]
    assert statistics(load_dataset(site / "ds"))["sources"] == {"false-alarm": 1, "background": 2}


def test_build_without_a_serving_model_prelabels_with_the_configured_one(site, monkeypatch, capsys):
    asked = stand_ins(monkeypatch, {None: Stand("configured")})
    assert build(site) == 0
    assert asked == [None]
    out = capsys.readouterr().out
    assert f"false alarms: 0 records read from {site / 'var' / 'hard-negatives'} (absent)" in out
    assert "pre-labels: configured, the configured model\n" in out


def test_build_refuses_a_clip_for_an_unknown_camera_or_one_clip_for_two(site, monkeypatch, capsys):
    """The same frames under two camera names would be split as two cameras: into training and validation both."""
    stand_ins(monkeypatch, {None: Stand("configured")})
    capsys.readouterr()
    assert build(site, "--clip", f"campsu={VTEST}") == 2
    assert_one_line_error_printed(capsys, "--clip names camera 'campsu', which is not in the configuration")
    config = site / "etc" / "site.yaml"
    config.write_text(config.read_text() + f"  - id: gate\n    source: {VTEST}\n    fps: 10\n")
    assert build(site) == 2
    assert_one_line_error_printed(capsys, f"cameras 'campus' and 'gate' would both read {VTEST}")
    assert not (site / "ds").exists()
    assert build(site, "--background", "0") != 2  # no clip is read: nothing to keep apart
    assert "would both read" not in capsys.readouterr().err


def test_build_refuses_a_false_alarm_whose_camera_is_a_path_and_writes_nothing(site, monkeypatch, capsys):
    sidecar = mark_false_alarm(site, "e1", 1_760_000_000.0, STATUE).with_suffix(".json")
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "camera": "../../../../escaped"}))
    stand_ins(monkeypatch, {None: Stand("configured")})
    capsys.readouterr()
    assert build(site) == 2
    assert_one_line_error_printed(capsys, f"{sidecar}: field 'camera' must be \"campus\"")
    assert not (site / "ds").exists() and not list(site.parent.glob("escaped*")) and not list(site.rglob("escaped*"))


def test_build_trains_on_no_box_any_false_alarm_of_the_frame_blamed(site, monkeypatch):
    """Two incidents whose evidence is one frame: the console keeps a record of each, blaming its own box."""
    image = np.zeros((128, 128, 3), np.uint8)
    for statue in (STATUE, ELSEWHERE_STATUE):
        cv2.rectangle(image, statue[:2], (statue[2] - 1, statue[3] - 1), (255, 255, 255), -1)
    mark_false_alarm(site, "e1", 1_760_000_000.0, STATUE, image)
    mark_false_alarm(site, "e2", 1_760_000_000.0, ELSEWHERE_STATUE, image)
    stand_ins(monkeypatch, {None: Stand("configured")})
    assert build(site, "--background", "0") == 0
    (item,) = load_dataset(site / "ds").items
    assert item.source == "false-alarm" and len(item.boxes) == 0


@pytest.mark.parametrize("held_out, extra", [("false alarm", []), ("clip", []), ("clip", ["--background", "0"])],
                         ids=["false alarm", "clip", "clip of the false alarms' camera, sampling no frames of it"])
def test_build_refuses_held_out_media_naming_the_file(site, monkeypatch, capsys, held_out, extra):
    frame = mark_false_alarm(site, "e1", 1_760_000_000.0, STATUE)
    stand_ins(monkeypatch, {None: Stand("configured")})
    refused = frame if held_out == "false alarm" else VTEST
    note = site / "held-out.md"
    note.write_text(f"# held out\n{'0' * 64}\n{hashlib.sha256(Path(refused).read_bytes()).hexdigest()}\n")
    capsys.readouterr()
    assert build(site, "--held-out", str(note), *extra) == 2
    assert_one_line_error_printed(capsys, f"refused: {refused} has a held-out sha256")
    assert not (site / "ds").exists()
    note.write_text(f"# held out\n{'0' * 64}\n")
    assert build(site, "--held-out", str(note), *extra) == 0


@pytest.mark.parametrize(("option", "value", "says"), [
    ("--block-seconds", "1000", "--block-seconds 1000 differs from the 60 "),
    ("--val-fraction", "0.5", "--val-fraction 0.5 differs from the 0.2 "),
    ("--seed", "7", "--seed 7 differs from the 0 "),
    ("--val-camera", "campus", "--val-camera campus: "),
])
def test_a_rebuild_that_would_split_the_frames_otherwise_is_refused_naming_the_option(site, monkeypatch, capsys,
                                                                                      option, value, says):
    """Other block boundaries would put frames a model trained on into validation blocks, as would holding out a
    camera it trained on; the dataset keeps the plan it was first built with."""
    stand_ins(monkeypatch, {None: Stand("configured")})
    assert build(site, "--no-prelabel", "--background", "8") == 0
    assert {item.split for item in load_dataset(site / "ds").items} == {"train", "val"}
    manifest = (site / "ds" / "manifest.csv").read_bytes()
    capsys.readouterr()
    assert build(site, "--no-prelabel", "--background", "8", option, value) == 2
    assert_one_line_error_printed(capsys, says, str(site / "ds"), "new --out")
    assert (site / "ds" / "manifest.csv").read_bytes() == manifest
    assert build(site, "--no-prelabel", "--background", "12") == 0  # more footage under the same plan


def test_a_rebuild_that_stops_holding_out_a_camera_is_refused_naming_it(site, monkeypatch, capsys):
    """Without its --val-camera, the camera's new frames would train a model gated on its old ones; holding out one
    more camera, of which the dataset has no training frame, stays allowed."""
    stand_ins(monkeypatch, {None: Stand("configured")})
    assert build(site, "--no-prelabel", "--val-camera", "campus") == 0
    assert yaml.safe_load((site / "ds" / "data.yaml").read_text())["split"]["val_cameras"] == ["campus"]
    manifest = (site / "ds" / "manifest.csv").read_bytes()
    capsys.readouterr()
    assert build(site, "--no-prelabel") == 2
    assert_one_line_error_printed(capsys, "--val-camera campus is missing", str(site / "ds"))
    assert (site / "ds" / "manifest.csv").read_bytes() == manifest
    add_stream_cameras(site, "gate")
    assert build(site, "--no-prelabel", "--val-camera", "campus", "--val-camera", "gate") == 0


def add_stream_cameras(site: Path, *names: str) -> None:
    """Configures more cameras, each on a stream: nothing to read frames from here."""
    with (site / "etc" / "site.yaml").open("a") as config:
        config.writelines(f"  - id: {name}\n    source: rtsp://127.0.0.1/{name}\n" for name in names)


def test_a_val_camera_no_camera_has_is_refused_naming_the_cameras_known(site, monkeypatch, capsys):
    """A misspelt --val-camera would hold out nothing while the camera meant goes on training: refused before
    anything is read or written, with the configured cameras and those the dataset has frames of."""
    stand_ins(monkeypatch, {None: Stand("configured")})
    assert build(site, "--no-prelabel", "--val-camera", "campsu") == 2
    assert_one_line_error_printed(capsys, "--val-camera campsu: no camera of that name is configured (known: campus)")
    assert not (site / "ds").exists()
    assert build(site, "--no-prelabel") == 0
    (site / "etc" / "site.yaml").write_text((site / "etc" / "site.yaml").read_text().replace("id: campus", "id: hall"))
    add_stream_cameras(site, *(f"street{number:02d}" for number in range(12)))
    capsys.readouterr()
    assert build(site, "--no-prelabel", "--val-camera", "street03", "--val-camera", "Street03") == 2
    assert_one_line_error_printed(capsys, f"--val-camera Street03: no camera of that name is configured nor has "
                                  f"frames in {site / 'ds'} (known: campus, hall, street00, ", "street07 and 4 more)")


def test_a_build_after_one_killed_between_its_renames_takes_the_previous_dataset_back_first(site, monkeypatch, capsys):
    """Killed after moving the dataset aside and before renaming the new one in: the next build still keeps its
    reviewed labels and its plan."""
    stand_ins(monkeypatch, {None: Stand("configured")})
    assert build(site, "--no-prelabel", "--background", "8") == 0
    dataset = load_dataset(site / "ds")
    reviewed = dataset.labels(dataset.items[0])
    replace_labels(dataset, [replace(reviewed, boxes=Boxes.of([[10, 10, 60, 90]], [0]))])
    (site / "ds").rename(site / ".ds.previous")
    capsys.readouterr()
    assert build(site, "--no-prelabel", "--background", "8", "--seed", "7") == 2
    assert_one_line_error_printed(capsys, "--seed 7 differs from the 0 ")
    assert build(site, "--no-prelabel", "--background", "8") == 0
    rebuilt = {item.name: item for item in load_dataset(site / "ds").items}[reviewed.name.removesuffix(".jpg")]
    assert rebuilt.reviewed and np.allclose(rebuilt.boxes.xyxy, [[10, 10, 60, 90]], atol=0.01)


def test_build_records_the_false_alarms_its_guards_dropped(site, monkeypatch):
    """A false alarm showing a training frame's picture is dropped from validation; the gate must know it was."""
    stand_ins(monkeypatch, {None: Stand("configured")})
    seconds = next(t for t in background_times(VTEST, 8) if block_share(("campus", "clip", int(t // 60)), 0) >= 0.2)
    wall = next(t for t in range(1_760_000_000, 1_760_100_000, 60) if block_share(("campus", "wall", t // 60), 0) < 0.2)
    mark_false_alarm(site, "e1", wall, None, clip_frames(VTEST, [seconds])[0][1])
    assert build(site, "--no-prelabel", "--background", "8") == 0
    dropped = yaml.safe_load((site / "ds" / "data.yaml").read_text())["dropped_false_alarms"]
    assert dropped == [f"campus_{wall * 1000:013d}_false-alarm"]
    assert dropped[0] not in {item.name for item in load_dataset(site / "ds").items}


@pytest.fixture
def gated(site, monkeypatch):
    """A dataset the candidate was trained on: validation frames with a person each, and three marked false alarms,
    one held for validation, one it trained on and one its build dropped from validation as showing the picture of
    that one (both of which it has learnt to skip); registry: v1 serving, v2 candidate."""
    image = np.zeros((128, 128, 3), np.uint8)
    cv2.rectangle(image, (60, 60), (89, 99), (255, 255, 255), -1)
    person = Boxes.of([[60, 60, 90, 100]], [0])
    val_alarm = mark_false_alarm(site, "e1", 1_760_000_000.0, STATUE)
    trained_alarm = mark_false_alarm(site, "e2", 1_760_000_500.0, ELSEWHERE_STATUE)
    mark_false_alarm(site, "e3", 1_760_009_000.0, ELSEWHERE_STATUE)
    empty = Boxes.of(np.zeros((0, 4)), [])
    items = [DatasetItem("campus", float(t), "background", image, person, True, split)
             for t, split in ((10.0, "val"), (20.0, "val"), (200.0, "train"))]
    items += [DatasetItem("campus", 1_760_000_000.0, "false-alarm", val_alarm, empty, True, "val"),
              DatasetItem("campus", 1_760_000_500.0, "false-alarm", trained_alarm, empty, True, "train")]
    data_yaml = write_dataset(site / "ds", items, NAMES, dropped_alarms=["campus_1760009000000_false-alarm"])
    registry = registry_with(site, "serving.pt")
    registry.promote("v1", "first")
    (site / "candidate.pt").write_bytes(b"candidate")
    registry.register(site / "candidate.pt", {"kind": "trained", "data": str(data_yaml),
                                              "data_hash": dataset_hash(data_yaml)})
    stand_ins(monkeypatch, {"serving.pt": Stand("serving"),
                            "candidate.pt": Stand("candidate", ignores=[ELSEWHERE_STATUE[:2]])})
    return site


def gate(site: Path, *extra: str, images: str = "ds/images/val") -> int:
    return main(["model", "gate", "v2", "--config", str(site / "etc" / "site.yaml"), "--images", str(site / images),
                 "--out", str(site / "gate"), *extra])


def test_the_gate_scores_only_the_false_alarms_the_candidate_did_not_train_on(gated, capsys):
    """Scoring them all, the candidate would be credited with removing the false alarm it was trained on, and the one
    showing its picture."""
    assert gate(gated) == 1
    out = capsys.readouterr().out
    assert f"false alarms: 3 records read from {gated / 'var' / 'hard-negatives'}, 1 scored (not in the training " \
           f"split of {gated / 'ds'} nor dropped from its validation split)" in out
    assert "refused: repeats 1 marked false alarms, serving 1: none removed" in out


def test_the_gate_scores_false_alarms_marked_since_the_dataset_was_built(gated, capsys):
    mark_false_alarm(gated, "e4", 1_760_100_000.0, STATUE)
    assert gate(gated) == 1
    out = capsys.readouterr().out
    assert "4 records read" in out and ", 2 scored (" in out
    assert "refused: repeats 2 marked false alarms, serving 2: none removed" in out


def test_the_gate_refuses_unreviewed_labels_unless_told_to_score_on_them(gated, capsys):
    dataset = load_dataset(gated / "ds")
    rows = (gated / "ds" / "manifest.csv").read_text().splitlines()
    first_val = next(i for i, item in enumerate(dataset.items) if item.split == "val")
    rows[first_val + 1] = rows[first_val + 1][:-1] + "0"  # reviewed 1 -> 0
    (gated / "ds" / "manifest.csv").write_text("\n".join(rows) + "\n")
    capsys.readouterr()
    assert gate(gated) == 2
    assert_one_line_error_printed(capsys, "images/val: 1 of 3 images carry only the detector's pre-labels",
                                  "--allow-unreviewed")
    assert not (gated / "gate").exists()
    assert gate(gated, "--allow-unreviewed") == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("cityguard: warning: ") and "pre-labels" in captured.err
    assert (gated / "gate" / "gate.json").exists()


def test_the_gate_refuses_held_out_images_naming_the_file(gated, capsys):
    image = sorted((gated / "ds" / "images" / "val").iterdir())[0]
    note = gated / "held-out.md"
    note.write_text(hashlib.sha256(image.read_bytes()).hexdigest() + "\n")
    capsys.readouterr()
    assert gate(gated, "--held-out", str(note)) == 2
    assert_one_line_error_printed(capsys, f"refused: {image} has a held-out sha256")


class Streets(Stand):
    """A stand-in whose model also knows cars."""

    names = {0: "person", 2: "car"}


class GhostCars(Streets):
    """Reports a confident car in the corner of every image, where there is none."""

    def detect(self, images):
        return [ImageDetections(np.vstack([found.xyxy, [[100, 0, 127, 20]]]), np.r_[found.confidence, 0.95],
                                np.r_[found.class_id, 2], (*found.class_names, "car"), 1.0)
                for found in super().detect(images)]


def test_the_gate_counts_false_detections_of_a_class_its_dataset_labels_and_no_scored_image_does(gated, monkeypatch,
                                                                                                 capsys):
    """The candidate drops the false alarm and keeps every person, but reports cars where there are none; as cars
    are labelled in its dataset's training frames, its phantom cars count against its precision."""
    label = next((gated / "ds" / "labels" / "train").iterdir())
    label.write_text(label.read_text() + "2 0.5 0.1 0.2 0.1\n")
    stand_ins(monkeypatch, {"serving.pt": Streets("serving"), "candidate.pt": GhostCars("candidate",
                                                                                        ignores=[STATUE[:2]])})
    assert gate(gated, "--rule-classes", "person,car") == 1
    out = capsys.readouterr().out
    assert "refused: precision@0.25 0.400 below serving 0.667; AP@0.5 car not checked (no labels)" in out


def test_the_gate_counts_no_detection_of_a_class_labelled_nowhere_and_says_it_is_not_checked(gated, monkeypatch,
                                                                                             capsys):
    """Nothing tells a car found right from wrong where no image labels cars: counted as false, a candidate that
    stopped finding cars would gain precision, and one that finds more would lose it."""
    stand_ins(monkeypatch, {"serving.pt": Streets("serving"), "candidate.pt": GhostCars("candidate",
                                                                                        ignores=[STATUE[:2]])})
    assert gate(gated, "--rule-classes", "person,car") == 0
    out = capsys.readouterr().out
    assert "precision@0.25 1.000 not below serving 0.667" in out and "AP@0.5 car not checked (no labels)" in out


def test_a_rule_class_the_models_do_not_detect_is_refused_naming_their_classes(gated, monkeypatch, capsys):
    """A misspelt --rule-classes name labels nothing, so its AP would be reported as not checked and the candidate
    promoted without the class meant being compared."""
    stand_ins(monkeypatch, {"serving.pt": Streets("serving"), "candidate.pt": Streets("candidate")})
    assert gate(gated, "--rule-classes", "person,cars", "--promote") == 2
    assert_one_line_error_printed(capsys, "--rule-classes cars: v1 detects no class of that name (its classes: car, "
                                  "person)")
    assert not (gated / "gate").exists() and ModelRegistry(gated / "registry").serving().version == "v1"


def test_the_gate_says_so_when_no_held_out_false_alarm_is_left_to_check(gated, capsys):
    shutil.rmtree(gated / "var" / "hard-negatives")
    assert gate(gated) == 0
    assert "; no held-out false alarms: not checked\n" in capsys.readouterr().out
    assert "| false alarms repeated | - | - | not checked |" in (gated / "gate" / "gate.md").read_text()


def test_the_gate_finds_a_moved_dataset_by_its_content_and_is_told_where_a_changed_one_is(gated, capsys):
    (gated / "ds").rename(gated / "moved")
    assert gate(gated, images="moved/images/val") == 1
    assert f"1 scored (not in the training split of {gated / 'moved'} " in capsys.readouterr().out
    label = next((gated / "moved" / "labels" / "val").iterdir())
    label.write_text(label.read_text() + "0 0.5 0.5 0.1 0.1\n")  # relabelled since: not the content trained on
    assert gate(gated, images="moved/images/val") == 2
    assert_one_line_error_printed(capsys, f"{gated / 'ds'}: the dataset the candidate was trained on is not there",
                                  "--dataset")
    assert gate(gated, "--dataset", str(gated / "moved"), images="moved/images/val") == 1
    captured = capsys.readouterr()
    assert f"1 scored (not in the training split of {gated / 'moved'} " in captured.out
    assert f"cityguard: warning: {gated / 'moved'} has changed since v2 was trained on it" in captured.err


def test_the_gate_refuses_a_report_folder_holding_more_than_a_report_before_scoring(gated, capsys):
    """The report replaces its folder whole: the operator's files there would go with it."""
    (gated / "gate").mkdir()
    (gated / "gate" / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert gate(gated, "--promote") == 2
    captured = capsys.readouterr()
    assert "false alarms:" not in captured.out  # stopped before reading and scoring anything
    assert captured.err.startswith(f"cityguard: error: {gated / 'gate'} holds more than a gate report (notes.txt)")
    assert captured.err.count("\n") == 1
    assert [path.name for path in (gated / "gate").iterdir()] == ["notes.txt"]
    assert ModelRegistry(gated / "registry").serving().version == "v1"


def test_the_gate_refuses_images_the_candidate_trained_on_naming_them(gated, capsys):
    assert gate(gated, images="ds/images/train") == 2
    assert_one_line_error_printed(capsys, "refused: 2 of the 2 images in ", f"training split of {gated / 'ds'}, which "
                                  "v2 was trained on")
    assert not (gated / "gate").exists()


def test_the_gate_warns_when_the_dataset_has_changed_since_the_candidate_trained_on_it(gated, capsys):
    assert gate(gated) == 1
    assert "warning" not in capsys.readouterr().err
    label = next((gated / "ds" / "labels" / "val").iterdir())
    label.write_text(label.read_text() + "0 0.5 0.5 0.1 0.1\n")
    assert gate(gated) == 1
    assert f"cityguard: warning: {gated / 'ds'} has changed since v2 was trained on it" in capsys.readouterr().err


def test_the_gate_refuses_a_version_given_as_a_path_out_of_the_registry(gated, capsys):
    """`../elsewhere/v1` would score and promote another registry's model, and write the report outside var/."""
    elsewhere = ModelRegistry(gated / "elsewhere")
    elsewhere.register(gated / "candidate.pt", {})
    capsys.readouterr()
    assert main(["model", "gate", "../elsewhere/v1", "--config", str(gated / "etc" / "site.yaml"), "--images",
                 str(gated / "ds" / "images" / "val"), "--promote"]) == 2
    assert_one_line_error_printed(capsys, "'../elsewhere/v1' is not a model version name", "v1, v2")
    assert ModelRegistry(gated / "registry").serving().version == "v1"


def test_a_candidate_that_passed_against_one_model_is_not_promoted_over_another_promoted_meanwhile(gated, monkeypatch,
                                                                                                   capsys):
    """Another gate promotes v3 while this one scores v2 against v1: serving v2 would drop v3, which v2 was never
    compared with."""
    shutil.rmtree(gated / "var" / "hard-negatives")  # nothing left to refuse v2 for
    registry = ModelRegistry(gated / "registry")
    (gated / "other.pt").write_bytes(b"other")
    registry.register(gated / "other.pt", {})

    class ScoredWhileAnotherGatePromotes(Stand):
        def detect(self, images):
            registry.promote("v3", "another gate passed")
            return super().detect(images)

    stand_ins(monkeypatch, {"serving.pt": ScoredWhileAnotherGatePromotes("serving"),
                            "candidate.pt": Stand("candidate")})
    assert gate(gated, "--promote") == 2
    assert_one_line_error_printed(capsys, "v2 was not promoted: it was compared with v1, and v3 serves now",
                                  "gate it again")
    assert registry.serving().version == "v3"
    assert [entry["version"] for entry in registry.pointer()["history"]] == ["v1", "v3"]
    saved = json.loads((gated / "gate" / "gate.json").read_text())
    assert saved["passed"] and not saved["promoted"]


def test_a_candidate_for_other_classes_is_refused_naming_them(gated, monkeypatch, capsys):
    """A people-only model scores as well on people, and the cars the site's rules act on are labelled nowhere: the
    figures alone would promote a model that sees no car."""
    stand_ins(monkeypatch, {"serving.pt": Streets("serving"), "candidate.pt": Stand("candidate", ignores=[STATUE[:2]])})
    capsys.readouterr()
    assert gate(gated, "--rule-classes", "person,car", "--promote") == 2
    assert_one_line_error_printed(capsys, "refused: v2 detects other classes than v1 (2 car missing)")
    assert not (gated / "gate").exists() and ModelRegistry(gated / "registry").serving().version == "v1"

    class Renumbered(Stand):
        names = {0: "person", 1: "car"}

    stand_ins(monkeypatch, {"serving.pt": Streets("serving"), "candidate.pt": Renumbered("candidate")})
    assert gate(gated, "--promote") == 2
    assert_one_line_error_printed(capsys, "(1 car added, 2 car missing)")

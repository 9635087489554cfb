"""The site dataset: label formats round-trip, the camera/time split cannot leak, feedback becomes labels."""
import json
from dataclasses import replace

import cv2
import numpy as np
import pytest

from cityguard.cli import main
from cityguard.evaluation.detection import Boxes
from cityguard.training.dataset import (
    DatasetItem,
    SplitPlan,
    assign_splits,
    false_alarm_items,
    keep_reviewed,
    load_dataset,
    read_false_alarms,
    replace_labels,
    statistics,
    verify_no_leakage,
    write_dataset,
)
from cityguard.training.labels import (
    ImageLabels,
    from_coco,
    from_voc_xml,
    to_coco,
    to_voc_xml,
)
from processors.inference.detector import ImageDetections
from tests.test_cli_errors import assert_one_line_error_printed

NAMES = {0: "person", 1: "bicycle", 2: "car"}


def image_labels() -> list[ImageLabels]:
    return [ImageLabels("a.jpg", 320, 240, Boxes.of([[10, 20, 50, 80], [100.5, 60, 180, 200]], [0, 2])),
            ImageLabels("b.jpg", 320, 240, Boxes.of(np.zeros((0, 4)), []))]


def assert_same_labels(got: list[ImageLabels], expected: list[ImageLabels]) -> None:
    assert [(g.name, g.width, g.height) for g in got] == [(e.name, e.width, e.height) for e in expected]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g.boxes.xyxy, e.boxes.xyxy, atol=0.01)
        assert g.boxes.class_id.tolist() == e.boxes.class_id.tolist()


def test_coco_round_trip_keeps_boxes_classes_and_background_images():
    document = json.loads(json.dumps(to_coco(image_labels(), NAMES)))
    assert_same_labels(from_coco(document, NAMES, "labels.json"), image_labels())


def test_coco_categories_are_matched_by_name_not_id():
    document = to_coco(image_labels()[:1], NAMES)
    document["categories"] = [{"id": 7, "name": "person"}, {"id": 3, "name": "car"}]
    for annotation in document["annotations"]:
        annotation["category_id"] = {0: 7, 2: 3}[annotation["category_id"]]
    assert from_coco(document, NAMES, "x.json")[0].boxes.class_id.tolist() == [0, 2]


def test_an_unknown_class_name_is_an_error_naming_the_file(tmp_path):
    document = to_coco(image_labels()[:1], {0: "statue", 2: "car"})
    with pytest.raises(ValueError, match="x.json: class 'statue'"):
        from_coco(document, NAMES, "x.json")


def test_pascal_voc_round_trip(tmp_path):
    for labels in image_labels():
        (tmp_path / f"{labels.name[:-4]}.xml").write_text(to_voc_xml(labels, NAMES))
    got = [from_voc_xml(tmp_path / name, NAMES) for name in ("a.xml", "b.xml")]
    assert_same_labels(got, image_labels())


def frames(camera: str, seconds: range, boxes_per_frame: int = 1) -> list[DatasetItem]:
    image = np.zeros((48, 64, 3), dtype=np.uint8)
    boxes = Boxes.of([[4, 4, 20, 30]] * boxes_per_frame, [0] * boxes_per_frame)
    return [DatasetItem(camera, float(t), "background", image, boxes, reviewed=False) for t in seconds]


def test_split_keeps_whole_time_blocks_per_camera_and_guards_their_edges():
    items = frames("north", range(600)) + frames("south", range(1000, 1300))
    plan = SplitPlan(val_fraction=0.2, block_seconds=60, guard_seconds=3)
    split, dropped = assign_splits(items, plan)
    verify_no_leakage(split, plan)
    for camera in ("north", "south"):
        blocks = {}
        for item in split:
            if item.camera == camera:
                blocks.setdefault(int(item.captured_at // 60), set()).add(item.split)
        assert all(len(splits) == 1 for splits in blocks.values())
        assert {"train", "val"} <= set.union(*blocks.values())
    assert dropped > 0 and len(split) + dropped == len(items)


def test_a_held_out_camera_goes_to_validation_whole():
    split, _ = assign_splits(frames("north", range(300)) + frames("south", range(300)),
                             SplitPlan(val_cameras=frozenset({"south"})))
    assert {i.split for i in split if i.camera == "south"} == {"val"}
    assert {i.split for i in split if i.camera == "north"} <= {"train", "val"}


def test_leakage_check_catches_a_block_in_both_splits_and_close_neighbours():
    plan = SplitPlan(block_seconds=60, guard_seconds=2)
    a, b = frames("north", range(2))
    with pytest.raises(AssertionError, match="block 0"):
        verify_no_leakage([replace(a, split="train"), replace(b, split="val")], plan)
    late = frames("north", range(60, 61))[0]
    with pytest.raises(AssertionError, match="from a training frame"):
        verify_no_leakage([replace(frames("north", range(59, 60))[0], split="train"), replace(late, split="val")],
                          plan)


class FixedDetector:
    """Reports the same boxes on every image: stands in for the site's model when pre-labelling."""

    name = "fixed"

    def __init__(self, xyxy, class_id):
        self.xyxy, self.class_id = np.asarray(xyxy, dtype=float), np.asarray(class_id)

    def detect(self, images):
        return [ImageDetections(self.xyxy, np.full(len(self.xyxy), 0.9), self.class_id,
                                tuple(NAMES[int(c)] for c in self.class_id), 1.0) for _ in images]


def false_alarm_folder(tmp_path, **extra):
    folder = tmp_path / "hard-negatives" / "campus"
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "f1.jpg"), np.zeros((240, 320, 3), dtype=np.uint8))
    (folder / "f1.json").write_text(json.dumps({"camera": "campus", "time": 12.5, "event_id": "e1",
                                                "boxes": [[100, 50, 140, 150]], "class": "person", **extra}))
    return tmp_path / "hard-negatives"


def test_a_false_alarm_keeps_the_rest_of_the_scene_and_loses_the_wrong_box(tmp_path):
    records = read_false_alarms(false_alarm_folder(tmp_path), NAMES)
    detector = FixedDetector([[101, 52, 139, 149], [200, 100, 260, 200], [100, 50, 140, 150]], [0, 0, 2])
    (item,) = false_alarm_items(records, detector)
    # the person box on the statue goes; another person, and a car at the same place, stay
    assert item.boxes.xyxy.tolist() == [[200, 100, 260, 200], [100, 50, 140, 150]]
    assert item.boxes.class_id.tolist() == [0, 2] and item.source == "false-alarm" and not item.reviewed


def test_an_operator_correction_is_used_as_is_and_no_detector_means_a_background_image(tmp_path):
    corrected = false_alarm_folder(tmp_path / "a", labels=[{"class": "bicycle", "xyxy": [1, 2, 30, 40]}])
    (item,) = false_alarm_items(read_false_alarms(corrected, NAMES), FixedDetector([[0, 0, 9, 9]], [0]))
    assert item.boxes.class_id.tolist() == [1] and item.reviewed
    (background,) = false_alarm_items(read_false_alarms(false_alarm_folder(tmp_path / "b"), NAMES))
    assert len(background.boxes) == 0


def test_written_dataset_has_yolo_layout_and_statistics(tmp_path):
    items, _ = assign_splits(frames("north", range(240), 2) + frames("south", range(120), 0),
                             SplitPlan(block_seconds=60))
    data_yaml = write_dataset(tmp_path / "ds", items, NAMES)
    assert "images/train" in data_yaml.read_text()
    figures = statistics(load_dataset(tmp_path / "ds"))
    north = sum(item.camera == "north" for item in items)
    assert figures["images"]["train"] + figures["images"]["val"] == len(items)
    assert figures["cameras"]["south"]["background_images"] == len(items) - north
    person = figures["classes"]["person"]
    assert person["train_boxes"] + person["val_boxes"] == 2 * north


@pytest.mark.parametrize("label_format", ["coco", "voc", "yolo"])
def test_export_then_import_through_the_cli_round_trips(tmp_path, capsys, label_format):
    items, _ = assign_splits(frames("north", range(180)), SplitPlan(block_seconds=60))
    write_dataset(tmp_path / "ds", items[::20], NAMES)
    before = load_dataset(tmp_path / "ds")
    out = tmp_path / ("labels.json" if label_format == "coco" else "labels")
    assert main(["dataset", "export", str(tmp_path / "ds"), "--format", label_format, "--out", str(out)]) == 0
    assert main(["dataset", "import", str(tmp_path / "ds"), "--format", label_format, "--labels", str(out)]) == 0
    assert f"imported labels of {len(before.items)} images" in capsys.readouterr().out
    after = load_dataset(tmp_path / "ds")
    assert_same_labels([after.labels(i) for i in after.items], [before.labels(i) for i in before.items])
    assert all(item.reviewed for item in after.items)


def test_rebuilding_keeps_what_operators_reviewed(tmp_path):
    items, _ = assign_splits(frames("north", range(0, 180, 30)), SplitPlan(block_seconds=60, guard_seconds=0))
    write_dataset(tmp_path / "ds", items, NAMES)
    dataset = load_dataset(tmp_path / "ds")
    first, second = dataset.items[0], dataset.items[1]
    corrected = [ImageLabels(f"{item.name}.jpg", 64, 48, Boxes.of([[1, 1, 9, 9]], [2])) for item in (first, second)]
    replace_labels(dataset, corrected)
    # the next build's sources give fresh detector labels for all but the second frame
    fresh = [item for item in frames("north", range(0, 180, 30)) if item.name != second.name]
    rebuilt, _ = assign_splits(keep_reviewed(fresh, load_dataset(tmp_path / "ds")), SplitPlan(block_seconds=60))
    write_dataset(tmp_path / "ds", rebuilt, NAMES)
    after = {item.name: item for item in load_dataset(tmp_path / "ds").items}
    assert len(after) == len(items)
    for item in (first, second):
        assert after[item.name].reviewed and after[item.name].boxes.class_id.tolist() == [2]
    assert sum(item.reviewed for item in after.values()) == 2


def test_frames_around_missed_events_come_from_the_cameras_clip(tmp_path):
    from cityguard.training.dataset import labelled_clip_items, missed_event_times
    from tests.conftest import VTEST

    (tmp_path / "missed.csv").write_text("camera,type,start,end\ncampus,crowd,10,11\ncampus,crowd,79,85\n")
    times = missed_event_times(tmp_path / "missed.csv", window_s=1.0, step_s=0.5)
    assert times["campus"][:7] == [9.0, 9.5, 10.0, 10.5, 11.0, 11.5, 12.0]
    items = labelled_clip_items("campus", VTEST, times["campus"], "missed", None, 0.25)
    seconds = [item.captured_at for item in items]
    assert seconds[:7] == times["campus"][:7] and max(seconds) < 79.5  # the 79.5 s clip has no frames past its end
    assert all(item.image.shape == (576, 768, 3) and not item.reviewed for item in items)


def test_an_interrupted_rebuild_leaves_the_previous_dataset_whole(tmp_path):
    items, _ = assign_splits(frames("north", range(0, 180, 30)), SplitPlan(block_seconds=60, guard_seconds=0))
    write_dataset(tmp_path / "ds", items, NAMES)
    replace_labels(load_dataset(tmp_path / "ds"), [ImageLabels(f"{items[0].name}.jpg", 64, 48,
                                                               Boxes.of([[1, 1, 9, 9]], [2]))])
    before = sorted(path.relative_to(tmp_path) for path in (tmp_path / "ds").rglob("*"))
    unreadable = replace(items[-1], image=tmp_path / "gone.jpg")  # the copy fails half way through the build
    with pytest.raises(OSError):
        write_dataset(tmp_path / "ds", [*items[:-1], unreadable], NAMES)
    assert sorted(path.relative_to(tmp_path) for path in (tmp_path / "ds").rglob("*")) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ds"]  # no half-written folder beside it
    reviewed = [item for item in load_dataset(tmp_path / "ds").items if item.reviewed]
    assert [item.boxes.class_id.tolist() for item in reviewed] == [[2]]


def test_a_dataset_moved_aside_by_an_interrupted_swap_is_put_back(tmp_path):
    items, _ = assign_splits(frames("north", range(0, 180, 30)), SplitPlan(block_seconds=60, guard_seconds=0))
    write_dataset(tmp_path / "ds", items, NAMES)
    (tmp_path / "ds").rename(tmp_path / ".ds.previous")  # as a build stopped between its two renames leaves it
    assert len(load_dataset(tmp_path / "ds").items) == len(items)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ds"]


def test_a_dataset_folder_that_is_a_link_to_another_disk_is_rebuilt_there_and_the_link_stays(tmp_path):
    (tmp_path / "big-disk").mkdir()
    (tmp_path / "site").symlink_to(tmp_path / "big-disk" / "ds")
    items, _ = assign_splits(frames("north", range(0, 180, 30)), SplitPlan(block_seconds=60, guard_seconds=0))
    for _ in range(2):
        write_dataset(tmp_path / "site", items, NAMES)
        assert (tmp_path / "site").is_symlink() and (tmp_path / "big-disk" / "ds" / "data.yaml").is_file()
        assert sorted(path.name for path in tmp_path.iterdir()) == ["big-disk", "site"]
        assert sorted(path.name for path in (tmp_path / "big-disk").iterdir()) == ["ds"]
    assert len(load_dataset(tmp_path / "site").items) == len(items)


def test_a_folder_holding_more_than_a_dataset_is_not_replaced(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"holds more than a dataset \(notes.txt\)"):
        write_dataset(tmp_path, frames("north", range(3)), NAMES)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_importing_from_a_wrong_labels_folder_is_one_line_and_changes_nothing(tmp_path, capsys):
    items, _ = assign_splits(frames("north", range(0, 180, 30)), SplitPlan(block_seconds=60, guard_seconds=0))
    write_dataset(tmp_path / "ds", items, NAMES)
    manifest = (tmp_path / "ds" / "manifest.csv").read_bytes()
    (tmp_path / "empty").mkdir()
    for label_format in ("voc", "yolo"):
        for labels, says in ((tmp_path / "nope", "no labels folder"), (tmp_path / "empty", "label files in")):
            assert main(["dataset", "import", str(tmp_path / "ds"), "--format", label_format,
                         "--labels", str(labels)]) == 2
            assert_one_line_error_printed(capsys, says, str(labels), "--labels")
    assert (tmp_path / "ds" / "manifest.csv").read_bytes() == manifest

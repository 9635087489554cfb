"""The site dataset: label formats round-trip, the camera/time split cannot leak, feedback becomes labels."""
import json
import re
import zlib
from dataclasses import replace

import cv2
import numpy as np
import pytest

from cityguard.cli import main
from cityguard.evaluation.detection import Boxes
from cityguard.training.dataset import (
    THUMBNAIL_SIZE,
    DatasetItem,
    Pictures,
    SplitPlan,
    assign_splits,
    false_alarm_items,
    keep_reviewed,
    load_dataset,
    phase_shifts,
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


def picture(camera: str, seconds: float) -> np.ndarray:
    """A frame no other looks like (noise seeded by camera and time): the split drops validation look-alikes."""
    return np.random.default_rng(zlib.crc32(f"{camera}/{seconds}".encode())).integers(0, 256, (48, 64, 3),
                                                                                       dtype=np.uint8)


def frames(camera: str, seconds: range, boxes_per_frame: int = 1, source: str = "background") -> list[DatasetItem]:
    boxes = Boxes.of([[4, 4, 20, 30]] * boxes_per_frame, [0] * boxes_per_frame)
    return [DatasetItem(camera, float(t), source, picture(camera, t), boxes, reviewed=False) for t in seconds]


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
    assert figures["cameras"]["south"]["images_without_boxes"] == len(items) - north
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


def splits_of(items) -> dict[str, str]:
    return {item.name: item.split for item in items}


def test_a_rebuild_with_more_footage_or_cameras_never_turns_a_validation_frame_into_a_training_one():
    plan = SplitPlan()  # 60 s blocks, 20 % validation
    north = frames("north", range(0, 600, 5))
    first = splits_of(assign_splits(north, plan)[0])
    assert {"train", "val"} <= set(first.values())
    annex = frames("annex", [30, 90, 150], source="false-alarm")  # a camera that sorts first
    # a block's split is its own: another camera changes nothing, even without the previous build
    assert splits_of(assign_splits(annex + north, plan)[0]).items() >= first.items()
    more = frames("north", range(0, 1200, 5)) + frames("south", range(0, 600, 5))
    for items in (annex + north, frames("north", range(0, 660, 5)), more):
        again = splits_of(assign_splits(items, plan, first)[0])
        assert [again[name] for name, split in first.items() if split == "val"] == ["val"] * list(
            first.values()).count("val")


def test_a_block_the_previous_build_had_keeps_its_split_whatever_the_plan_says_now():
    first = splits_of(assign_splits(frames("north", range(0, 600, 5)), SplitPlan())[0])
    again = splits_of(assign_splits(frames("north", range(0, 600, 5)), SplitPlan(val_fraction=0.9, seed=7), first)[0])
    assert again == first


def producer_jpeg(clip, seconds: float) -> bytes:
    """The JPEG the producer makes of a clip's frame (PyAV's decode, simplejpeg at the default 1280 px and quality
    80): what the console keeps of a false alarm."""
    import av

    from producers.picture import YuvPicture, encode_jpeg

    with av.open(str(clip)) as container:
        frame = next(frame for frame in container.decode(video=0) if frame.time >= seconds - 1e-6)
        return encode_jpeg(YuvPicture.from_frame(frame), 1280, 80)[0]


def campus_background() -> list[DatasetItem]:
    from cityguard.training.dataset import background_times, clip_frames
    from tests.conftest import VTEST

    empty = Boxes.of(np.zeros((0, 4)), [])
    return [DatasetItem("campus", t, "background", image, empty, False)
            for t, image in clip_frames(VTEST, background_times(VTEST, 20))]


def false_alarm_at(path, wall_time: float) -> DatasetItem:
    return DatasetItem("campus", wall_time, "false-alarm", path, Boxes.of(np.zeros((0, 4)), []), True)


def test_a_false_alarm_showing_the_picture_of_a_clip_frame_is_kept_out_of_validation_whatever_its_time(tmp_path):
    """False alarms carry the wall clock, clip frames seconds into the clip: the very same picture (here the
    producer's JPEG of a frame of the looping campus clip, as the console keeps it, once a loop) must not sit on
    both sides of the split."""
    from tests.conftest import VTEST

    background = campus_background()
    (tmp_path / "alarm.jpg").write_bytes(producer_jpeg(VTEST, background[3].captured_at))
    alarms = [false_alarm_at(tmp_path / "alarm.jpg", 1_760_000_000.0 + k * 79.5) for k in range(12)]
    plan = SplitPlan(block_seconds=10, val_fraction=0.5)
    items, dropped = assign_splits(background + alarms, plan)
    verify_no_leakage(items, plan)
    sides = {item.split for item in items if item.name in {i.name for i in [background[3], *alarms]}}
    assert sides == {"train"} and dropped > 0
    assert {item.split for item in items} == {"train", "val"}  # the other clip frames still validate
    for train, val in ((background[3], alarms[0]), (alarms[0], background[3]), (alarms[0], alarms[1])):
        with pytest.raises(AssertionError, match="shows the same picture as training frame campus_"):
            verify_no_leakage([replace(train, split="train"), replace(val, split="val")], plan)


def shifted(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    return cv2.warpAffine(image, np.float32([[1, 0, dx], [0, 1, dy]]), (image.shape[1], image.shape[0]),
                          borderMode=cv2.BORDER_REPLICATE)


def dimmed(image: np.ndarray) -> np.ndarray:
    return (image.astype(np.float32) * 0.2).astype(np.uint8)


@pytest.mark.parametrize("pictures", [
    lambda clip, produced: (clip, shifted(produced, 4, 2)),
    lambda clip, produced: (clip, shifted(produced, -8, 4)),
    lambda clip, produced: (clip, np.clip(produced.astype(np.int16) + 6, 0, 255).astype(np.uint8)),
    lambda clip, produced: (dimmed(clip), dimmed(produced)),
], ids=["shifted 4 px", "shifted 8 px", "6 grey levels brighter", "both at night"])
def test_a_false_alarm_of_a_clip_frame_nudged_or_exposed_otherwise_still_shows_its_picture(tmp_path, pictures):
    """(clip frame, false alarm) from the build's decode of a frame and the producer's JPEG of it."""
    from tests.conftest import VTEST

    frame = campus_background()[3]
    produced = cv2.imdecode(np.frombuffer(producer_jpeg(VTEST, frame.captured_at), np.uint8), cv2.IMREAD_COLOR)
    clip_image, alarm_image = pictures(frame.image, produced)
    (tmp_path / "alarm.jpg").write_bytes(cv2.imencode(".jpg", alarm_image, [cv2.IMWRITE_JPEG_QUALITY, 80])[1])
    with pytest.raises(AssertionError, match="shows the same picture as training frame"):
        verify_no_leakage([replace(frame, image=clip_image, split="train"),
                           replace(false_alarm_at(tmp_path / "alarm.jpg", 1_760_000_000.0), split="val")], SplitPlan())


def test_a_false_alarm_seconds_away_from_a_clip_frame_in_a_moving_scene_is_another_picture(tmp_path):
    from tests.conftest import VTEST

    background = campus_background()
    for seconds in (2.0, -2.0):
        (tmp_path / "alarm.jpg").write_bytes(producer_jpeg(VTEST, background[3].captured_at + seconds))
        alarm = false_alarm_at(tmp_path / "alarm.jpg", 1_760_000_000.0)
        verify_no_leakage([replace(item, split="train") for item in background] + [replace(alarm, split="val")],
                          SplitPlan())


def test_pictures_compared_all_at_once_are_aligned_as_opencv_aligns_each_pair():
    """The phase correlation of one picture with many, from spectra computed once, finds the shift
    cv2.phaseCorrelate finds for each pair: nudged, darker or other frames of the clip."""
    frames = [item.image for item in campus_background()[:8]]
    frames += [shifted(frames[k], dx, dy) for k, (dx, dy) in enumerate([(4, 2), (-8, 4), (13, -7), (1, 0)])]
    frames += [dimmed(image) for image in frames[:3]]
    items = [DatasetItem("campus", float(t), "background", image, Boxes.of(np.zeros((0, 4)), []), False)
             for t, image in enumerate(frames)]
    pictures = Pictures.of(items)
    grey = pictures.thumbnails.astype(np.float32)
    for first in (0, 3, 9):
        expected = [cv2.phaseCorrelate(grey[first], other, cv2.createHanningWindow(THUMBNAIL_SIZE, cv2.CV_32F))[0]
                    for other in grey]
        np.testing.assert_allclose(phase_shifts(pictures.phases[first], pictures.phases), expected, atol=1e-3)


def test_the_guards_decode_each_false_alarm_once_and_verifying_repeats_no_comparison(tmp_path, monkeypatch):
    """verify_no_leakage, given what assign_splits found, compares no picture again: on a site's build both are
    asked about the same frames, and each comparison of one with all the training frames of its camera costs."""
    import cityguard.training.dataset as dataset

    background = campus_background()
    alarms = []
    for k in range(6):
        cv2.imwrite(str(tmp_path / f"alarm{k}.jpg"), background[k * 3].image)
        alarms.append(false_alarm_at(tmp_path / f"alarm{k}.jpg", 1_760_000_000.0 + k * 600))
    reads, comparisons = [], []

    def counted(function, calls):
        def call(*args):
            calls.append(args)
            return function(*args)
        return call

    monkeypatch.setattr(dataset, "read_image", counted(dataset.read_image, reads))
    monkeypatch.setattr(dataset, "picture_differences", counted(dataset.picture_differences, comparisons))
    plan, unlike = SplitPlan(block_seconds=10, val_fraction=0.5), set()
    items, _ = assign_splits(background + alarms, plan, unlike=unlike)
    assert comparisons and sorted(path for (path,) in reads) == sorted({path for (path,) in reads})
    reads.clear()
    comparisons.clear()
    verify_no_leakage(items, plan, unlike)
    assert not reads and not comparisons
    verify_no_leakage(items, plan)
    assert comparisons


def test_clip_frames_of_a_still_scene_are_kept_apart_by_the_time_guard_alone():
    """Each clip frame is one moment of the clip: a dark, still scene's frames seconds apart look alike but all
    validate where their blocks say so."""
    dark = np.full((48, 64, 3), 12, np.uint8)
    empty = Boxes.of(np.zeros((0, 4)), [])
    items = [DatasetItem("yard", float(t), "background", dark, empty, False) for t in range(0, 600, 5)]
    plan = SplitPlan(block_seconds=60, guard_seconds=2)
    split, dropped = assign_splits(items, plan)
    verify_no_leakage(split, plan)
    assert dropped == 0 and {"train", "val"} <= {item.split for item in split}


def test_times_on_different_clocks_are_never_compared():
    # a false alarm at unix second 30 and a clip frame 30 s into the clip share no block and no guard
    clip, alarm = frames("north", [30])[0], frames("north", [30.5], source="false-alarm")[0]
    verify_no_leakage([replace(clip, split="train"), replace(alarm, split="val")], SplitPlan())


def test_a_record_listing_wrong_boxes_gives_each_its_own_class(tmp_path):
    names = {0: "person", 2: "car", 7: "truck"}
    boxes = [[10, 10, 60, 40], [80, 10, 130, 40], [150, 10, 230, 60]]
    folder = false_alarm_folder(tmp_path, wrong=[{"class": name, "xyxy": box}
                                                 for name, box in zip(["car", "car", "truck"], boxes, strict=True)])
    (record,) = read_false_alarms(folder, names)
    assert record.wrong.class_id.tolist() == [2, 2, 7] and record.wrong.xyxy.tolist() == boxes

    class Live:
        def detect(self, images):
            return [ImageDetections(np.asarray(boxes, float), np.full(3, 0.9), np.array([2, 2, 7]),
                                    ("car", "car", "truck"), 1.0) for _ in images]

    (item,) = false_alarm_items([record], Live())
    assert len(item.boxes) == 0  # the truck was blamed too: no box of the event stays a positive label


@pytest.mark.parametrize(("extra", "says"), [
    ({"class": 99}, "f1.json: boxes[1]: class 99 is not one of the dataset's class ids"),
    ({"labels": [{"class": 42, "xyxy": [1, 2, 30, 40]}]}, "f1.json: labels[1]: class 42 is not one of"),
    ({"labels": [{"class": "car", "xyxy": [1, 2, 900, 40]}]}, "f1.json: labels[1]: box [1.0, 2.0, 900.0, 40.0] is "
                                                              "outside the 320x240 image"),
    ({"boxes": [[1, 2, 3]]}, "f1.json: boxes[1]: box [1, 2, 3] is not four numbers"),
    ({"wrong": [{"class": "statue", "xyxy": [1, 2, 3, 4]}]}, "f1.json: wrong[1]: class 'statue' is not one of"),
    ({"wrong": [[1, 2, 3, 4]]}, "f1.json: wrong[1]: expected {\"class\": name, \"xyxy\""),
    ({"time": "noon"}, "f1.json: not a false-alarm record"),
    ({"time": float("nan")}, "f1.json: field 'time' must be a finite number of unix seconds, not NaN"),
    ({"time": float("inf")}, "f1.json: field 'time' must be a finite number of unix seconds, not Infinity"),
    # the camera names the frame's files in the dataset: a path there would write outside it
    ({"camera": "../../../../escaped"}, "f1.json: field 'camera' must be \"campus\", the camera folder it is in, "
                                        "not \"../../../../escaped\""),
    ({"camera": "gate"}, "f1.json: field 'camera' must be \"campus\""),
])
def test_a_false_alarm_record_with_a_wrong_class_box_or_field_is_refused_naming_it(tmp_path, extra, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        read_false_alarms(false_alarm_folder(tmp_path, **extra), NAMES)


def test_a_false_alarm_in_a_folder_that_is_no_camera_id_is_refused_naming_it(tmp_path):
    folder = false_alarm_folder(tmp_path)
    (folder / "campus").rename(folder / "camp us")
    (folder / "camp us" / "f1.json").write_text(json.dumps({"camera": "camp us", "time": 12.5, "wrong": []}))
    with pytest.raises(ValueError, match=re.escape("f1.json: field 'camera' \"camp us\" is not a camera id")):
        read_false_alarms(folder, NAMES)


def test_false_alarms_on_one_frame_are_one_record_and_no_blamed_box_stays_a_positive_label(tmp_path):
    """Two incidents on one frame (two zones, two tracks): each record blames its own box."""
    folder = false_alarm_folder(tmp_path)
    cv2.imwrite(str(folder / "campus" / "f2.jpg"), np.zeros((240, 320, 3), dtype=np.uint8))
    blamed = [{"class": "person", "xyxy": [200, 100, 260, 200]}]
    (folder / "campus" / "f2.json").write_text(json.dumps({"camera": "campus", "time": 12.5, "wrong": blamed}))
    (record,) = read_false_alarms(folder, NAMES)
    assert record.wrong.xyxy.tolist() == [[100, 50, 140, 150], [200, 100, 260, 200]]
    detector = FixedDetector([[101, 52, 139, 149], [200, 100, 260, 200], [10, 10, 50, 90]], [0, 0, 0])
    (item,) = false_alarm_items([record], detector)
    assert item.boxes.xyxy.tolist() == [[10, 10, 50, 90]]


def test_corrected_labels_of_one_frame_are_merged_without_any_box_a_record_blames(tmp_path):
    first = [{"class": "person", "xyxy": [10, 10, 50, 90]}, {"class": "person", "xyxy": [200, 100, 260, 200]}]
    folder = false_alarm_folder(tmp_path, labels=first)
    cv2.imwrite(str(folder / "campus" / "f2.jpg"), np.zeros((240, 320, 3), dtype=np.uint8))
    (folder / "campus" / "f2.json").write_text(json.dumps({
        "camera": "campus", "time": 12.5, "event_id": "e2",
        "wrong": [{"class": "person", "xyxy": [200, 100, 260, 200]}],
        "labels": [{"class": "person", "xyxy": [11, 10, 50, 91]}, {"class": "car", "xyxy": [5, 150, 95, 230]}]}))
    (item,) = false_alarm_items(read_false_alarms(folder, NAMES))
    # the person both give once, the car the second adds; the box the second blames goes from the first's labels
    assert item.boxes.xyxy.tolist() == [[10, 10, 50, 90], [5, 150, 95, 230]] and item.reviewed


def test_a_false_alarm_frame_cut_short_is_refused_naming_it(tmp_path):
    folder = false_alarm_folder(tmp_path)
    jpeg = folder / "campus" / "f1.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:200])
    with pytest.raises(ValueError, match="f1.jpg: a cut JPEG"):
        read_false_alarms(folder, NAMES)


def test_pre_labels_keep_each_class_above_its_own_confidence(tmp_path):
    from cityguard.training.dataset import detector_boxes

    class Scored:
        def detect(self, images):
            return [ImageDetections(np.array([[0, 0, 9, 9], [10, 0, 19, 9], [20, 0, 29, 9]], float),
                                    np.array([0.5, 0.5, 0.15]), np.array([0, 2, 2]), ("person", "car", "car"), 1.0)
                    for _ in images]

    image = np.zeros((48, 64, 3), np.uint8)
    assert detector_boxes(Scored(), [image], 0.25)[0].class_id.tolist() == [0, 2]
    assert detector_boxes(Scored(), [image], 0.25, {0: 0.6, 2: 0.1})[0].class_id.tolist() == [2, 2]
    records = read_false_alarms(false_alarm_folder(tmp_path), NAMES)
    (item,) = false_alarm_items(records, Scored(), 0.25, {0: 0.6})
    assert item.boxes.class_id.tolist() == [2]


def small_dataset(tmp_path):
    items, _ = assign_splits(frames("north", range(0, 180, 30)), SplitPlan(block_seconds=60, guard_seconds=0))
    write_dataset(tmp_path / "ds", items, NAMES)
    return load_dataset(tmp_path / "ds")


def import_labels(tmp_path, capsys, label_format, files: dict[str, str]) -> int:
    (tmp_path / "labels").mkdir(exist_ok=True)
    for name, text in files.items():
        (tmp_path / "labels" / name).write_text(text)
    capsys.readouterr()
    return main(["dataset", "import", str(tmp_path / "ds"), "--format", label_format,
                 "--labels", str(tmp_path / "labels")])


def voc(name: str, width: int, height: int, box: str = "<xmin>4</xmin><ymin>4</ymin><xmax>20</xmax><ymax>30</ymax>"):
    return (f"<annotation><filename>{name}.jpg</filename><size><width>{width}</width><height>{height}</height>"
            f"</size><object><name>car</name><bndbox>{box}</bndbox></object></annotation>")


@pytest.mark.parametrize(("label_format", "text", "says"), [
    ("yolo", "0 0.5 0.5 0.2 0.2\n99 0.5 0.5 0.2 0.2\n", ".txt:2: class 99 is not one of the dataset's class ids"),
    ("yolo", "0 1.5 0.5 0.8 0.2\n", ".txt:1: box [70.4, 19.2, 121.6, 28.8] is outside the 64x48 image"),
    ("yolo", "0 0.5 -0.01 0.2 0.01\n", ".txt:1: box [25.6, -0.72, 38.4, -0.24] has no area inside the 64x48 image"),
    ("voc", voc("{name}", 64, 48, "<xmin>4,5</xmin><ymin>4</ymin><xmax>20</xmax><ymax>30</ymax>"),
     ".xml: object 1: box ['4,5', '4', '20', '30'] is not four numbers"),
    ("voc", voc("{name}", 64, 48, "<xmin>4</xmin><ymin>4</ymin><xmax>90</xmax><ymax>30</ymax>"),
     ".xml: object 1: box [4.0, 4.0, 90.0, 30.0] is outside the 64x48 image"),
])
def test_an_import_with_a_bad_label_is_refused_in_one_line_naming_it_and_changes_nothing(tmp_path, capsys,
                                                                                        label_format, text, says):
    dataset = small_dataset(tmp_path)
    before = {path: path.read_bytes() for path in (tmp_path / "ds").rglob("*") if path.is_file()}
    first, last = dataset.items[0].name, dataset.items[-1].name
    suffix = ".txt" if label_format == "yolo" else ".xml"
    good = "0 0.5 0.5 0.2 0.2\n" if label_format == "yolo" else voc(first, 64, 48)
    assert import_labels(tmp_path, capsys, label_format, {f"{first}{suffix}": good,
                                                          f"{last}{suffix}": text.format(name=last)}) == 2
    assert_one_line_error_printed(capsys, f"{last}{suffix}", says)
    assert {path: path.read_bytes() for path in (tmp_path / "ds").rglob("*") if path.is_file()} == before


@pytest.mark.parametrize("declared", [(0, 0), (128, 96)])
def test_voc_boxes_are_taken_in_the_image_own_pixels_whatever_size_the_file_declares(tmp_path, capsys, declared):
    dataset = small_dataset(tmp_path)
    name = dataset.items[1].name
    assert import_labels(tmp_path, capsys, "voc", {f"{name}.xml": voc(name, *declared)}) == 0
    (item,) = [item for item in load_dataset(tmp_path / "ds").items if item.name == name]
    np.testing.assert_allclose(item.boxes.xyxy, [[4, 4, 20, 30]], atol=0.01)
    assert item.boxes.class_id.tolist() == [2] and item.reviewed


@pytest.mark.parametrize("label_format", ["coco", "voc"])
def test_an_import_naming_images_with_the_folder_a_tool_found_them_in_matches_them_by_file_name(tmp_path, capsys,
                                                                                               label_format):
    dataset = small_dataset(tmp_path)
    name = dataset.items[1].name
    folder = f"/home/op/ds/images/{dataset.items[1].split}/" if label_format == "voc" else "images/"
    if label_format == "voc":
        assert import_labels(tmp_path, capsys, "voc", {f"{name}.xml": voc(folder + name, 64, 48)}) == 0
    else:
        document = to_coco([ImageLabels(f"{folder}{name}.jpg", 64, 48, Boxes.of([[4, 4, 20, 30]], [2]))], NAMES)
        (tmp_path / "coco.json").write_text(json.dumps(document))
        assert main(["dataset", "import", str(tmp_path / "ds"), "--format", "coco", "--labels",
                     str(tmp_path / "coco.json")]) == 0
    (item,) = [item for item in load_dataset(tmp_path / "ds").items if item.name == name]
    np.testing.assert_allclose(item.boxes.xyxy, [[4, 4, 20, 30]], atol=0.01)
    assert item.reviewed


def test_coco_boxes_are_taken_in_the_image_own_pixels_and_checked_against_it(tmp_path, capsys):
    dataset = small_dataset(tmp_path)
    document = to_coco([ImageLabels(f"{dataset.items[0].name}.jpg", 640, 480, Boxes.of([[4, 4, 20, 30]], [2]))],
                       NAMES)
    (tmp_path / "coco.json").write_text(json.dumps(document))
    assert main(["dataset", "import", str(tmp_path / "ds"), "--format", "coco", "--labels",
                 str(tmp_path / "coco.json")]) == 0
    np.testing.assert_allclose(load_dataset(tmp_path / "ds").items[0].boxes.xyxy, [[4, 4, 20, 30]], atol=0.01)
    document["annotations"][0]["bbox"] = [40, 4, 60, 26]
    (tmp_path / "coco.json").write_text(json.dumps(document))
    capsys.readouterr()
    assert main(["dataset", "import", str(tmp_path / "ds"), "--format", "coco", "--labels",
                 str(tmp_path / "coco.json")]) == 2
    assert_one_line_error_printed(capsys, "coco.json: annotation 1: box [40.0, 4.0, 100.0, 30.0] is outside the "
                                  "64x48 image")


def test_an_import_that_stops_part_way_records_the_labels_it_wrote_as_reviewed(tmp_path):
    dataset = small_dataset(tmp_path)
    corrected = [ImageLabels(f"{item.name}.jpg", 64, 48, Boxes.of([[1, 1, 9, 9]], [2])) for item in dataset.items]
    blocker = dataset.label_path(dataset.items[3])  # the 4th file cannot be written (a disk full, a crash)
    blocker.unlink()
    blocker.mkdir()
    with pytest.raises(OSError):
        replace_labels(dataset, corrected)
    blocker.rmdir()
    after = load_dataset(tmp_path / "ds")
    assert [item.reviewed for item in after.items] == [True] * 3 + [False] * (len(after.items) - 3)
    assert all(item.boxes.class_id.tolist() == [2] for item in after.items[:3])
    rebuilt, _ = assign_splits(keep_reviewed(frames("north", range(0, 180, 30)), after),
                               SplitPlan(block_seconds=60, guard_seconds=0))
    assert sum(item.boxes.class_id.tolist() == [2] for item in rebuilt) == 3  # a rebuild keeps them

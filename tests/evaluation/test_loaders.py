import re

import numpy as np
import pytest
from scipy.io import savemat

from cityguard.evaluation.loaders import (
    default_labels_folder,
    holds_frame_scores,
    load_count_csv,
    load_event_csv,
    load_event_messages,
    load_mot_counts,
    load_shanghaitech_points,
    load_yolo_labels,
)
from cityguard.evaluation.runners import true_counts
from schemas import Event, EventState, Severity


def test_yolo_labels_become_pixel_boxes(tmp_path):
    labels = tmp_path / "frame.txt"
    labels.write_text("0 0.5 0.5 0.2 0.4\n\n2 0.1 0.9 0.2 0.2\n")
    boxes = load_yolo_labels(labels, width=200, height=100)
    np.testing.assert_allclose(boxes.xyxy, [[80, 30, 120, 70], [0, 80, 40, 100]])
    assert boxes.class_id.tolist() == [0, 2]


def test_a_missing_label_file_is_an_image_without_objects(tmp_path):
    assert len(load_yolo_labels(tmp_path / "absent.txt", 640, 480)) == 0


def test_a_malformed_label_line_is_reported_with_its_place(tmp_path):
    labels = tmp_path / "bad.txt"
    labels.write_text("0 0.5 0.5 0.2 0.4\n0 0.5 0.5\n")
    with pytest.raises(ValueError, match=r"bad.txt:2"):
        load_yolo_labels(labels, 10, 10)


def test_labels_folder_follows_the_yolo_layout(tmp_path):
    assert default_labels_folder(tmp_path / "data" / "images" / "val") == tmp_path / "data" / "labels" / "val"


def test_count_csv_with_and_without_header(tmp_path):
    with_header = tmp_path / "counts.csv"
    with_header.write_text("file,count\nIMG_1.jpg,12\nIMG_2.jpg,0\n")
    assert load_count_csv(with_header) == {"IMG_1.jpg": 12, "IMG_2.jpg": 0}
    plain = tmp_path / "plain.csv"
    plain.write_text("a.jpg,3.5\n")
    assert load_count_csv(plain) == {"a.jpg": 3.5}
    broken = tmp_path / "broken.csv"
    broken.write_text("a.jpg,3\nb.jpg,many\n")
    with pytest.raises(ValueError, match="broken.csv:2"):
        load_count_csv(broken)


def test_csvs_saved_by_a_spreadsheet_program_read_as_typed(tmp_path):
    # Excel on Windows: a byte-order mark before the first name, CRLF line endings, spaces around the commas.
    counts = tmp_path / "counts.csv"
    counts.write_bytes("\ufeffIMG_1.jpg,12\r\n straße 2.jpg , 3 \r\n".encode())
    assert load_count_csv(counts) == {"IMG_1.jpg": 12, "straße 2.jpg": 3}
    events = tmp_path / "events.csv"
    events.write_bytes("\ufeffcamera, type, start, end\r\ncam1, crowd, 10, 20\r\n".encode())
    (event,) = load_event_csv(events)
    assert (event.camera, event.type, event.start, event.end) == ("cam1", "crowd", 10, 20)
    scores = tmp_path / "scores.csv"
    scores.write_bytes("\ufeffcamera,type,start,end,score, frame\r\n".encode())
    assert holds_frame_scores(scores)


def test_a_csv_saved_in_a_windows_code_page_is_refused_naming_it(tmp_path):
    # A spreadsheet program's plain "CSV" on Windows is in its code page: ß is the one byte 0xdf, no UTF-8.
    counts = tmp_path / "counts.csv"
    counts.write_bytes("file,count\r\nstraße.jpg,3\r\n".encode("cp1252"))
    with pytest.raises(ValueError, match="counts.csv: not UTF-8 text"):
        load_count_csv(counts)
    events = tmp_path / "events.csv"
    events.write_bytes("camera,type,start,end\r\nstraße,crowd,10,20\r\n".encode("cp1252"))
    with pytest.raises(ValueError, match="events.csv: not UTF-8 text"):
        load_event_csv(events)


def write_shanghaitech(path, points: np.ndarray) -> None:
    """The dataset's layout: a 1x1 cell image_info holding a struct with location (N x 2) and number."""
    info = np.empty((1, 1), dtype=object)
    info[0, 0] = np.array([[(points, np.array([[len(points)]], dtype=float))]],
                          dtype=[("location", object), ("number", object)])
    savemat(str(path), {"image_info": info})


def test_shanghaitech_head_points(tmp_path):
    points = np.array([[10.5, 20.0], [30.0, 40.25], [50.0, 60.0]])
    write_shanghaitech(tmp_path / "GT_IMG_1.mat", points)
    np.testing.assert_allclose(load_shanghaitech_points(tmp_path / "GT_IMG_1.mat"), points)


def test_shanghaitech_counts_per_image_from_the_dataset_layout(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "ground-truth").mkdir()
    images = [tmp_path / "images" / "IMG_1.jpg", tmp_path / "images" / "IMG_2.jpg"]
    write_shanghaitech(tmp_path / "ground-truth" / "GT_IMG_1.mat", np.zeros((7, 2)))
    write_shanghaitech(tmp_path / "ground-truth" / "GT_IMG_2.mat", np.zeros((0, 2)))
    assert true_counts(images, tmp_path / "ground-truth", "shanghaitech") == [7, 0]


def test_a_mat_file_of_another_structure_is_rejected(tmp_path):
    savemat(str(tmp_path / "other.mat"), {"points": np.zeros((3, 2))})
    with pytest.raises(ValueError, match="ShanghaiTech"):
        load_shanghaitech_points(tmp_path / "other.mat")


def test_mot_counts_only_considered_visible_pedestrians(tmp_path):
    gt = tmp_path / "gt.txt"
    gt.write_text("\n".join([
        "1,1,10,10,20,40,1,1,1.0",   # pedestrian
        "1,2,50,10,20,40,1,1,0.1",   # pedestrian, barely visible
        "1,3,90,10,20,40,0,1,1.0",   # not considered
        "1,4,90,10,60,40,1,3,1.0",   # car
        "3,1,12,10,20,40,1,1,0.9",
        "3,5,12,10,20,40,1,3,0.9,",  # a car, with a trailing comma: still a 9-column row
    ]) + "\n")
    assert load_mot_counts(gt) == {1: 2, 3: 1}
    assert load_mot_counts(gt, frame_count=4, min_visibility=0.25) == {1: 1, 2: 0, 3: 1, 4: 0}
    images = [tmp_path / f"{frame:06d}.jpg" for frame in (1, 2, 3)]
    assert true_counts(images, gt, "mot") == [2, 0, 1]


def test_mot15_counts_every_row_whatever_its_world_position(tmp_path):
    gt = tmp_path / "gt.txt"  # 2D MOT 2015: the last three columns are a world position (x, y, z) or -1
    gt.write_text("1,9,499,158,31.03,75.17,1,-4.1554,-7.3591,0\n1,15,258,219,32.9,88.7,1,-11.306,-5.5995,0\n"
                  "2,1,399,182,121,229,1,-1,-1,-1\n2,2,282,201,92,184,0,-1,-1,-1\n")
    assert load_mot_counts(gt, min_visibility=0.25) == {1: 2, 2: 1}


def test_event_csv(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("camera,type,start,end,score\ncam1,crowd,10,20,0.7\ncam2,wrong_way,5,5.5,\n")
    first, second = load_event_csv(path)
    assert (first.camera, first.type, first.start, first.end, first.score) == ("cam1", "crowd", 10, 20, 0.7)
    assert second.score is None
    (tmp_path / "bad.csv").write_text("camera,kind,start,end\n")
    with pytest.raises(ValueError, match="type"):
        load_event_csv(tmp_path / "bad.csv")


def test_event_messages_collapse_into_one_interval_per_event(tmp_path):
    def message(state, updated_at, confidence, ended_at=None, event_id="e1"):
        return Event(event_id=event_id, type="crowd", state=state, severity=Severity.WARNING, camera_id="cam",
                     started_at=100.0, updated_at=updated_at, ended_at=ended_at, confidence=confidence,
                     reason="density").model_dump_json()

    lines = [message(EventState.OPENED, 100, 0.6), message(EventState.UPDATED, 110, 0.9),
             message(EventState.UPDATED, 110, 0.9),  # redelivered
             message(EventState.RESOLVED, 130, 0.8, ended_at=125),
             message(EventState.OPENED, 200, 0.5, event_id="e2")]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    resolved, still_open = sorted(load_event_messages(path), key=lambda e: e.score, reverse=True)
    assert (resolved.start, resolved.end, resolved.score) == (100, 125, 0.9)
    assert (still_open.start, still_open.end, still_open.score) == (100, 200, 0.5)


def test_a_short_event_row_names_its_line_and_the_missing_fields(tmp_path):
    path = tmp_path / "truth.csv"
    path.write_text("camera,type,start,end\ncam1,crowd,10,20\n\ncam1,crowd\n")
    with pytest.raises(ValueError, match=r"truth.csv:4: no start, end \(need camera,type,start,end"):
        load_event_csv(path)


def test_an_event_row_with_a_value_that_is_no_number_names_its_line_and_column(tmp_path):
    path = tmp_path / "truth.csv"
    path.write_text("camera,type,start,end\ncam1,crowd,10,soon\n")
    with pytest.raises(ValueError, match=r"truth.csv:2: end 'soon' is not a number$"):
        load_event_csv(path)
    path.write_text("camera,type,start,end,score\ncam1,crowd,10,20,high\n")
    with pytest.raises(ValueError, match=r"truth.csv:2: score 'high' is not a number$"):
        load_event_csv(path)


@pytest.mark.parametrize(("line", "says"), [
    ("0 1.5 0.5 0.8 0.2", "outside the 200x100 image"),
    ("0 0.5 0.5 nan 0.2", "not four finite numbers"),
    ("0 0.5 0.5 0 0.2", "has no area"),
    ("0 1.002 0.5 0.002 0.2", "box [200.2, 40.0, 200.6, 60.0] has no area inside the 200x100 image"),
    ("1.5 0.5 0.5 0.2 0.2", "class 1.5 is not a class id"),
    ("7 0.5 0.5 0.2 0.2", "class 7 is not one of the dataset's class ids [0, 2]"),
])
def test_a_label_outside_its_image_or_the_classes_is_refused_with_its_place(tmp_path, line, says):
    labels = tmp_path / "frame.txt"
    labels.write_text(f"0 0.5 0.5 0.2 0.4\n{line}\n")
    with pytest.raises(ValueError, match=rf"frame.txt:2: .*{re.escape(says)}"):
        load_yolo_labels(labels, 200, 100, names={0: "person", 2: "car"})


def test_a_box_reaching_a_rounding_error_past_the_edge_is_clipped_to_it(tmp_path):
    labels = tmp_path / "frame.txt"
    labels.write_text("0 0.9 0.5 0.201 0.2\n")  # right edge at 200.1 of 200 pixels
    assert load_yolo_labels(labels, 200, 100).xyxy.tolist() == [[159.9, 40.0, 200.0, 60.0]]


def test_a_jpeg_cut_short_is_refused_and_a_whole_one_read(tmp_path):
    import cv2

    from cityguard.evaluation.loaders import read_image

    jpeg = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8))[1].tobytes()
    for after in (b"\x00\x00", b"\n", b"CAMERA-TRAILER01"):  # padding, a newline, a camera's trailer
        (tmp_path / "whole.jpg").write_bytes(jpeg + after)
        assert read_image(tmp_path / "whole.jpg").shape == (240, 320, 3)
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    with pytest.raises(ValueError, match="cut.jpg: a cut JPEG"):
        read_image(tmp_path / "cut.jpg")
    (tmp_path / "empty.png").write_bytes(b"")  # a download that failed
    with pytest.raises(ValueError, match="empty.png: not a readable image"):
        read_image(tmp_path / "empty.png")


def test_per_frame_scores_are_told_from_events_by_their_frame_column(tmp_path):
    # Events may abut (a zone's level changing back at the window end where another's changed) and score 0; frames,
    # several rows each (one per area), may sit on any grid: only the column says which a file holds.
    events, frames = tmp_path / "events.csv", tmp_path / "scores.csv"
    events.write_text("camera,type,start,end,score\ncam,risk,100,130,0.9\ncam,risk,130,170,0\n")
    frames.write_text("camera,type,start,end,score,frame\ncam,v,0.000,0.208,0,1\ncam,v,0.000,0.208,0.4,1\n")
    assert (holds_frame_scores(events), holds_frame_scores(frames)) == (False, True)
    assert [e.score for e in load_event_csv(frames)] == [0.0, 0.4]

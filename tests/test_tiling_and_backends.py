
"""Tiled inference and model backends on real images, and the model they load."""
from itertools import pairwise

import numpy as np
import pytest

from processors.inference.backends.registry import resolve_weights
from processors.inference.backends.ultralytics import YoloDetector
from processors.inference.detector import ImageDetections
from processors.inference.stage import to_message
from processors.inference.tiling import TiledDetector, cut_by_tile, merge_by_nms, tile_origins
from schemas import Frame
from schemas.detections import MAX_OBJECTS
from schemas.settings.config import Config
from tests.conftest import OFFLINE_MODEL, ONNX_MODEL, VTEST, video_frames


def test_tiles_cover_the_image_with_overlap():
    assert tile_origins(500, 640, 0.2) == [0]
    origins = tile_origins(2000, 640, 0.2)
    assert origins[0] == 0 and origins[-1] + 640 == 2000
    assert all(b - a <= 640 * 0.8 for a, b in pairwise(origins))


def test_merge_keeps_one_box_per_object_and_class():
    part = ImageDetections(np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10]], dtype=float),
                           np.array([0.9, 0.8, 0.7]), np.array([0, 0, 2]), ("person", "person", "car"), 1.0)
    merged = merge_by_nms([part], iou_threshold=0.5)
    assert sorted(merged.class_names) == ["car", "person"]
    assert merged.confidence.max() == pytest.approx(0.9)


def people(boxes: list[list[float]], confidence: list[float]) -> ImageDetections:
    return ImageDetections(np.array(boxes, dtype=float), np.array(confidence), np.zeros(len(boxes), dtype=int),
                           ("person",) * len(boxes), 1.0)


def test_a_box_is_cut_where_it_meets_a_tile_edge_inside_the_frame_not_the_frame_edge():
    # Tile at (640, 0), 640 x 640, of a 1280 x 720 frame: its left and bottom edges lie inside the frame.
    boxes = np.array([[0, 100, 80, 300],  # on the left edge: cut
                      [300, 500, 380, 638],  # within 1 % of the bottom edge: cut
                      [560, 0, 640, 200],  # on the top and right edges, which are the frame's: whole
                      [200, 200, 280, 400]], dtype=float)  # clear of every edge
    np.testing.assert_array_equal(cut_by_tile(boxes, (640, 0), (640, 640), (1280, 720)), [True, True, False, False])


def test_the_part_of_a_person_a_tile_cut_off_is_the_same_person_as_the_whole_one():
    # A person 100 x 300 px whose lower half a tile ending at y = 460 cuts off: IoU 0.5 with the whole-frame box, which
    # NMS at 0.7 keeps; the whole box is kept even though the tile's part of it is more confident.
    whole = people([[500, 300, 600, 600]], [0.6])
    tile = people([[500, 300, 600, 458]], [0.9])
    merged = merge_by_nms([tile, whole], 0.7, cut=[np.array([True]), np.array([False])])
    np.testing.assert_array_equal(merged.xyxy, [[500, 300, 600, 600]])
    assert len(merge_by_nms([tile, whole], 0.7).xyxy) == 2  # what plain NMS made of it


def test_people_beside_a_cut_off_box_or_overlapping_in_one_pass_stay_apart():
    # The cut box lies mostly outside its neighbour's box (a third of it inside): two people.
    tile = people([[400, 300, 460, 458]], [0.9])
    whole = people([[440, 300, 540, 600]], [0.8])
    assert len(merge_by_nms([tile, whole], 0.7, cut=[np.array([True]), np.array([False])]).xyxy) == 2
    # Two cut boxes of one tile, one mostly inside the other (a child in front of an adult): the model's own NMS
    # already kept both, so the tile's boxes are never merged by cover with each other.
    tile = people([[400, 200, 500, 458], [420, 330, 470, 458]], [0.9, 0.8])
    assert len(merge_by_nms([tile], 0.7, cut=[np.array([True, True])]).xyxy) == 2


@pytest.mark.slow
@pytest.mark.parametrize("tile_size", [320, 512, 640])
def test_tiling_keeps_one_box_per_person_on_a_real_photo(detector, tile_size):
    """ultralytics' bus.jpg (810 x 1080): four people, close up, each cut by one or more tile edges. Measured 4
    person boxes at each tile size, and 9, 13 and 19 at 640, 512 and 320 px when the tiles' parts of people were
    merged by IoU alone."""
    import cv2
    from ultralytics.utils import ASSETS

    image = cv2.imread(str(ASSETS / "bus.jpg"))
    tiled = TiledDetector(detector, tile_size=tile_size, overlap=0.2, iou=0.7).detect([image])[0]
    assert ((tiled.class_id == 0) & (tiled.confidence >= 0.25)).sum() in (4, 5)


@pytest.mark.slow
def test_tiling_finds_more_people_on_a_crowded_frame(detector):
    # A 3x3 mosaic of campus frames: 9 scenes of pedestrians, each person a third of their usual size at 640.
    frames = video_frames(VTEST, 9, step=40)
    mosaic = np.vstack([np.hstack(frames[row * 3:row * 3 + 3]) for row in range(3)])
    whole = detector.detect([mosaic])[0]
    tiled = TiledDetector(detector, tile_size=640, overlap=0.2).detect([mosaic])[0]
    people_whole = int((whole.class_id == 0).sum())
    people_tiled = int((tiled.class_id == 0).sum())
    # Measured 39 whole / 61 tiled with the locked dependencies, 42 / 61 with newer opencv/openvino patch releases:
    # the gain (45-56 %) is asserted at half that, 25 %, and the whole-frame count at about 60 % of what was found.
    assert people_whole >= 25, people_whole
    assert people_tiled >= people_whole * 1.25, (people_whole, people_tiled)


@pytest.mark.slow
def test_openvino_and_onnx_backends_agree_on_bus_jpg(detector):
    import cv2
    from ultralytics.utils import ASSETS

    image = cv2.imread(str(ASSETS / "bus.jpg"))
    onnx = YoloDetector(str(ONNX_MODEL))
    results = {name: model.detect([image])[0] for name, model in (("openvino", detector), ("onnx", onnx))}
    for result in results.values():  # measured 4 people and the 1 bus in both; bus.jpg shows 4 people and a bus
        assert (result.class_id == 0).sum() >= 3 and (result.class_id == 5).sum() == 1

    def iou(a, b):
        x1, y1 = np.maximum(a[:2], b[:2])
        x2, y2 = np.minimum(a[2:], b[2:])
        inter = max(0, x2 - x1) * max(0, y2 - y1)
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    ov, ox = results["openvino"], results["onnx"]
    for cls in (0, 5):
        for box in ov.xyxy[(ov.class_id == cls) & (ov.confidence > 0.5)]:
            best = max(iou(box, other) for other in ox.xyxy[ox.class_id == cls])
            # Measured 0.91-0.98 for each confident box; 0.7 still means "the same object".
            assert best > 0.7, f"class {cls} box {box} has no counterpart in the ONNX output"


@pytest.mark.slow
@pytest.mark.parametrize("hint", ["LATENCY", "THROUGHPUT"])
def test_native_openvino_backend_matches_ultralytics_on_the_same_model(detector, hint):
    import cv2
    from ultralytics.utils import ASSETS

    from processors.inference.backends.openvino import OpenVinoDetector
    from tests.conftest import OFFLINE_MODEL

    images = [cv2.imread(str(ASSETS / "bus.jpg"))] + video_frames(VTEST, 3)
    native = OpenVinoDetector(str(OFFLINE_MODEL), performance_hint=hint).detect(images)
    for ours, theirs in zip(native, detector.detect(images), strict=True):
        assert sorted(ours.class_names) == sorted(theirs.class_names)
        order_ours, order_theirs = np.lexsort(ours.xyxy.T), np.lexsort(theirs.xyxy.T)
        assert np.allclose(ours.xyxy[order_ours], theirs.xyxy[order_theirs], atol=2.0)


def test_per_class_thresholds_override_the_default():
    from processors.inference.detector import keep_confident

    result = ImageDetections(np.zeros((4, 4)), np.array([0.3, 0.6, 0.3, 0.15]), np.array([0, 0, 2, 2]),
                             ("person", "person", "car", "car"), 1.0)
    kept = keep_confident(result, default=0.25, per_class={0: 0.5, 2: 0.1})
    assert kept.class_names == ("person", "car", "car") and kept.confidence.tolist() == [0.6, 0.3, 0.15]
    assert keep_confident(result, 0.25, {}) is result


def test_a_message_keeps_the_most_confident_max_objects_in_their_order():
    count = MAX_OBJECTS + 3
    confidence = np.full(count, 0.5)
    confidence[[1, 5, 9]] = 0.1  # the three left out
    boxes = np.column_stack([np.arange(count), np.zeros(count), np.arange(count) + 1, np.ones(count)])
    result = ImageDetections(boxes, confidence, np.zeros(count, dtype=int), ("person",) * count, 1.0)
    frame = Frame(camera_id="cam", seq=1, captured_at=1.0, width=4000, height=10, jpeg=b"\xff\xd8")
    message = to_message(frame, result, "yolo11n")
    kept = [box[0] for box in message.xyxy]
    assert len(message) == MAX_OBJECTS and min(message.confidence) == 0.5
    assert kept == sorted(set(range(count)) - {1, 5, 9})


def test_weights_given_as_an_asset_name_load_that_asset(monkeypatch):
    monkeypatch.delenv("YOLO_OFFLINE", raising=False)
    config = Config.model_validate({"model": {"weights": f"asset:{OFFLINE_MODEL.name}", "offline_weights": None}})
    assert resolve_weights(config) == str(OFFLINE_MODEL)

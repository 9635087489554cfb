"""The JPEG-in path used by the GPU backend, exercised on the CPU (torchvision decodes on either device)."""
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from processors.inference.backends.gpu_nvjpeg import GpuJpegDetector, batched_nms, boxes_in_frames, letterbox_gpu
from processors.inference.stage import CameraDetectors, InferenceWorker, decode_frame
from processors.inference.static_blobs import StaticBlobPool
from schemas import Frame, SchemaError, encode
from schemas.settings.config import parse_config
from tests.conftest import VTEST, video_frames


@pytest.fixture(scope="module")
def cpu_jpeg_detector():
    # Random weights from the architecture yaml: the path is under test, not the accuracy.
    return GpuJpegDetector("yolo11n.yaml", device="cpu", half=False)


def frame(seq: int, jpeg: bytes) -> Frame:
    return Frame(camera_id="cam", seq=seq, captured_at=1e9 + seq, width=768, height=576, jpeg=jpeg)


def test_letterbox_matches_ultralytics_cpu_letterbox():
    import torch
    from ultralytics.data.augment import LetterBox

    image = video_frames(VTEST, 1)[0]
    expected = LetterBox((640, 640), auto=False)(image=image)[..., ::-1].astype(np.float32) / 255
    boxed, [(scale, left, top)] = letterbox_gpu([torch.from_numpy(image[..., ::-1].copy()).permute(2, 0, 1)], 640)
    assert np.abs(boxed[0].permute(1, 2, 0).numpy() - expected).mean() < 0.002
    assert scale == pytest.approx(640 / 768) and left == 0 and top == 80


def test_stage_skips_cpu_decode_but_still_rejects_non_jpeg(cpu_jpeg_detector):
    jpeg = cv2.imencode(".jpg", video_frames(VTEST, 1)[0])[1].tobytes()
    detectors = CameraDetectors(cpu_jpeg_detector)
    assert not detectors.needs_image("cam")
    assert decode_frame(encode(frame(1, jpeg)), decode_image=False).image is None
    with pytest.raises(SchemaError, match="start-of-image marker"):
        decode_frame(encode(frame(2, b"plain text")), decode_image=False)


def test_one_corrupt_jpeg_does_not_fail_the_batch(cpu_jpeg_detector):
    jpeg = cv2.imencode(".jpg", video_frames(VTEST, 1)[0])[1].tobytes()
    corrupt = bytearray(jpeg)  # whole, with its size in its header, but no decoder takes it:
    corrupt[jpeg.find(b"\xff\xc0") + 11] = 0  # the first component's sampling factors, 0 (bogus)
    corrupt = bytes(corrupt)
    detectors = CameraDetectors(cpu_jpeg_detector)
    frames = [decode_frame(encode(frame(i, data)), decode_image=False) for i, data in enumerate([jpeg, corrupt, jpeg])]
    outcomes = detectors.detect(frames)
    assert isinstance(outcomes[1], str) and "could not be decoded" in outcomes[1]
    assert all(isinstance(o, tuple) for o in (outcomes[0], outcomes[2]))


def test_a_traffic_cameras_frames_are_still_decoded_for_its_background_model(cpu_jpeg_detector):
    config = parse_config({"site": "t", "cameras": [{"id": "road", "source": "0"}, {"id": "cam", "source": "1"}],
                           "model": {"max_frame_age_s": 3600}}, Path("."))
    stage = InferenceWorker(config, None, None, CameraDetectors(cpu_jpeg_detector), "group",
                            static_blobs=StaticBlobPool({"road"}))
    jpeg = cv2.imencode(".jpg", video_frames(VTEST, 1)[0])[1].tobytes()
    records = [SimpleNamespace(topic="frames", partition=0, offset=seq, key=camera.encode(), value=encode(Frame(
        camera_id=camera, seq=1, captured_at=time.time(), width=768, height=576, jpeg=jpeg)))
        for seq, camera in enumerate(("road", "cam"))]
    (road, _), (other, _) = stage.decode_part(stage.read_batch(records))
    assert road.image is not None  # the background model (stopped vehicles, obstacles) sees every frame
    assert other.image is None
    assert all(isinstance(outcome, tuple) for outcome in stage.detectors.detect([road, other]))  # one mixed batch


@pytest.mark.parametrize("size", [(2, 3000), (3000, 2)])
def test_a_thin_frame_is_letterboxed_as_ultralytics_does_and_detected_on_either_path(cpu_jpeg_detector, size):
    import torch
    from ultralytics.data.augment import LetterBox

    image = np.full((*size, 3), 90, np.uint8)
    expected = LetterBox((640, 640), auto=False)(image=image)[..., ::-1].astype(np.float32) / 255
    boxed, _ = letterbox_gpu([torch.from_numpy(image[..., ::-1].copy()).permute(2, 0, 1)], 640)
    assert np.abs(boxed[0].permute(1, 2, 0).numpy() - expected).max() < 0.01
    # A tiled camera's frames reach the model as pixels: a frame the letterbox refused stopped the worker, and the
    # batch came back to stop it again. Through the JPEG path it was dead-lettered as undecodable.
    config = parse_config({"site": "t", "cameras": [{"id": "cam", "source": "0"}, {"id": "wide", "source": "1"}],
                           "model": {"max_frame_age_s": 3600}}, Path("."))
    detectors = CameraDetectors(cpu_jpeg_detector, tiled=cpu_jpeg_detector, tiled_cameras=frozenset({"wide"}))
    stage = InferenceWorker(config, None, None, detectors, "group")
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    records = [SimpleNamespace(topic="frames", partition=0, offset=seq, key=camera.encode(), value=encode(Frame(
        camera_id=camera, seq=1, captured_at=time.time(), width=size[1], height=size[0], jpeg=jpeg)))
        for seq, camera in enumerate(("cam", "wide"))]
    decoded = [item for item, _ in stage.decode_part(stage.read_batch(records))]
    assert decoded[0].image is None and decoded[1].image is not None
    assert all(isinstance(outcome, tuple) for outcome in detectors.detect(decoded))


def test_boxes_are_mapped_back_into_each_frames_pixels_and_clamped_to_it():
    import torch

    images = [torch.zeros((3, 720, 1280), dtype=torch.uint8), torch.zeros((3, 576, 768), dtype=torch.uint8),
              torch.zeros((3, 720, 1280), dtype=torch.uint8)]
    _, geometry = letterbox_gpu(images, 640)
    assert geometry[0] == (0.5, 0, 140) and geometry[1] == (640 / 768, 0, 80) and geometry[2] == geometry[0]
    rows = torch.tensor([[10.0, 150.0, 110.0, 250.0, 0.9, 2.0], [600.0, 480.0, 660.0, 520.0, 0.5, 0.0],
                         [0.0, 80.0, 64.0, 560.0, 0.7, 7.0]])
    mapped = boxes_in_frames(rows, torch.tensor([0, 0, 2]), geometry, [tuple(image.shape[1:]) for image in images])
    (xyxy, confidence, class_id), (empty, _, _), (third, _, third_class) = mapped
    np.testing.assert_allclose(xyxy, [[20, 20, 220, 220], [1200, 680, 1280, 720]])  # the second one clamped
    np.testing.assert_allclose(confidence, [0.9, 0.5])
    np.testing.assert_array_equal(class_id, [2, 0])
    assert empty.shape == (0, 4)
    np.testing.assert_allclose(third, [[0, 0, 128, 720]])
    np.testing.assert_array_equal(third_class, [7])


def test_frames_letterboxed_together_come_out_as_each_one_alone():
    import torch

    generator = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, size, dtype=torch.uint8, generator=generator)
              for size in [(3, 720, 1280), (3, 576, 768)] * 10 + [(3, 720, 1280)]]  # groups beyond one kernel's
    batch, geometry = letterbox_gpu(images, 640)
    for index, image in enumerate(images):
        alone, [where] = letterbox_gpu([image], 640)
        assert torch.equal(batch[index], alone[0]) and geometry[index] == where


@pytest.mark.parametrize("classes", [None, [0, 2, 7]])
def test_batched_nms_keeps_what_ultralytics_keeps_image_by_image(classes):
    import torch
    from ultralytics.utils.nms import non_max_suppression

    generator = torch.Generator().manual_seed(1)
    batch, anchors, classes_in_model = 6, 2000, 80
    centres = torch.rand((batch, 2, anchors), generator=generator) * 640
    sizes = 8 + torch.rand((batch, 2, anchors), generator=generator) * 120
    scores = torch.rand((batch, classes_in_model, anchors), generator=generator) ** 8  # few above the threshold
    scores[3] = 0  # an image with nothing in it
    predictions = torch.cat([centres, sizes, scores], dim=1)
    rows, image_index = batched_nms(predictions, 0.25, 0.7, classes, max_det=40)
    expected = non_max_suppression(predictions, 0.25, 0.7, classes=classes, max_det=40)
    assert len(rows) == sum(len(kept) for kept in expected) > 100
    for index, kept in enumerate(expected):
        ours = rows[image_index == index]
        assert torch.all(ours[1:, 4] <= ours[:-1, 4])  # by falling confidence
        # Equal confidences may come in either order: compare the rows sorted on every column.
        torch.testing.assert_close(*(torch.tensor(sorted(r.tolist())) for r in (ours, kept)))
    assert len(expected[3]) == 0 and max(len(kept) for kept in expected) == 40  # the per-image cap was reached


def test_batched_nms_keeps_small_close_boxes_of_images_late_in_a_big_batch_as_ultralytics_does():
    """One NMS call over the batch shifts each image's boxes far apart; shifted in float32, coordinates late in a
    64-image batch rounded to a quarter pixel and changed which of several close candidates for one person survived."""
    import torch
    from ultralytics.utils.nms import non_max_suppression

    generator = torch.Generator().manual_seed(2)
    batch, people, candidates_per_person = 64, 3, 5
    anchors = people * candidates_per_person
    centres = (torch.rand((batch, 2, people), generator=generator) * 600 + 20).repeat_interleave(
        candidates_per_person, dim=2) + torch.randn((batch, 2, anchors), generator=generator) * 1.5
    sizes = 8 + torch.rand((batch, 2, anchors), generator=generator) * 16
    scores = torch.zeros((batch, 80, anchors))
    scores[:, 0] = 0.26 + torch.rand((batch, anchors), generator=generator) * 0.7  # people only
    predictions = torch.cat([centres, sizes, scores], dim=1)
    rows, image_index = batched_nms(predictions, 0.25, 0.7)
    for index, kept in enumerate(non_max_suppression(predictions, 0.25, 0.7)):
        torch.testing.assert_close(rows[image_index == index], kept)


def test_batches_over_half_the_captured_size_replay_the_graph_and_smaller_ones_run_eagerly(cpu_jpeg_detector):
    """The routing of GpuJpegDetector.forward, with a stand-in for the CUDA graph (which needs a GPU): chunks of the
    captured size, each replayed when more than half full, else run eagerly; outputs in input order."""
    import torch

    class StandIn:
        capacity = 4

        def __init__(self):
            self.replayed = []

        def __call__(self, batch):
            self.replayed.append(len(batch))
            return cpu_jpeg_detector.model(batch)[0]

    generator = torch.Generator().manual_seed(3)
    batch = torch.rand((10, 3, 64, 64), generator=generator)
    eager = cpu_jpeg_detector.forward(batch)
    stand_in = StandIn()
    cpu_jpeg_detector.captured = stand_in
    try:
        routed = cpu_jpeg_detector.forward(batch)
        cpu_jpeg_detector.forward(batch[:3])
        cpu_jpeg_detector.forward(batch[:2])
    finally:
        cpu_jpeg_detector.captured = None
    assert stand_in.replayed == [4, 4, 3]  # 10 = 4 + 4 + 2 (eager); 3 of 4 replayed; 2 of 4 eager
    torch.testing.assert_close(routed, eager)

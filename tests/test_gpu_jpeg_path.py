"""The JPEG-in path used by the GPU backend, exercised on the CPU (torchvision decodes on either device)."""
import cv2
import numpy as np
import pytest

from processors.inference.backends.gpu_nvjpeg import GpuJpegDetector, letterbox_gpu
from processors.inference.stage import CameraDetectors, decode_frame
from schemas import Frame, SchemaError, encode
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
    corrupt = jpeg[:200] + b"\x00" * 500 + b"\xff\xd9"  # valid markers, broken body
    detectors = CameraDetectors(cpu_jpeg_detector)
    frames = [decode_frame(encode(frame(i, data)), decode_image=False) for i, data in enumerate([jpeg, corrupt, jpeg])]
    outcomes = detectors.detect(frames)
    assert isinstance(outcomes[1], str) and "could not be decoded" in outcomes[1]
    assert all(isinstance(o, tuple) for o in (outcomes[0], outcomes[2]))

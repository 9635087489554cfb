"""Frames are checked from their JPEG header before anything decodes them: bombs, lies and other formats refused."""
import cv2
import numpy as np
import pytest

from processors.inference.jpeg_header import MAX_FRAME_PIXELS, jpeg_dimensions, verify_frame_jpeg
from schemas import SchemaError


def jpeg(width: int = 64, height: int = 48, **params) -> bytes:
    flags = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if params.get("progressive") else []
    return cv2.imencode(".jpg", np.full((height, width, 3), 90, np.uint8), flags)[1].tobytes()


def declaring(data: bytes, width: int, height: int) -> bytes:
    """The same bytes with the frame header rewritten to declare another size (what a decompression bomb is)."""
    start = next(index for index in range(2, len(data) - 1) if data[index] == 0xFF and data[index + 1] in (0xC0, 0xC2))
    return (data[:start + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + data[start + 9:])


@pytest.mark.parametrize("progressive", [False, True])
def test_the_size_is_read_from_the_header(progressive):
    assert jpeg_dimensions(jpeg(64, 48, progressive=progressive)) == (64, 48)
    verify_frame_jpeg(jpeg(64, 48), 64, 48)


def test_a_small_jpeg_declaring_30000_by_30000_is_refused_without_decoding():
    bomb = declaring(jpeg(16, 16), 30000, 30000)
    assert len(bomb) < 1000 and jpeg_dimensions(bomb) == (30000, 30000)
    with pytest.raises(SchemaError, match="30000x30000 pixels, more than"):
        verify_frame_jpeg(bomb, 30000, 30000)


def test_a_jpeg_larger_than_its_frame_says_is_refused():
    with pytest.raises(SchemaError, match="declares 640x480, the frame says 64x48"):
        verify_frame_jpeg(declaring(jpeg(), 640, 480), 64, 48)
    assert 640 * 480 < MAX_FRAME_PIXELS


@pytest.mark.parametrize("data, reason", [
    (cv2.imencode(".png", np.zeros((48, 64, 3), np.uint8))[1].tobytes(), "no start-of-image marker"),
    (cv2.imencode(".bmp", np.zeros((48, 64, 3), np.uint8))[1].tobytes(), "no start-of-image marker"),
    (b"\xff\xd8\xff\xd9", "no frame header"),
    (b"\xff\xd8\xff\xda\x00\x08", "no frame header before its image data"),
    (b"\xff\xd8\xff\xe0\x00\x00", "impossible length 0"),
    (b"\xff\xd8\xff\xc0\x00\x11\x08\x00", "cut short"),
    (b"\xff\xd8\xff\xe0\x00\x10" + b"\x00" * 14 + b"\x12\x34\x56\x78", "no marker at byte 20"),
    (b"", "no start-of-image marker"),
])
def test_other_formats_and_broken_headers_are_refused(data, reason):
    with pytest.raises(SchemaError, match=reason):
        verify_frame_jpeg(data, 64, 48)


@pytest.mark.parametrize("decode_image", [True, False], ids=["cpu-decode", "gpu-jpeg-path"])
def test_the_inference_stage_checks_before_either_decoder(decode_image):
    from processors.inference.stage import decode_frame
    from schemas import Frame, encode

    def frame(data: bytes, width: int = 64, height: int = 48) -> bytes:
        return encode(Frame(camera_id="cam", seq=1, captured_at=1e9, width=width, height=height, jpeg=data))

    assert decode_frame(frame(jpeg()), decode_image).frame.width == 64
    with pytest.raises(SchemaError, match="more than"):
        decode_frame(frame(declaring(jpeg(16, 16), 30000, 30000), 30000, 30000), decode_image)
    with pytest.raises(SchemaError, match="declares 64x48, the frame says 32x24"):
        decode_frame(frame(jpeg(), 32, 24), decode_image)
    with pytest.raises(SchemaError, match="not a JPEG"):
        decode_frame(frame(cv2.imencode(".png", np.zeros((48, 64, 3), np.uint8))[1].tobytes()), decode_image)

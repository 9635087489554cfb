"""Frames are checked from their JPEG header before anything decodes them: bombs, lies and other formats refused."""
import cv2
import numpy as np
import pytest

from processors.inference.jpeg_header import MAX_FRAME_PIXELS, jpeg_dimensions, jpeg_is_whole, verify_frame_jpeg
from schemas import SchemaError


def jpeg(width: int = 64, height: int = 48, **params) -> bytes:
    flags = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if params.get("progressive") else []
    pixels = (np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8) if params.get("noise")
              else np.full((height, width, 3), 90, np.uint8))
    return cv2.imencode(".jpg", pixels, flags)[1].tobytes()


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


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("after", [b"", b"\x00\x00", b"\n", b"CAMERA-TRAILER01"])
def test_a_jpeg_with_bytes_after_its_end_marker_is_whole(progressive, after):
    assert jpeg_is_whole(jpeg(progressive=progressive, noise=True) + after)


def test_a_trailer_that_looks_like_scan_data_is_still_after_the_end_marker():
    """A camera's binary block after the image may hold any bytes: here a start-of-scan marker and no end marker."""
    trailer = b"\xff\xda\x00\x08" + np.random.default_rng(1).integers(0, 256, 16384, dtype=np.uint8).tobytes()
    assert jpeg_is_whole(jpeg(noise=True) + trailer.replace(b"\xff\xd9", b"\xff\x00"))


def with_exif_thumbnail(data: bytes) -> bytes:
    """The JPEG with an APP1 (EXIF) segment holding a whole small JPEG, as cameras embed a thumbnail."""
    payload = b"Exif\x00\x00" + jpeg(16, 12, noise=True)
    return data[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + data[2:]


def test_a_jpeg_cut_after_its_exif_thumbnail_is_not_whole():
    data = with_exif_thumbnail(jpeg(noise=True))
    assert jpeg_is_whole(data) and jpeg_dimensions(data) == (64, 48)
    thumbnail_end = data.index(b"\xff\xd9") + 2
    for end in range(thumbnail_end, len(data) - 1):
        assert not jpeg_is_whole(data[:end]), end


@pytest.mark.parametrize("progressive", [False, True])
def test_a_jpeg_cut_anywhere_is_not_whole(progressive):
    """Cut in its headers, between two scans of a progressive one, or in a scan's data."""
    data = jpeg(progressive=progressive, noise=True)
    scans = [index for index in range(len(data) - 1) if data[index:index + 2] == b"\xff\xda"]
    for end in (scans[0] - 1, *scans[1:], scans[-1] + 40, len(data) // 2, len(data) - 2):
        assert not jpeg_is_whole(data[:end]), end


@pytest.mark.parametrize("decode_image", [True, False], ids=["cpu-decode", "gpu-jpeg-path"])
def test_the_inference_stage_takes_a_trailer_after_the_end_marker_and_refuses_a_cut_jpeg(decode_image):
    from processors.inference.stage import decode_frame
    from schemas import Frame, encode

    def frame(data: bytes) -> bytes:
        return encode(Frame(camera_id="cam", seq=1, captured_at=1e9, width=64, height=48, jpeg=data))

    whole = jpeg(noise=True)
    assert decode_frame(frame(whole + b"CAMERA-TRAILER01"), decode_image).frame.width == 64
    with pytest.raises(SchemaError):
        decode_frame(frame(whole[:len(whole) // 2]), decode_image)

"""A frame's JPEG checked from its header, before any decoder sees it.

A decoder allocates what the header declares: 631 bytes declaring 30000x30000 pixels cost gigabytes to decode, and
OpenCV's (and the GPU's) decoder would as readily take a PNG or another format. So a frame is decoded only when its
bytes are a baseline/progressive JPEG whose frame header (SOF) declares exactly the width and height its Frame
message states, within MAX_FRAME_PIXELS.
"""
from __future__ import annotations

from schemas import SchemaError

MAX_FRAME_PIXELS = 7680 * 4320  # 8K UHD: the widest frame a camera may send (CameraConfig.max_width <= 7680)
# Start-of-frame markers carry the image size; C4 (Huffman tables), C8 (reserved) and CC (arithmetic coding
# conditioning) share the range but are not frame headers.
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RSTn carry no length


def jpeg_dimensions(data: bytes) -> tuple[int, int]:
    """(width, height) from the JPEG's frame header; raises SchemaError when the bytes are not such a JPEG."""
    if not data.startswith(b"\xff\xd8\xff"):
        raise SchemaError("jpeg field is not a JPEG image (no start-of-image marker)")
    index = 2
    while index + 4 <= len(data):
        if data[index] != 0xFF:
            raise SchemaError(f"jpeg field is not a JPEG image (no marker at byte {index})")
        marker = data[index + 1]
        if marker == 0xFF:  # fill byte before a marker
            index += 1
            continue
        if marker in STANDALONE_MARKERS:
            index += 2
            continue
        if marker in (0xD8, 0xD9, 0xDA):
            raise SchemaError("jpeg field has no frame header before its image data")
        length = int.from_bytes(data[index + 2:index + 4], "big")
        if length < 2:
            raise SchemaError(f"jpeg field has a segment of impossible length {length} at byte {index}")
        if marker in SOF_MARKERS:
            if index + 9 > len(data) or length < 8:
                raise SchemaError("jpeg field's frame header is cut short")
            height = int.from_bytes(data[index + 5:index + 7], "big")
            width = int.from_bytes(data[index + 7:index + 9], "big")
            return width, height
        index += 2 + length
    raise SchemaError("jpeg field has no frame header")


def verify_frame_jpeg(jpeg: bytes, width: int, height: int, max_pixels: int = MAX_FRAME_PIXELS) -> None:
    """Raises SchemaError unless the JPEG declares exactly width x height, at most max_pixels; decodes nothing."""
    declared_width, declared_height = jpeg_dimensions(jpeg)
    if declared_width * declared_height > max_pixels:
        raise SchemaError(f"jpeg declares {declared_width}x{declared_height} pixels, more than the "
                          f"{max_pixels} a frame may have")
    if (declared_width, declared_height) != (width, height):
        raise SchemaError(f"jpeg declares {declared_width}x{declared_height}, the frame says {width}x{height}")

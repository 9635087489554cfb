"""A frame's JPEG checked from its header, before any decoder sees it.

A decoder allocates what the header declares: 631 bytes declaring 30000x30000 pixels cost gigabytes to decode, and
OpenCV's (and the GPU's) decoder would as readily take a PNG or another format. So a frame is decoded only when its
bytes are a JPEG whose frame header (SOF, of any coding) declares exactly the width and height its Frame
message states, within MAX_FRAME_PIXELS.
"""
from __future__ import annotations

from collections.abc import Iterator

from schemas import SchemaError

MAX_FRAME_PIXELS = 7680 * 4320  # 8K UHD: the widest frame a camera may send (CameraConfig.max_width <= 7680)
# Start-of-frame markers carry the image size; C4 (Huffman tables), C8 (reserved) and CC (arithmetic coding
# conditioning) share the range but are not frame headers.
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RSTn carry no length
START_OF_IMAGE = b"\xff\xd8\xff"  # SOI, then the first marker's 0xFF
START_OF_SCAN = 0xDA  # its segment is followed by the image data, not by another segment
IMAGE_BOUNDARY_MARKERS = frozenset({0xD8, 0xD9})  # SOI and EOI: no length, and no segment of this image follows
END_OF_IMAGE = b"\xff\xd9"


def header_segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(marker, start, end) of each marker segment after the start-of-image marker, read by their lengths up to the
    first start-of-scan (whose end is where its image data begins), SOI or EOI, or the end of the bytes. Embedded
    data (an EXIF thumbnail is a whole JPEG inside APP1) is stepped over, never read as markers. Raises SchemaError
    when the bytes are not such a JPEG."""
    if not data.startswith(START_OF_IMAGE):
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
        if marker in IMAGE_BOUNDARY_MARKERS:
            yield marker, index, index + 2
            return
        length = int.from_bytes(data[index + 2:index + 4], "big")
        if length < 2:
            raise SchemaError(f"jpeg field has a segment of impossible length {length} at byte {index}")
        yield marker, index, index + 2 + length
        if marker == START_OF_SCAN:
            return
        index += 2 + length


def jpeg_is_whole(data: bytes) -> bool:
    """Whether the JPEG's image data runs to an end-of-image marker: one after its first start-of-scan marker, found
    by the header's segment lengths. OpenCV decodes a cut JPEG, whose writer stopped part way, without an error,
    greying what is missing. Scan data cannot hold the marker (a 0xFF there is followed by 0x00 or a restart
    number), so in a whole JPEG the last one found from the end is its own, at the end or before a trailer (padding,
    a camera's block), which is allowed; a trailer that holds the marker itself makes a cut JPEG pass, and the
    decoder is left to judge it."""
    try:
        scan = next((end for marker, _, end in header_segments(data) if marker == START_OF_SCAN), None)
    except SchemaError:
        return False
    return scan is not None and data.rfind(END_OF_IMAGE, scan) >= 0


def jpeg_dimensions(data: bytes) -> tuple[int, int]:
    """(width, height) from the JPEG's frame header; raises SchemaError when the bytes are not such a JPEG."""
    for marker, start, end in header_segments(data):
        if marker in IMAGE_BOUNDARY_MARKERS or marker == START_OF_SCAN:
            raise SchemaError("jpeg field has no frame header before its image data")
        if marker in SOF_MARKERS:
            if start + 9 > len(data) or end - start - 2 < 8:
                raise SchemaError("jpeg field's frame header is cut short")
            height = int.from_bytes(data[start + 5:start + 7], "big")
            width = int.from_bytes(data[start + 7:start + 9], "big")
            return width, height
    raise SchemaError("jpeg field has no frame header")


def verify_frame_jpeg(jpeg: bytes, width: int, height: int, max_pixels: int = MAX_FRAME_PIXELS) -> None:
    """Raises SchemaError unless the JPEG declares exactly width x height, at most max_pixels; decodes nothing."""
    declared_width, declared_height = jpeg_dimensions(jpeg)
    if declared_width * declared_height > max_pixels:
        raise SchemaError(f"jpeg declares {declared_width}x{declared_height} pixels, more than the "
                          f"{max_pixels} a frame may have")
    if (declared_width, declared_height) != (width, height):
        raise SchemaError(f"jpeg declares {declared_width}x{declared_height}, the frame says {width}x{height}")

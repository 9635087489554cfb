"""Frames as video decoders produce them and JPEG stores them: YCbCr 4:2:0 planes. A decoded frame goes to the JPEG
encoder (libjpeg-turbo) without a round trip through BGR, and its luma plane is the grey picture the health checks
use. No Kafka, no decoding here.
"""
from __future__ import annotations

from dataclasses import dataclass

import av
import cv2
import numpy as np
import simplejpeg

# JPEG (JFIF) stores full-range BT.601 YCbCr. Most video is limited range (luma 16-235, chroma 16-240 around 128);
# stretching it is what FFmpeg's scaler does when it converts such frames to BGR, so colours match OpenCV's.
LUMA_SCALE = 255 / 219
CHROMA_SCALE = 255 / 224
PLANAR_420 = ("yuv420p", "yuvj420p")  # the layouts used as they are (full range: "yuvj" or the frame says so)
# How a picture is turned counterclockwise by a number of quarter turns.
QUARTER_TURNS = {1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_CLOCKWISE}


@dataclass(frozen=True)
class YuvPicture:
    """Full-range (JPEG) YCbCr 4:2:0: `y` is height x width, `u` (Cb) and `v` (Cr) are half size, rounded up."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray

    @property
    def width(self) -> int:
        return self.y.shape[1]

    @property
    def height(self) -> int:
        return self.y.shape[0]

    @classmethod
    def from_frame(cls, frame: av.VideoFrame) -> YuvPicture:
        """The decoder's planes, used in place when they are full range and upright; other layouts (4:2:2 webcams, NV12
        from hardware decoders) take one pass of FFmpeg's scaler first. A picture stored turned (a phone's portrait
        clip is stored sideways, with a display matrix saying how to turn it) is turned upright, as players show it."""
        full_range = frame.format.name.startswith("yuvj") or frame.color_range == av.video.reformatter.ColorRange.JPEG
        if frame.format.name not in PLANAR_420:
            frame = frame.reformat(format="yuvj420p" if full_range else "yuv420p")
        y, u, v = (np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, :plane.width]
                   for plane in frame.planes)
        if not full_range:
            y, u, v = (_affine(y, LUMA_SCALE, -16 * LUMA_SCALE), _affine(u, CHROMA_SCALE, 128 * (1 - CHROMA_SCALE)),
                       _affine(v, CHROMA_SCALE, 128 * (1 - CHROMA_SCALE)))
        # A display matrix with no angle in it (zeros, from a broken muxer) reads as INT_MIN, outside PyAV's -180..180:
        # OpenCV and players show such a picture as stored.
        rotation = frame.rotation
        return cls(y, u, v).turned(rotation if -180 <= rotation <= 180 else 0)

    @classmethod
    def from_bgr(cls, image: np.ndarray) -> YuvPicture:
        """An OpenCV BGR image (still-image cameras): OpenCV's YCrCb is JPEG's full-range BT.601."""
        ycrcb = cv2.cvtColor(image, cv2.COLOR_BGR2YCrCb)
        half = ((image.shape[1] + 1) // 2, (image.shape[0] + 1) // 2)
        return cls(np.ascontiguousarray(ycrcb[:, :, 0]),
                   cv2.resize(ycrcb[:, :, 2], half, interpolation=cv2.INTER_AREA),
                   cv2.resize(ycrcb[:, :, 1], half, interpolation=cv2.INTER_AREA))

    def turned(self, degrees: float) -> YuvPicture:
        """The picture turned counterclockwise by `degrees`, to the nearest quarter turn."""
        turn = QUARTER_TURNS.get(round(degrees / 90) % 4)
        if turn is None:
            return self
        return YuvPicture(cv2.rotate(self.y, turn), cv2.rotate(self.u, turn), cv2.rotate(self.v, turn))

    def scaled(self, width: int, height: int) -> YuvPicture:
        half = ((width + 1) // 2, (height + 1) // 2)
        return YuvPicture(cv2.resize(self.y, (width, height), interpolation=cv2.INTER_AREA),
                          cv2.resize(self.u, half, interpolation=cv2.INTER_AREA),
                          cv2.resize(self.v, half, interpolation=cv2.INTER_AREA))


def _affine(plane: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """scale * plane + offset, saturated to 0..255 in one pass (addWeighted with a zero second weight)."""
    return cv2.addWeighted(plane, scale, plane, 0.0, offset)


def encode_jpeg(picture: YuvPicture, max_width: int, quality: int) -> tuple[bytes, int, int]:
    """JPEG bytes and the encoded size; pictures wider than max_width are scaled down keeping the aspect ratio."""
    if picture.width > max_width:
        picture = picture.scaled(max_width, max(1, round(picture.height * max_width / picture.width)))
    jpeg = simplejpeg.encode_jpeg_yuv_planes(picture.y, picture.u, picture.v, quality=quality)
    return jpeg, picture.width, picture.height


def source_size_fields(picture: YuvPicture, encoded_width: int) -> dict[str, int]:
    """A Frame's source_width and source_height when the JPEG was scaled down from the picture, else nothing."""
    if encoded_width == picture.width:
        return {}
    return {"source_width": picture.width, "source_height": picture.height}

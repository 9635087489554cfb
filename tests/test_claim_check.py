"""Oversized frames travel as a frame-store reference; the inference stage resolves them transparently."""
import time

import cv2
import pytest

from processors.inference.stage import decode_frame
from producers.frame_store import LocalFrameStore
from schemas import Frame, SchemaError, encode
from tests.conftest import VTEST, video_frames


def test_inference_resolves_claim_check_frames_and_rejects_expired_ones(tmp_path):
    now = [time.time()]  # the store ages files by their modification time
    store = LocalFrameStore(tmp_path, ttl_s=60, clock=lambda: now[0])
    jpeg = cv2.imencode(".jpg", video_frames(VTEST, 1)[0])[1].tobytes()
    ref = store.put("cam", 7, jpeg)
    raw = encode(Frame(camera_id="cam", seq=7, captured_at=1e9, width=768, height=576, frame_ref=ref))
    decoded = decode_frame(raw, resolve_frame=store.resolve)
    assert decoded.frame.jpeg == jpeg and decoded.image.shape == (576, 768, 3)
    with pytest.raises(SchemaError, match="frame store"):
        decode_frame(raw)
    now[0] += 120
    store.expire()
    with pytest.raises(SchemaError, match=ref):
        decode_frame(raw, resolve_frame=store.resolve)

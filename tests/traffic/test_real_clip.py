"""Smoke test on real video: detector + per-camera tracker + traffic analyzer count the cars on car-detection.mp4.

Manual count (done by extracting frames with OpenCV to PNG contact sheets, every 8th frame and then every 3rd-4th
frame around each passage, with the line y=216 drawn in, and looking at them): four cars cross the middle of the
view. A white hatchback enters at the bottom about frame 60 and leaves at the top about frame 105 (northbound,
crosses y=216 about frame 76-79); a silver hatchback enters at the top about frame 184 and leaves at the bottom
left about frame 230 (southbound, crosses about frame 200-206); a red saloon enters at the bottom about frame 190
and leaves at the top about frame 236 (northbound, crosses about frame 214-218, passing the silver car side by
side); a white coupe enters at the top about frame 316 and leaves at the bottom about frame 348 (southbound,
crosses about frame 331-334). So: 2 northbound, 2 southbound, 4 in all, and no other vehicle in the clip.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from schemas.settings.config import load_config
from tests.conftest import CAR_CLIP, OFFLINE_MODEL

REPO = Path(__file__).resolve().parents[2]
MANUAL_COUNT = {"northbound": 2, "southbound": 2}
FRAME_STEP = 2  # every 2nd frame keeps the test fast; cars move < 1/4 of their length per sampled frame


@pytest.mark.slow
def test_real_clip_line_counts_match_manual_count():
    cv2 = pytest.importorskip("cv2")
    if not CAR_CLIP.exists() or not OFFLINE_MODEL.exists():
        pytest.skip("shared clip or offline model missing")
    from processors.analytics.traffic.analyzer import TrafficAnalyzer
    from processors.inference.backends.ultralytics import YoloDetector
    from processors.inference.tracking import CameraTracker
    from schemas import Detections
    from schemas.settings.config import TrackingConfig

    config = load_config(REPO / "configs" / "intersection-example.yaml")
    camera = config.cameras[0]
    detector = YoloDetector(str(OFFLINE_MODEL), classes=config.model.classes)
    tracker = CameraTracker(camera.id, camera.fps, TrackingConfig())
    analyzer = TrafficAnalyzer.restore(camera, config, None)

    capture = cv2.VideoCapture(str(CAR_CLIP))
    clip_fps = capture.get(cv2.CAP_PROP_FPS)
    index, seq, crossings, state = 0, 0, [], None
    while True:
        ok, image = capture.read()
        if not ok:
            break
        if index % FRAME_STEP == 0:
            found = detector.detect([image])[0]
            detections = Detections(
                camera_id=camera.id, seq=seq, captured_at=1_700_000_000 + index / clip_fps,
                image_width=image.shape[1], image_height=image.shape[0], model=detector.name,
                inference_ms=found.inference_ms, xyxy=[tuple(box) for box in found.xyxy.tolist()],
                confidence=found.confidence.tolist(), class_id=found.class_id.tolist(),
                class_name=list(found.class_names))
            # Restored from its JSON state every frame, as the analytics stage does.
            analyzer = TrafficAnalyzer.restore(camera, config, state)
            output = analyzer.update(tracker.update(detections))
            crossings.extend(output.line_counts)
            state = analyzer.state_bytes()
            seq += 1
        index += 1
    # Close the last window: a frame well after the clip ends flushes pending crossings and the count window.
    analyzer = TrafficAnalyzer.restore(camera, config, state)
    late = Detections(camera_id=camera.id, seq=seq, captured_at=1_700_000_000 + index / clip_fps + 120,
                      image_width=768, image_height=432, model=detector.name, inference_ms=0)
    crossings.extend(analyzer.update(late).line_counts)
    crossings.extend(analyzer.update(late.model_copy(update={"seq": seq + 1, "captured_at": late.captured_at + 120}))
                     .line_counts)

    counted = {"northbound": 0, "southbound": 0}
    for window in crossings:
        for direction, count in zip(window.direction, window.count, strict=True):
            counted[direction] += count
    print(f"\nreal clip: counted {counted}, manual {MANUAL_COUNT}, {seq} frames analysed")
    assert counted == MANUAL_COUNT

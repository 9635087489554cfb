import msgpack
import numpy as np
import pytest

from schemas import (
    DeadLetter,
    Detections,
    Event,
    EventState,
    Frame,
    FrameRef,
    RiskLevel,
    SchemaError,
    Severity,
    ZoneMetrics,
    decode,
    encode,
)


def detections(**overrides) -> Detections:
    fields = dict(camera_id="cam", seq=7, captured_at=1_700_000_000.5, image_width=640, image_height=480,
                  model="yolo11n", inference_ms=12.5, xyxy=[(10, 20, 30, 60), (100, 100, 140, 200)],
                  confidence=[0.9, 0.6], class_id=[0, 2], class_name=["person", "car"], track_id=[5, 6])
    fields.update(overrides)
    return Detections(**fields)


def test_frame_round_trip_keeps_jpeg_bytes_raw():
    jpeg = bytes(range(256)) * 40
    frame = Frame(camera_id="cam", seq=1, captured_at=1.5e9, width=64, height=48, jpeg=jpeg)
    raw = encode(frame)
    assert decode(raw, Frame) == frame
    # Raw binary, not base64: the message is barely larger than the image.
    assert len(raw) < len(jpeg) + 200


def test_every_message_carries_schema_name_and_version():
    body = msgpack.unpackb(encode(detections()))
    assert body["schema"] == "detections" and body["v"] == 1


@pytest.mark.parametrize("message", [
    detections(),
    ZoneMetrics(camera_id="cam", zone_id="z", window_start=0, window_end=10, frames=3, area_m2=20, people_mean=2,
                people_max=3, density_mean_per_m2=0.1, density_max_per_m2=0.15, risk_level=RiskLevel.NORMAL,
                risk_reason="calm", last_seq=9),
    Event(event_id="e1", type="stopped_vehicle", state=EventState.OPENED, severity=Severity.WARNING, camera_id="cam",
          started_at=1, updated_at=2, confidence=0.8, reason="stopped 40 s", evidence=FrameRef(camera_id="cam", seq=3),
          details={"seconds": 40.0}),
    DeadLetter(stage="inference", source_topic="t", partition=0, offset=5, key=b"k", reason="bad", original=b"\x00",
               at=1.0),
])
def test_round_trip(message):
    assert decode(encode(message), type(message)) == message


@pytest.mark.parametrize("raw, reason", [
    (b"\xc1garbage", "not a msgpack message"),
    (msgpack.packb([1, 2]), "is a list, expected a map"),
    (msgpack.packb({"schema": "frame", "v": 1}), "expected 'detections'"),
    (msgpack.packb({"schema": "detections", "v": 2}), "version 2 is not supported"),
    (None, "tombstone"),
])
def test_malformed_messages_are_rejected_with_a_reason(raw, reason):
    with pytest.raises(SchemaError, match=reason):
        decode(raw, Detections)


def test_field_errors_name_the_field():
    body = msgpack.unpackb(encode(detections()))
    body["image_width"] = -1
    with pytest.raises(SchemaError, match="field image_width"):
        decode(msgpack.packb(body), Detections)


def test_detection_columns_must_align():
    with pytest.raises(ValueError, match="confidence has 1 entries, xyxy has 2"):
        detections(confidence=[0.5])
    with pytest.raises(ValueError, match="track_id"):
        detections(track_id=[1])


def test_frame_needs_exactly_one_payload():
    with pytest.raises(ValueError, match="exactly one"):
        Frame(camera_id="c", seq=0, captured_at=1, width=1, height=1)
    with pytest.raises(ValueError, match="exactly one"):
        Frame(camera_id="c", seq=0, captured_at=1, width=1, height=1, jpeg=b"x", frame_ref="store://x")


def test_foot_points_are_box_bottom_centres():
    assert detections().foot_points().tolist() == [[20, 60], [120, 200]]


def test_density_map_round_trip_and_size_check():
    density = np.arange(6, dtype=np.float32).reshape(2, 3)
    message = detections(density_map=density.tobytes(), density_map_shape=(2, 3))
    assert np.array_equal(decode(encode(message), Detections).density(), density)
    with pytest.raises(ValueError, match="bytes"):
        detections(density_map=b"\x00" * 8, density_map_shape=(2, 3))


def test_risk_levels_are_ordered():
    ranks = [level.rank for level in RiskLevel]
    assert ranks == sorted(ranks) and RiskLevel.UNKNOWN.rank == -1 and RiskLevel.CRITICAL.rank == 4


@pytest.mark.parametrize("field, value", [("captured_at", float("inf")), ("xyxy", [(0, 0, float("nan"), 1)]),
                                          ("confidence", [float("nan")])])
def test_non_finite_numbers_are_rejected(field, value):
    body = msgpack.unpackb(encode(detections(xyxy=[(0, 0, 1, 1)], confidence=[0.5], class_id=[0], class_name=["p"],
                                             track_id=[1])))
    body[field] = value
    with pytest.raises(SchemaError, match=f"field {field}"):
        decode(msgpack.packb(body), Detections)

import msgpack
import numpy as np
import pytest

from schemas import (
    Alert,
    CameraState,
    CameraStatus,
    DeadLetter,
    DensityForecast,
    Detections,
    Event,
    EventState,
    Frame,
    FrameRef,
    LineCounts,
    PictureFault,
    RiskLevel,
    SchemaError,
    Severity,
    StaticBlob,
    ZoneMetrics,
    decode,
    encode,
)
from schemas.base import RUNS_KEPT, frame_seen, with_frame
from schemas.detections import MAX_OBJECTS


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


@pytest.mark.parametrize("message", [
    Frame(camera_id="cam", seq=1, captured_at=1.5e9, width=64, height=48, jpeg=b"\xff\xd8\xff\xd9"), detections()])
def test_a_normal_picture_travels_as_before_the_picture_fault_field_and_a_frozen_one_says_so(message):
    # An older stage refuses fields it does not know: a message of a normal picture has none it did not know, and
    # one from an older stage, without the field, is of a normal picture.
    body = msgpack.unpackb(encode(message))
    assert "picture_fault" not in body and decode(encode(message), type(message)).picture_fault is None
    frozen = message.model_copy(update={"picture_fault": PictureFault.FROZEN})
    assert msgpack.unpackb(encode(frozen))["picture_fault"] == "frozen"
    assert decode(encode(frozen), type(message)) == frozen


def test_every_message_carries_schema_name_and_version():
    body = msgpack.unpackb(encode(detections()))
    assert body["schema"] == "detections" and body["v"] == 1


def test_a_zone_window_without_a_forecast_travels_without_the_rise_it_stands_on():
    # A sink not yet upgraded refuses fields it does not know: a window with no rise borne out carries no new field.
    window = ZoneMetrics(camera_id="cam", zone_id="z", window_start=0, window_end=10, frames=3, area_m2=20,
                         people_mean=2, people_max=3, density_mean_per_m2=0.1, density_max_per_m2=0.15,
                         risk_level=RiskLevel.NORMAL, risk_reason="calm", last_seq=9)
    assert "rise_over_s" not in msgpack.unpackb(encode(window)) and decode(encode(window), ZoneMetrics) == window
    rising = window.model_copy(update={"rise_over_s": 300.0})
    assert decode(encode(rising), ZoneMetrics).rise_over_s == 300.0


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
    (b"\x91" * 100_000 + b"\x00", r"^not a msgpack message: StackError \(nested too deep\)$"),
    (msgpack.packb([1, 2]), "is a list, expected a map"),
    (msgpack.packb({"schema": "frame", "v": 1}), "expected 'detections'"),
    (msgpack.packb({"schema": "detections", "v": 2}), "version 2 is not supported"),
    (None, "tombstone"),
])
def test_malformed_messages_are_rejected_with_a_reason(raw, reason):
    with pytest.raises(SchemaError, match=reason):
        decode(raw, Detections)


def test_ids_that_would_not_fit_a_key_a_column_a_header_or_a_url_are_rejected():
    event = msgpack.unpackb(encode(Event(
        event_id="e1", type="stopped_vehicle", state=EventState.OPENED, severity=Severity.WARNING, camera_id="cam",
        started_at=1, updated_at=2, confidence=0.8, reason="r", evidence=FrameRef(camera_id="cam", seq=3))))
    # ".." and "." would also be resolved away by a browser in the console's incident URLs
    for field, value in (("camera_id", "c" * 101), ("event_id", "e" * 201), ("event_id", "사고-1"),
                         ("event_id", ".."), ("event_id", "."), ("zone_id", "z" * 101)):
        with pytest.raises(SchemaError, match=field):
            decode(msgpack.packb({**event, field: value}), Event)
    frame = msgpack.packb({"schema": "frame", "v": 1, "camera_id": "c" * 101, "seq": 1, "captured_at": 1.0,
                           "width": 8, "height": 8, "jpeg": b"\xff\xd8"})
    with pytest.raises(SchemaError, match="camera_id"):
        decode(frame, Frame)


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


@pytest.mark.parametrize(("overrides", "field"), [
    ({"confidence": [0.9, 1.4]}, "confidence"),  # an analyzer would carry it into an event's confidence
    ({"confidence": [-0.2, 0.6]}, "confidence"),
    ({"class_id": [0, 2**63]}, "class_id"),  # beyond the int64 arrays the analyzers compare class ids in
    ({"class_id": [-1, 2]}, "class_id"),
    ({"seq": 2**63}, "seq"),
    # ahead of any producer's count by then: every later frame of the camera would look like a repeat
    ({"seq": 2**63 - 1, "captured_at": 1_800_000_000.0}, "seq .* is ahead of what any producer reaches"),
    ({"xyxy": [(30, 20, 10, 60), (100, 100, 140, 200)]}, "corners"),  # would stand on its top edge
    ({"xyxy": [(10, 60, 30, 20), (100, 100, 140, 200)]}, "corners"),
    ({"static_blobs": [{"xyxy": (50, 50, 40, 60), "static_since": 1.0, "fill_ratio": 0.5}]}, "corners"),
])
def test_detections_that_analyzers_would_misread_are_rejected(overrides, field):
    with pytest.raises(ValueError, match=field):
        detections(**overrides)


def test_a_frame_holds_at_most_max_objects():
    def boxes(count: int) -> Detections:
        return detections(xyxy=[(0, 0, 1, 1)] * count, confidence=[0.5] * count, class_id=[0] * count,
                          class_name=["person"] * count, track_id=None)

    assert len(boxes(MAX_OBJECTS)) == MAX_OBJECTS
    with pytest.raises(ValueError, match="xyxy"):
        boxes(MAX_OBJECTS + 1)


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


def one_of_each_schema() -> list:
    """A valid message of every schema, with every optional float field filled so each one gets checked."""
    return [
        Frame(camera_id="cam", seq=1, captured_at=1.7e9, width=64, height=48, jpeg=b"\xff\xd8"),
        detections(static_blobs=[StaticBlob(xyxy=(1, 2, 3, 4), static_since=1.6e9, fill_ratio=0.5)]),
        ZoneMetrics(camera_id="cam", zone_id="z", window_start=1.7e9, window_end=1.7e9 + 10, frames=3, area_m2=20,
                    people_mean=2, people_max=3, density_mean_per_m2=0.1, density_max_per_m2=0.15,
                    risk_level=RiskLevel.NORMAL, risk_reason="calm", last_seq=9, detector_people_mean=2.0,
                    density_model_people_mean=2.5, peak_local_density_per_m2=0.5, mean_speed_m_per_s=1.0,
                    velocity_variance_m2_per_s2=0.1, crowd_pressure_per_s2=0.05, net_accumulation_per_minute=1.5,
                    forecast=[DensityForecast(horizon_s=60, density_per_m2=1, lower_per_m2=0.5, upper_per_m2=2)],
                    seconds_to_threshold={"danger": 120.0}),
        Event(event_id="e1", type="wrong_way", state=EventState.RESOLVED, severity=Severity.WARNING, camera_id="cam",
              started_at=1.7e9, updated_at=1.7e9 + 1, ended_at=1.7e9 + 2, confidence=0.8, reason="r",
              details={"seconds": 40.0}),
        Alert(alert_id="a", event_id="e1", severity=Severity.CRITICAL, camera_id="cam", title="t", message="m",
              created_at=1.7e9),
        CameraStatus(camera_id="cam", state=CameraState.UP, fps=10.0, reconnects=0, dropped_frames=0,
                     last_frame_age_s=0.1, at=1.7e9),
        DeadLetter(stage="inference", source_topic="t", partition=0, offset=5, key=None, reason="bad", original=None,
                   at=1.7e9),
        LineCounts(camera_id="cam", line_id="l", window_start=1.7e9, window_end=1.7e9 + 10, class_name=["car"],
                   direction=["in"], count=[1]),
    ]


def float_paths(value, path=()):
    """Where a decoded message body holds a float: (key, index, ...) paths into nested maps and lists."""
    if isinstance(value, float):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from float_paths(item, (*path, key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from float_paths(item, (*path, index))


def replaced(body, path, value):
    if not path:
        return value
    if isinstance(body, dict):
        return {**body, path[0]: replaced(body[path[0]], path[1:], value)}
    return [replaced(item, path[1:], value) if index == path[0] else item for index, item in enumerate(body)]


CASES = [(message, path) for message in one_of_each_schema()
         for path in float_paths(msgpack.unpackb(encode(message)))]


@pytest.mark.parametrize("message, path", CASES, ids=[f"{type(m).__name__}.{'.'.join(map(str, p))}" for m, p in CASES])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_every_float_of_every_schema_rejects_non_finite_values(message, path, bad):
    """Times included: a NaN started_at or window_end would pass every comparison and poison stores and levels."""
    body = replaced(msgpack.unpackb(encode(message)), path, bad)
    with pytest.raises(SchemaError, match=f"field {path[0]}"):
        decode(msgpack.packb(body), type(message))


def test_every_schema_has_its_times_checked():
    checked = {(type(message).__name__, path[0]) for message, path in CASES}
    for schema, time_field in [("Frame", "captured_at"), ("Detections", "captured_at"), ("ZoneMetrics", "window_end"),
                               ("ZoneMetrics", "window_start"), ("Event", "started_at"), ("Event", "updated_at"),
                               ("Event", "ended_at"), ("Alert", "created_at"), ("CameraStatus", "at"),
                               ("DeadLetter", "at"), ("LineCounts", "window_end")]:
        assert (schema, time_field) in checked


def test_a_producers_sequence_numbers_are_below_its_capture_times_in_microseconds():
    start = 1_800_000_000.0
    assert detections(seq=int(start * 1_000_000) + 10**6, captured_at=start).seq  # a fast producer, clocks apart
    assert detections(seq=0, captured_at=1.0).seq == 0  # a replay's own count
    with pytest.raises(ValueError, match="seq"):
        Frame(camera_id="c", seq=int((start + 2 * 86_400) * 1_000_000), captured_at=start, width=8, height=8,
              jpeg=b"x")


def applied(numbers, runs=()):
    """The frame numbers taken as new, in order, and the runs after them."""
    runs, new = list(runs), []
    for seq in numbers:
        if not frame_seen(runs, seq):
            new.append(seq)
        runs = with_frame(runs, seq)
    return new, runs


def test_frames_sent_again_are_repeats_on_either_side_of_a_producer_restart():
    first, second = list(range(100, 110)), list(range(5_000_000, 5_000_010))  # restarted 5 s later
    new, _ = applied([*first, *second, *first[5:], *second[:5], 5_000_010])
    assert new == [*first, *second, 5_000_010]


def test_a_frame_numbered_far_ahead_is_a_run_of_one_that_the_frames_after_it_do_not_continue():
    new, runs = applied([1, 2, 3, 10**15, 4, 5, 10**15])
    assert new == [1, 2, 3, 10**15, 4, 5] and runs == [(1, 5), (10**15, 10**15)]


def test_a_producer_restarted_with_its_clock_set_back_numbers_up_into_its_earlier_run_as_new_frames():
    earlier, later = list(range(1000, 1010)), list(range(990, 1015))
    new, runs = applied([*earlier, *later])
    assert new == [*earlier, *later] and runs == [(990, 1014)]


def test_the_runs_stay_few_and_frames_sent_again_from_runs_no_longer_kept_cost_only_those():
    numbers = [restart * 1_000_000 + frame for restart in range(RUNS_KEPT + 8) for frame in range(5)]
    _, runs = applied(numbers)
    again, runs = applied(numbers, runs)
    assert len(runs) == RUNS_KEPT and len(again) <= 9 * 5  # the 8 runs let go, and one more at most
    assert with_frame([(100, 200)], 150) == [(100, 200)]  # a repeat adds no run

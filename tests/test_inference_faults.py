"""The inference stage's batch against faults outside the frames: a failing GPU, a broker that refuses or loses a
batch's detections, a rebalance; and a JPEG's EXIF orientation, which must not turn its pixels."""
from __future__ import annotations

import struct
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from kafka import TopicPartition
from kafka.errors import KafkaError, MessageSizeTooLargeError
from prometheus_client import REGISTRY

from infra.consume_loop import process_batch
from processors.inference.detector import ImageDetections
from processors.inference.stage import (
    MAX_DETECTIONS_BYTES,
    CameraDetectors,
    DecodedFrame,
    InferenceWorker,
    frame_image,
)
from schemas import DeadLetter, Detections, Frame, PictureFault, decode, encode
from schemas.settings.config import parse_config

ZONE = {"id": "z", "polygon": [[0, 0], [8, 0], [8, 8]], "area_m2": 10}
CONFIG = parse_config({"site": "t", "cameras": [{"id": "square", "source": "0", "zones": [ZONE]}],
                       "model": {"max_frame_age_s": 3600}}, Path("."))
TOPICS = CONFIG.broker.topics
BROKER_RECORD_LIMIT = 1_048_588  # Kafka's default max.message.bytes
JPEG = cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8))[1].tobytes()
CORRUPT = JPEG[:20] + b"\x00" * 100 + b"\xff\xd9"  # markers in place, body broken


def no_boxes() -> ImageDetections:
    return ImageDetections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), (), 1.0)


class NoBoxes:
    name = "stub"

    def detect(self, images):
        return [no_boxes() for _ in images]


class CountsRuns(NoBoxes):
    """NoBoxes that counts the pictures the model was run on."""

    def __init__(self):
        self.runs = 0

    def detect(self, images):
        self.runs += len(images)
        return super().detect(images)


class FailingGpu:
    """Stands in for the GPU detector: `fault` raised on every batch, or a decode error for a batch holding a JPEG
    the decoder cannot read."""

    name = "stub-gpu"

    def __init__(self, fault: Exception | None = None):
        self.fault = fault

    def detect_jpegs(self, jpegs):
        if self.fault is not None:
            raise self.fault
        if any(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR) is None for jpeg in jpegs):
            raise RuntimeError("nvjpeg: bitstream error")
        return [no_boxes() for _ in jpegs]


class MapOfShape:
    """Stands in for the density model: a faint uniform map of the given shape."""

    def __init__(self, shape: tuple[int, int]):
        self.shape, self.calls = shape, 0

    def can_map(self, height: int, width: int) -> bool:
        return True

    def density_maps(self, images, person_boxes):
        self.calls += len(images)
        return [np.full(self.shape, 1e-6, dtype=np.float32) for _ in images]


class Consumer:
    def __init__(self, partitions=(0,)):
        self.partitions = {TopicPartition(TOPICS.frames, p) for p in partitions}
        self.seeks, self.commits = [], 0

    def assignment(self):
        return self.partitions

    def seek(self, partition, offset):
        self.seeks.append((partition.partition, offset))

    def commit(self):
        self.commits += 1

    def bootstrap_connected(self):
        return True

    def highwater(self, partition):
        return 100 + partition.partition

    def position(self, partition, timeout_ms=None):
        return 90


class Broker:
    """A producer whose sends the broker refuses while `away`, and over its per-record limit always."""

    def __init__(self):
        self.away, self.sent = False, []

    def send(self, topic, key=None, value=None):
        refused = self.away or len(value) > BROKER_RECORD_LIMIT
        if not refused:
            self.sent.append((topic, value))

        def get(timeout=None):
            if refused:
                raise (KafkaError("broker away") if self.away else MessageSizeTooLargeError("record too large"))

        return SimpleNamespace(is_done=True, get=get)

    def flush(self, timeout=None):
        pass


def records(*captured_at: float, jpeg: bytes = JPEG) -> list:
    return [SimpleNamespace(topic=TOPICS.frames, partition=0, offset=40 + seq, key=b"square", value=encode(Frame(
        camera_id="square", seq=seq, captured_at=at, width=8, height=8, jpeg=jpeg)))
        for seq, at in enumerate(captured_at)]


def detections(broker: Broker) -> list[Detections]:
    return [decode(value, Detections) for topic, value in broker.sent if topic == TOPICS.detections]


def decoded(jpeg: bytes) -> DecodedFrame:
    return DecodedFrame(Frame(camera_id="square", seq=0, captured_at=time.time(), width=8, height=8, jpeg=jpeg), None)


@pytest.mark.parametrize("fault", [torch.OutOfMemoryError("CUDA out of memory"),
                                   torch.AcceleratorError("CUDA error: an illegal memory access was encountered")])
def test_a_gpu_fault_stops_the_batch_uncommitted_instead_of_dead_lettering_its_frames(fault):
    consumer, broker = Consumer(), Broker()
    stage = InferenceWorker(CONFIG, consumer, broker, CameraDetectors(FailingGpu(fault)), "group")
    with pytest.raises(type(fault)):
        process_batch(consumer, broker, records(time.time(), time.time()), stage.detect_batch)
    assert consumer.commits == 0 and broker.sent == []


@pytest.mark.parametrize("frames", [1, 2])
def test_frames_that_all_fail_alone_on_the_gpu_but_read_on_the_cpu_are_a_device_fault(frames):
    detectors = CameraDetectors(FailingGpu(RuntimeError("CUDA driver error: unknown error")))
    with pytest.raises(RuntimeError, match="unknown error"):
        detectors.detect([decoded(JPEG)] * frames)


class RefusesTheseJpegs:
    """A GPU decoder that refuses some JPEGs the CPU reads (arithmetic-coded or 12-bit ones) and reads the rest."""

    name = "picky"

    def __init__(self, refused: set[bytes]):
        self.refused = refused

    def detect_jpegs(self, jpegs):
        if any(jpeg in self.refused for jpeg in jpegs):
            raise RuntimeError("nvjpeg: unsupported jpeg")
        return [no_boxes() for _ in jpegs]


def test_a_batch_of_jpegs_only_the_cpu_reads_is_dead_lettered_not_taken_for_a_device_fault():
    other = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 50])[1].tobytes()
    detectors = CameraDetectors(RefusesTheseJpegs({JPEG, other}))
    outcomes = detectors.detect([decoded(JPEG), decoded(other)])
    assert all("could not be decoded on the GPU" in outcome for outcome in outcomes)


def test_corrupt_jpegs_are_still_found_one_by_one_even_when_the_whole_batch_is_corrupt():
    detectors = CameraDetectors(FailingGpu())
    good, bad, also_good = detectors.detect([decoded(JPEG), decoded(CORRUPT), decoded(JPEG)])
    assert isinstance(good, tuple) and isinstance(also_good, tuple) and "bitstream error" in bad
    assert all("could not be decoded" in outcome for outcome in detectors.detect([decoded(CORRUPT)] * 2))


class FailsOnDarkPictures(NoBoxes):
    """A model that takes decoded pictures and raises on a dark one, or on every picture once `broken`."""

    def __init__(self, broken: bool = False):
        self.broken = broken

    def detect(self, images):
        if self.broken or any(image.mean() < 64 for image in images):
            raise RuntimeError("model input rejected")
        return super().detect(images)


def test_a_picture_the_model_fails_on_is_dead_lettered_and_the_rest_of_its_batch_goes():
    dark = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    consumer, broker = Consumer(), Broker()
    stage = InferenceWorker(CONFIG, consumer, broker, CameraDetectors(FailsOnDarkPictures()), "group")
    batch = records(time.time(), time.time(), time.time())
    batch[1] = records(time.time(), time.time(), jpeg=dark)[1]
    assert process_batch(consumer, broker, batch, stage.detect_batch) is None
    assert [frame.seq for frame in detections(broker)] == [0, 2] and consumer.commits == 1
    [letter] = [decode(value, DeadLetter) for topic, value in broker.sent if topic == TOPICS.dead_letter]
    assert letter.offset == 41 and "model input rejected" in letter.reason


def test_a_model_that_fails_on_every_picture_stops_the_batch_uncommitted():
    consumer, broker = Consumer(), Broker()
    stage = InferenceWorker(CONFIG, consumer, broker, CameraDetectors(FailsOnDarkPictures(broken=True)), "group")
    with pytest.raises(RuntimeError, match="model input rejected"):
        process_batch(consumer, broker, records(time.time(), time.time()), stage.detect_batch)
    assert consumer.commits == 0 and broker.sent == []


def test_a_density_map_too_large_for_the_broker_is_left_off_and_the_frames_boxes_go():
    consumer, broker = Consumer(), Broker()
    stage = InferenceWorker(CONFIG, consumer, broker, CameraDetectors(NoBoxes()), "group",
                            density_counter=MapOfShape((600, 600)))  # 1.44 MB of float32
    left_out = {"camera": "square", "reason": "too_large"}
    before = REGISTRY.get_sample_value("cityguard_density_maps_left_out_total", left_out) or 0
    assert process_batch(consumer, broker, records(time.time()), stage.detect_batch) is None
    assert consumer.commits == 1 and consumer.seeks == []
    [sent] = detections(broker)
    assert sent.density_map is None and sent.camera_id == "square"
    assert REGISTRY.get_sample_value("cityguard_density_maps_left_out_total", left_out) == before + 1
    assert MAX_DETECTIONS_BYTES < BROKER_RECORD_LIMIT
    # No map reached the analytics: none is counted as fresh.
    assert REGISTRY.get_sample_value("cityguard_density_map_age_seconds", {"camera": "square"}) == float("inf")


class RefusesLargeDetections(Broker):
    """A producer whose client refuses, as it is sent, any detections message over `limit` bytes (kafka-python checks
    max_request_size before queuing)."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def send(self, topic, key=None, value=None):
        if topic == TOPICS.detections and len(value) > self.limit:
            raise MessageSizeTooLargeError("the message is larger than max_request_size")
        return super().send(topic, key=key, value=value)


def test_a_map_whose_frame_is_dead_lettered_counts_as_not_sent():
    """Its frame never reaches the analytics: the camera's map age must not read fresh, and the frames after it, which
    go out without a map until the camera is tried again, are counted as stale."""
    def stale() -> float:
        return REGISTRY.get_sample_value("cityguard_density_map_stale_frames_total", {"camera": "square"}) or 0

    consumer, broker, counter = Consumer(), RefusesLargeDetections(limit=100), MapOfShape((4, 4))
    stage = InferenceWorker(CONFIG, consumer, broker, CameraDetectors(NoBoxes()), "group", density_counter=counter)
    assert process_batch(consumer, broker, records(time.time()), stage.detect_batch) is None
    [(topic, value)] = broker.sent
    assert topic == TOPICS.dead_letter and "too large to send" in decode(value, DeadLetter).reason
    assert counter.calls == 1
    assert REGISTRY.get_sample_value("cityguard_density_map_age_seconds", {"camera": "square"}) == float("inf")
    broker.limit, before = BROKER_RECORD_LIMIT, stale()
    assert process_batch(consumer, broker, records(time.time()), stage.detect_batch) is None
    [sent] = detections(broker)
    assert sent.density_map is None and stale() == before + 1


@pytest.mark.parametrize("fault", list(PictureFault))
def test_a_frozen_or_blank_pictures_detections_say_so_and_get_no_density_map(fault):
    consumer, broker, counter = Consumer(), Broker(), MapOfShape((4, 4))
    stage = InferenceWorker(CONFIG, consumer, broker, CameraDetectors(NoBoxes()), "group", density_counter=counter)
    [record] = records(time.time())
    marked = SimpleNamespace(**{**vars(record), "value": encode(
        decode(record.value, Frame).model_copy(update={"picture_fault": fault}))})
    assert process_batch(consumer, broker, [marked], stage.detect_batch) is None
    [sent] = detections(broker)
    assert sent.picture_fault is fault and sent.density_map is None and counter.calls == 0


def test_a_frame_of_a_camera_not_in_the_configuration_or_not_under_its_key_is_a_dead_letter_without_a_model_run():
    model = CountsRuns()
    consumer, broker = Consumer(), Broker()
    stage = InferenceWorker(CONFIG, consumer, broker, CameraDetectors(model), "group")
    made_up = [SimpleNamespace(**{**vars(record), "key": f"ghost-{record.offset}".encode(),
                                  "value": encode(decode(record.value, Frame).model_copy(
                                      update={"camera_id": f"ghost-{record.offset}"}))})
               for record in records(time.time(), time.time())]
    # A configured camera's frame under another camera's key, or none (on any partition), would put its frames on two
    # workers' trackers.
    misplaced = SimpleNamespace(**{**vars(records(time.time())[0]), "key": b"gate", "offset": 7})
    unkeyed = SimpleNamespace(**{**vars(records(time.time())[0]), "key": None, "partition": 1, "offset": 8})
    batch = [*made_up, misplaced, unkeyed, *records(time.time())]
    assert process_batch(consumer, broker, batch, stage.detect_batch) is None
    letters = [decode(value, DeadLetter) for topic, value in broker.sent if topic == TOPICS.dead_letter]
    assert [letter.reason for letter in letters] == [
        "camera 'ghost-40' is not in the site configuration", "camera 'ghost-41' is not in the site configuration",
        "frame of camera 'square' under the key b'gate'", "frame of camera 'square' without a key (its camera id)"]
    assert [(letter.stage, letter.partition, letter.offset, letter.key) for letter in letters[2:]] == [
        ("inference", 0, 7, b"gate"), ("inference", 1, 8, None)]
    assert [sent.camera_id for sent in detections(broker)] == ["square"] and model.runs == 1


def test_a_rewound_batch_is_counted_once_and_its_frames_still_get_their_maps(monkeypatch):
    # The worker's clock moves only by the pause it waits out after a failed batch (`run` does): the map budget,
    # refilled by that clock, then does not depend on how fast this machine happens to run the test.
    clock = [1000.0]
    monkeypatch.setattr("processors.inference.stage.time.monotonic", lambda: clock[0])
    consumer, broker, counter = Consumer(), Broker(), MapOfShape((4, 4))
    stage = InferenceWorker(CONFIG, consumer, broker, CameraDetectors(NoBoxes()), "group", density_counter=counter)

    def consumed() -> float:
        return REGISTRY.get_sample_value("cityguard_frames_consumed_total", {"camera": "square"}) or 0

    def timed() -> float:
        return REGISTRY.get_sample_value("cityguard_inference_seconds_count") or 0

    before, timed_before = consumed(), timed()
    batch = records(time.time())
    broker.away = True
    assert stage.process(batch) == 0 and consumer.seeks == [(0, 40)]
    assert consumed() == before and timed() == timed_before  # nothing reached the broker
    clock[0] += 1.0
    broker.away = False
    assert stage.process(batch) == 1
    assert consumed() == before + 1 and timed() == timed_before + 1
    [sent] = detections(broker)
    assert sent.density_map is not None and counter.calls == 2  # the map the broker lost is made again
    # A batch that went out keeps its maps: a later one rewound before it made any (its only record a dead letter the
    # broker did not take) takes none of them back.
    broker.away = True
    stage.process([SimpleNamespace(topic=TOPICS.frames, partition=0, offset=41, key=b"square", value=b"not a frame")])
    broker.away = False
    stage.process(records(time.time() + 2))
    assert counter.calls == 2  # the camera's map is still fresh


def test_the_lag_of_a_partition_taken_away_by_a_rebalance_is_no_longer_exported():
    consumer = Consumer(partitions=(0, 1))
    stage = InferenceWorker(CONFIG, consumer, Broker(), CameraDetectors(NoBoxes()), "lag-group")

    def lag(partition: int) -> float | None:
        return REGISTRY.get_sample_value("cityguard_consumer_lag_messages",
                                         {"group": "lag-group", "topic": TOPICS.frames, "partition": str(partition)})

    stage.update_lag()
    assert (lag(0), lag(1)) == (10, 11)
    consumer.partitions = {TopicPartition(TOPICS.frames, 0)}
    stage.update_lag()
    assert (lag(0), lag(1)) == (10, None)


def test_the_frame_and_map_ages_of_a_camera_on_a_partition_taken_away_are_no_longer_exported():
    consumer = Consumer(partitions=(0, 1))
    stage = InferenceWorker(CONFIG, consumer, Broker(), CameraDetectors(NoBoxes()), "age-group",
                            density_counter=MapOfShape((4, 4)))

    def ages() -> tuple[float | None, float | None]:
        return tuple(REGISTRY.get_sample_value(name, {"camera": "square"}) for name in (
            "cityguard_inference_frame_age_seconds", "cityguard_density_map_age_seconds"))

    stage.process(records(time.time() - 8))  # a lagging worker: its last frame of the camera was 8 s old
    stage.update_lag()
    assert ages()[0] >= 8 and ages()[1] == 0.0
    consumer.highwater = lambda partition: None  # just reassigned: no fetch has given the partitions' ends yet
    stage.update_lag()
    assert ages()[0] >= 8 and ages()[1] == 0.0, "still owned: its ages stay"
    consumer.partitions = {TopicPartition(TOPICS.frames, 1)}  # partition 0 went to a new worker
    stage.update_lag()
    assert ages() == (None, None)


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """The JPEG with an APP1 Exif segment holding one tag, Orientation (0x0112), right after its start marker."""
    tiff = b"MM\x00\x2a" + struct.pack(">IH", 8, 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + bytes(4)
    body = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


def test_a_jpeg_with_an_exif_orientation_is_decoded_as_stored_like_the_gpu_does():
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, :40] = 255  # left half white
    jpeg = with_exif_orientation(cv2.imencode(".jpg", image)[1].tobytes(), 6)  # 6: rotate 90 degrees to display
    decoded_image = frame_image(Frame(camera_id="square", seq=0, captured_at=1.0, width=80, height=40,
                                      jpeg=jpeg)).image
    assert decoded_image.shape == (40, 80, 3)
    assert decoded_image[:, :30].mean() > 200 and decoded_image[:, 50:].mean() < 50

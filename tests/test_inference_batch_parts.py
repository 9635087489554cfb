"""A batch whose frames would decode to more than model.max_batch_decoded_bytes is detected in consecutive parts
within it, each part's images let go before the next is decoded, and every frame still gets its detections, in
order; a frame larger than the budget is detected alone, at its own size, and failing alone on the GPU it is told from
a failing device as a whole batch's frames are. The zone cameras' density maps of a batch in parts are bounded and kept
as those of a whole batch.

The memory held is what tracemalloc traces (numpy's and OpenCV's arrays), beside a margin for the rest."""
from __future__ import annotations

import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from kafka import TopicPartition

from infra.consume_loop import process_batch
from processors.inference.detector import ImageDetections
from processors.inference.stage import CameraDetectors, InferenceWorker
from schemas import DeadLetter, Detections, Frame, decode, encode
from schemas.settings.config import parse_config
from tests.crowd.test_inference_density import FixedCountDensity

BUDGET = 2**23  # three 1280x720 frames (2,764,800 bytes decoded each); a 2560x1440 one (11,059,200) is over it alone
CONFIG = parse_config({"site": "t", "cameras": [{"id": "cam", "source": "0"}],
                       "model": {"max_frame_age_s": 3600, "max_batch_decoded_bytes": BUDGET}}, Path("."))
TOPICS = CONFIG.broker.topics
SIZES = [(1280, 720)] * 3 + [(2560, 1440)] + [(1280, 720)] * 4  # (width, height) of frames 0..7
PARTS = [[0, 1, 2], [3], [4, 5, 6], [7]]
MARGIN = 2**20  # bytes: the JPEGs, messages and the detector's own


def decoded(size: tuple[int, int]) -> int:
    return size[0] * size[1] * 3


def no_boxes() -> ImageDetections:
    return ImageDetections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), (), 1.0)


class DecodedOnTheCpu:
    """A detector of decoded images that notes each batch's image sizes."""

    name = "cpu"

    def __init__(self):
        self.batches: list[list[tuple[int, int]]] = []

    def detect(self, images):
        self.batches.append([(image.shape[1], image.shape[0]) for image in images])
        return [no_boxes() for _ in images]


class DecodedOnTheGpu:
    """A detector that decodes the JPEGs itself (the GPU backend): the budget holds for what it decodes too."""

    name = "gpu"

    def __init__(self):
        self.batches: list[list[tuple[int, int]]] = []

    def detect_jpegs(self, jpegs):
        self.batches.append([tuple(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape[1::-1])
                             for jpeg in jpegs])
        return [no_boxes() for _ in jpegs]


class Consumer:
    def __init__(self):
        self.commits = 0

    def assignment(self):
        return {TopicPartition(TOPICS.frames, 0)}

    def seek(self, partition, offset):
        raise AssertionError("the batch went through: nothing to rewind")

    def commit(self):
        self.commits += 1


class Producer:
    def __init__(self):
        self.sent = []

    def send(self, topic, key=None, value=None):
        self.sent.append((topic, value))
        return SimpleNamespace(is_done=True, get=lambda timeout=None: None)

    def flush(self, timeout=None):
        pass


def records() -> list:
    start = time.time() - 10
    return [SimpleNamespace(topic=TOPICS.frames, partition=0, offset=seq, key=b"cam", value=encode(Frame(
        camera_id="cam", seq=seq, captured_at=start + seq / 5, width=width, height=height,
        jpeg=cv2.imencode(".jpg", np.full((height, width, 3), 30 * seq, np.uint8))[1].tobytes())))
        for seq, (width, height) in enumerate(SIZES)]


@pytest.mark.parametrize("detector", [DecodedOnTheCpu(), DecodedOnTheGpu()], ids=["cpu", "gpu"])
def test_a_batch_over_the_budget_is_detected_in_parts_within_it_and_every_frame_in_order(detector):
    consumer, producer = Consumer(), Producer()
    stage = InferenceWorker(CONFIG, consumer, producer, CameraDetectors(detector), "group")
    batch = records()
    tracemalloc.start()
    try:
        assert process_batch(consumer, producer, batch, stage.detect_batch) is None
        _, held = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert detector.batches == [[SIZES[seq] for seq in part] for part in PARTS]
    for part in detector.batches:
        assert len(part) == 1 or sum(map(decoded, part)) <= BUDGET
    # One part's images at a time: the largest frame alone is what goes past the budget.
    assert held <= max(BUDGET, *map(decoded, SIZES)) + MARGIN
    sent = [decode(value, Detections) for topic, value in producer.sent if topic == TOPICS.detections]
    assert [(message.seq, message.image_width, message.image_height) for message in sent] == [
        (seq, *size) for seq, size in enumerate(SIZES)]
    assert len(sent) == len(producer.sent) and consumer.commits == 1


LARGE = SIZES[3]


class FailsOnTheLargeFrame:
    """Stands in for the GPU detector meeting the large frame, which is detected alone: either the device fails there
    and stays failed (every later call raises, a known-good picture included), or it cannot read that one JPEG and
    reads the rest."""

    name = "gpu"

    def __init__(self, device_fails: bool):
        self.device_fails = device_fails
        self.failed = False

    def detect_jpegs(self, jpegs):
        sizes = [cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape[1::-1] for jpeg in jpegs]
        if LARGE in sizes:
            self.failed = self.device_fails
            raise RuntimeError("CUDA driver error: unknown error" if self.device_fails else "nvjpeg: unsupported jpeg")
        if self.failed:
            raise RuntimeError("CUDA driver error: unknown error")
        return [no_boxes() for _ in jpegs]


def test_a_device_that_fails_on_a_frame_detected_alone_stops_the_batch_without_dead_lettering_the_frame():
    consumer, producer = Consumer(), Producer()
    stage = InferenceWorker(CONFIG, consumer, producer, CameraDetectors(FailsOnTheLargeFrame(device_fails=True)),
                            "group")
    with pytest.raises(RuntimeError, match="unknown error"):
        process_batch(consumer, producer, records(), stage.detect_batch)
    assert [topic for topic, _ in producer.sent] == [TOPICS.detections] * 3  # the first part's, before the large frame
    assert consumer.commits == 0


def test_a_frame_detected_alone_that_only_the_gpu_cannot_read_is_dead_lettered_and_the_batch_goes_on():
    consumer, producer = Consumer(), Producer()
    stage = InferenceWorker(CONFIG, consumer, producer, CameraDetectors(FailsOnTheLargeFrame(device_fails=False)),
                            "group")
    assert process_batch(consumer, producer, records(), stage.detect_batch) is None
    [letter] = [decode(value, DeadLetter) for topic, value in producer.sent if topic == TOPICS.dead_letter]
    assert letter.offset == 3 and "unsupported jpeg" in letter.reason
    assert [decode(value, Detections).seq for topic, value in producer.sent if topic == TOPICS.detections] == [
        0, 1, 2, 4, 5, 6, 7]
    assert consumer.commits == 1


CROWD_CAMERAS = ["a", "b", "c", "d"]


def crowd_stage(density_counter, maps_per_batch: int, budget: int = 2**20) -> tuple[InferenceWorker, Producer]:
    """A worker of four zone cameras whose 640x360 frames (691,200 bytes decoded) are detected a part each, or as many
    as `budget` holds."""
    zone = {"id": "z", "polygon": [[0, 0], [600, 0], [600, 300]], "area_m2": 10}
    config = parse_config({
        "site": "t", "cameras": [{"id": camera, "source": str(index), "zones": [zone]}
                                 for index, camera in enumerate(CROWD_CAMERAS)],
        "model": {"max_frame_age_s": 3600, "max_batch_decoded_bytes": budget},
        # the whole worker's time for maps: the wall time between parts always repays the last part's map
        "analytics": {"density_model": {"maps_per_batch": maps_per_batch, "max_busy_fraction": 1.0}}}, Path("."))
    producer = Producer()
    return InferenceWorker(config, Consumer(), producer, CameraDetectors(DecodedOnTheCpu()), "group",
                           density_counter=density_counter), producer


def crowd_batch(captured_at: float, first_offset: int) -> list:
    """A frame of each zone camera."""
    jpeg = cv2.imencode(".jpg", np.full((360, 640, 3), 90, np.uint8))[1].tobytes()
    return [SimpleNamespace(topic=TOPICS.frames, partition=0, offset=first_offset + index, key=camera.encode(),
                            value=encode(Frame(camera_id=camera, seq=first_offset, width=640, height=360,
                                               captured_at=captured_at + index / 100, jpeg=jpeg)))
            for index, camera in enumerate(CROWD_CAMERAS)]


def cameras_sent_with_maps(producer: Producer) -> list[str]:
    messages = [decode(value, Detections) for _, value in producer.sent]
    producer.sent.clear()
    return [message.camera_id for message in messages if message.density_map is not None]


def test_maps_per_batch_bounds_a_batch_detected_in_parts():
    counter = FixedCountDensity(people=100.0)
    stage, producer = crowd_stage(counter, maps_per_batch=2)
    assert stage.process(crowd_batch(time.time() - 5, 0)) == 4
    assert counter.calls == 2 and cameras_sent_with_maps(producer) == ["a", "b"]  # the oldest maps (none) first


class NotesEachCall(FixedCountDensity):
    """Notes how many pictures each call of the density model is given."""

    def __init__(self, people: float):
        super().__init__(people)
        self.pictures_per_call: list[int] = []

    def density_maps(self, images, person_boxes):
        self.pictures_per_call.append(len(images))
        return super().density_maps(images, person_boxes)


def test_a_batch_in_parts_makes_each_parts_maps_in_one_call_from_that_parts_pictures():
    counter = NotesEachCall(people=100.0)
    stage, producer = crowd_stage(counter, maps_per_batch=4, budget=3 * 691_200)  # parts of cameras a-c, then d
    assert stage.process(crowd_batch(time.time() - 5, 0)) == 4
    assert counter.pictures_per_call == [3, 1] and cameras_sent_with_maps(producer) == CROWD_CAMERAS


class FailsOnItsSecondCall(FixedCountDensity):
    """Stands in for the density model raising on the input of one part of the batch."""

    def __init__(self, people: float):
        super().__init__(people)
        self.tries = 0

    def density_maps(self, images, person_boxes):
        self.tries += 1
        if self.tries == 2:
            raise RuntimeError("model failed on this input")
        return super().density_maps(images, person_boxes)


def test_a_map_that_failed_in_a_later_part_leaves_the_maps_the_earlier_parts_sent():
    stage, producer = crowd_stage(FailsOnItsSecondCall(people=100.0), maps_per_batch=4)
    start = time.time() - 5
    assert stage.process(crowd_batch(start, 0)) == 4
    assert cameras_sent_with_maps(producer) == ["a", "c", "d"]  # b's part failed to map; its boxes still went
    # A second later none is due: the maps sent stay fresh, and b is tried again a refresh interval after its try.
    assert stage.process(crowd_batch(start + 1, 4)) == 4
    assert cameras_sent_with_maps(producer) == []
    assert stage.process(crowd_batch(start + 7.5, 8)) == 4
    assert cameras_sent_with_maps(producer) == CROWD_CAMERAS

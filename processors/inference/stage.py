"""Inference stage: frames topic -> detector -> detections topic, in micro-batches, at least once.

Offsets are committed only after every detections message of the batch has been acknowledged by the broker, so a
crash re-delivers the batch to the next worker of the group instead of losing it.
"""
from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from kafka import KafkaProducer
from kafka.errors import MessageSizeTooLargeError
from prometheus_client import Counter, Gauge, Histogram

from infra.backoff import Pause
from infra.consume_loop import RetryBatch, process_batch
from infra.dead_letter import dead_letter, wrong_key
from infra.frame_client import FrameConsumer
from infra.kafka import BROKER_CONNECTED, export_partition_lag, loop_went_round, reset_positions_past_the_end
from processors.inference.density_floor import DensityFloorPool
from processors.inference.density_map import DensityMapCounter, without_texture
from processors.inference.density_schedule import DensitySchedule
from processors.inference.detector import Detector, ImageDetections, keep_confident
from processors.inference.jpeg_header import jpeg_is_whole, verify_frame_jpeg
from processors.inference.model_swap import ModelSwapper
from processors.inference.shedding import FrameShedder
from processors.inference.static_blobs import StaticBlobPool
from processors.inference.tracking import TrackerPool
from schemas import Detections, Frame, SchemaError, decode, encode
from schemas.detections import MAX_OBJECTS, verify_density_values
from schemas.settings.config import Config

log = logging.getLogger(__name__)

STAGE = "inference"
# Errors of a frame store that is away for now (a network mount), not of the reference read from it.
STORE_AWAY_ERRNOS = frozenset({errno.EIO, errno.ESTALE, errno.ENOTCONN, errno.ETIMEDOUT, errno.EAGAIN, errno.EHOSTDOWN,
                               errno.EHOSTUNREACH, errno.ENETDOWN, errno.ENETUNREACH})
FRAMES_CONSUMED = Counter("cityguard_frames_consumed_total", "Frames turned into detections", ["camera"])
FRAMES_SHED = Counter("cityguard_frames_shed_total", "Frames skipped under overload: stale, or over their camera's "
                      "rate (processors.inference.shedding)", ["camera", "reason"])
FRAME_AGE = Gauge("cityguard_inference_frame_age_seconds",
                  "Age of the camera's latest frame when the inference stage reached it", ["camera"])
INFERENCE_SECONDS = Histogram(
    "cityguard_inference_seconds", "Model time per frame",
    buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0),
)
# The model's own time is cityguard_inference_seconds, counted once the frame's detections are confirmed.
STEP_SECONDS = Histogram(
    "cityguard_inference_step_seconds", "Time per frame in each other step of the inference stage", ["step"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)
DENSITY_MAP_AGE = Gauge("cityguard_density_map_age_seconds",
                        "Capture-time age of the zone camera's newest density map sent, at its latest frame (+Inf: "
                        "none yet)", ["camera"])
DENSITY_MAP_STALE_FRAMES = Counter("cityguard_density_map_stale_frames_total",
                                   "Frames of the zone camera detected while its newest density map sent was older "
                                   "than analytics.counting.density_map_max_age_seconds: its zones' counts are "
                                   "unreliable at them", ["camera"])
DENSITY_FLOOR_PEOPLE = Gauge("cityguard_density_background_floor_people",
                             "People the zone camera's learnt background floor took off its newest density map",
                             ["camera"])
BATCH_SIZE = Histogram("cityguard_inference_batch_size", "Frames per inference batch, or per part of one where its "
                       "decoded pixels would pass model.max_batch_decoded_bytes", buckets=(1, 2, 4, 8, 16, 32, 64, 128))
DENSITY_MAPS_LEFT_OUT = Counter("cityguard_density_maps_left_out_total",
                                "Density maps made but left off their frame, whose boxes still go: invalid (NaN or "
                                "negative cells), or too_large (the message would pass MAX_DETECTIONS_BYTES)",
                                ["camera", "reason"])
SERVING_MODEL = Gauge("cityguard_inference_model_info", "1 for the model registry version this worker serves "
                      "(none: a model outside the registry)", ["version"])


@dataclass(frozen=True)
class DecodedFrame:
    frame: Frame
    image: np.ndarray | None  # None when the detector decodes the JPEG itself


# Kafka's default per-record limit (max.message.bytes) is 1,048,588 bytes of record batch: a detections message up to
# this size leaves room for its key and the batch's framing. The broker refuses a larger one, and its batch would be
# rewound for ever.
MAX_DETECTIONS_BYTES = 1_000_000
# GPU faults: the device, not a frame, failed. They stop the worker (its batch uncommitted) instead of dead-lettering
# every frame that meets them.
GPU_FAULTS = (torch.OutOfMemoryError, torch.AcceleratorError)
# A plain baseline JPEG every decoder reads, and its pixels for a detector that takes decoded pictures: when every
# frame of a detector call fails alone (a batch, a part of one, or a single frame: a frame larger than
# model.max_batch_decoded_bytes is always detected alone), it failing too means the device or the model is at fault,
# and the batch stays uncommitted; it going through means the frames are (corrupt JPEGs, arithmetic-coded or 12-bit
# ones that the CPU reads and nvJPEG does not, pictures the model cannot take), and they are dead-lettered.
PROBE_JPEG = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))[1].tobytes()
PROBE_IMAGE = cv2.imdecode(np.frombuffer(PROBE_JPEG, np.uint8), cv2.IMREAD_COLOR)

FrameResolver = Callable[[str], bytes]  # frame_ref -> JPEG bytes (the producers' frame store)


def decode_frame(raw: bytes | None, decode_image: bool = True,
                 resolve_frame: FrameResolver | None = None) -> DecodedFrame:
    """Parses a frame message; a claim-check frame (frame_ref) is fetched from the frame store first."""
    return frame_image(decode(raw, Frame), decode_image, resolve_frame)


def frame_image(frame: Frame, decode_image: bool = True, resolve_frame: FrameResolver | None = None) -> DecodedFrame:
    """The frame with its JPEG checked and, when asked, decoded; raises SchemaError for anything unusable."""
    return with_image(checked_frame(frame, resolve_frame), decode_image)


def checked_frame(frame: Frame, resolve_frame: FrameResolver | None = None) -> Frame:
    """The frame with its JPEG (fetched from the frame store for a claim-check frame) and its JPEG header checked;
    decodes nothing. Raises SchemaError for anything unusable."""
    if frame.jpeg is None:
        if resolve_frame is None:
            raise SchemaError("frame_ref frames need a frame store, none is configured")
        try:
            frame = frame.model_copy(update={"jpeg": resolve_frame(frame.frame_ref), "frame_ref": None})
        except LookupError as exc:  # expired, or written to another store
            raise SchemaError(f"frame_ref {frame.frame_ref}: {exc}") from exc
    verify_frame_jpeg(frame.jpeg, frame.width, frame.height)  # before any decoder, on the CPU or the GPU
    return frame


def with_image(frame: Frame, decode_image: bool = True) -> DecodedFrame:
    """A checked frame (checked_frame) with its JPEG decoded when asked; raises SchemaError for an unusable one."""
    if not decode_image:
        if not jpeg_is_whole(frame.jpeg):
            raise SchemaError("jpeg field is not a JPEG image (end marker missing)")
        return DecodedFrame(frame, None)
    # Pixels as stored, as the GPU decoder gives them: an EXIF orientation would turn the image against its
    # declared size and the boxes against the camera's zones.
    image = cv2.imdecode(np.frombuffer(frame.jpeg, dtype=np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise SchemaError("jpeg field is not a decodable JPEG image")
    return DecodedFrame(frame, image)


def decoded_bytes(frame: Frame) -> int:
    """Bytes of the frame's decoded pixels, on the CPU (BGR) or the GPU (RGB); its JPEG header declares its size
    (checked_frame)."""
    return frame.width * frame.height * 3


def within_budget(frames: list[tuple[Frame, object]], budget_bytes: int) -> Iterator[list[tuple[Frame, object]]]:
    """Consecutive runs of the (frame, record) pairs, in their order, each of at most `budget_bytes` decoded
    (decoded_bytes); a frame larger than the budget is a run of its own, decoded whole: the header check bounds it at
    MAX_FRAME_PIXELS, and a reduced decode would change what the detector, tracker and background model see (nvJPEG
    has none), as refusing it would lose a frame the schema allows."""
    part: list[tuple[Frame, object]] = []
    held = 0
    for pair in frames:
        size = decoded_bytes(pair[0])
        if part and held + size > budget_bytes:
            yield part
            part, held = [], 0
        part.append(pair)
        held += size
    if part:
        yield part


def unusable_reason(exc: Exception) -> str:
    """The dead letter's reason for a frame that raised `exc` while read or decoded."""
    if isinstance(exc, SchemaError):
        return str(exc)
    return f"unreadable frame: {type(exc).__name__}: {exc}"


def to_message(frame: Frame, result: ImageDetections, model_name: str, model_version: str | None = None) -> Detections:
    """The frame's detections as a message: the MAX_OBJECTS most confident where there are more."""
    if len(result.confidence) > MAX_OBJECTS:
        result = result.subset(np.sort(np.argsort(-result.confidence, kind="stable")[:MAX_OBJECTS]))
    return Detections(
        camera_id=frame.camera_id, seq=frame.seq, captured_at=frame.captured_at,
        image_width=frame.width, image_height=frame.height, model=model_name, model_version=model_version,
        inference_ms=result.inference_ms, picture_fault=frame.picture_fault,
        xyxy=[tuple(box) for box in result.xyxy.tolist()], confidence=result.confidence.tolist(),
        class_id=result.class_id.tolist(), class_name=list(result.class_names),
    )


def in_source_pixels(message: Detections, frame: Frame) -> Detections:
    """The message in the camera's own pixels, where the site's zones, lanes and lines are drawn: the boxes and
    static blobs of a frame that capture scaled down (max_width) are scaled back up. The density map is a grid over
    the whole picture and needs nothing."""
    width, height = frame.source_size
    if (width, height) == (message.image_width, message.image_height):
        return message
    scale = np.array([width / message.image_width, height / message.image_height] * 2)
    update = {"image_width": width, "image_height": height,
              "xyxy": [tuple(box) for box in (message.boxes() * scale).tolist()]}
    if message.static_blobs:
        update["static_blobs"] = [blob.model_copy(update={"xyxy": tuple((np.array(blob.xyxy) * scale).tolist())})
                                  for blob in message.static_blobs]
    return message.model_copy(update=update)


class CameraDetectors:
    """Picks the detector per camera (tiled for the cameras configured so) and batches each group once.

    `version` is the model registry version both detectors come from (None for a model outside the registry)."""

    def __init__(self, detector: Detector, tiled: Detector | None = None, tiled_cameras: frozenset[str] = frozenset(),
                 confidence: float = 0.0, class_confidence: dict[int, float] | None = None,
                 version: str | None = None):
        self.detector = detector
        self.version = version
        self.tiled = tiled
        self.tiled_cameras = tiled_cameras if tiled is not None else frozenset()
        self.confidence = confidence
        self.class_confidence = class_confidence or {}

    def needs_image(self, camera_id: str) -> bool:
        """Whether the detector needs this camera's frames decoded on the CPU."""
        return camera_id in self.tiled_cameras or not hasattr(self.detector, "detect_jpegs")

    def detect(self, frames: list[DecodedFrame]) -> list[tuple[ImageDetections, str] | str]:
        """(result, model name) per frame in input order, or the reason a frame could not be processed."""
        results: list = [None] * len(frames)
        groups = [(self.detector, [i for i, f in enumerate(frames) if f.frame.camera_id not in self.tiled_cameras])]
        if self.tiled is not None:
            groups.append((self.tiled, [i for i, f in enumerate(frames) if f.frame.camera_id in self.tiled_cameras]))
        for detector, indices in groups:
            if indices:
                for i, result in zip(indices, self._run(detector, [frames[i] for i in indices]), strict=True):
                    if isinstance(result, ImageDetections):
                        results[i] = (keep_confident(result, self.confidence, self.class_confidence), detector.name)
                    else:
                        results[i] = result
        return results

    @staticmethod
    def _run(detector: Detector, frames: list[DecodedFrame]) -> list[ImageDetections | str]:
        # A detector that takes JPEGs gets them even where the CPU decoded a frame for something else (the
        # background model, a density map): one batch may hold both kinds.
        if hasattr(detector, "detect_jpegs"):
            return each_alone_on_failure(detector.detect_jpegs, [f.frame.jpeg for f in frames], PROBE_JPEG,
                                         "jpeg field could not be decoded on the GPU")
        return each_alone_on_failure(detector.detect, [f.image for f in frames], PROBE_IMAGE,
                                     "the model failed on the picture")


def each_alone_on_failure(detect: Callable[[list], list[ImageDetections]], inputs: list, probe,
                          failed: str) -> list[ImageDetections | str]:
    """`detect(inputs)`, or where that call fails but not on the device (GPU_FAULTS), each input detected alone: one
    frame the decoder or the model cannot take (a corrupt JPEG fails a whole GPU batch) costs its own detections, as
    the reason `failed` and the error, and the others are kept. Where not one goes through alone, the known-good
    `probe` tells the device from the frames: it failing too raises the call's error, stopping the worker with its
    batch uncommitted, as a frame must not stop its partition and a broken device must not dead-letter every frame."""
    try:
        return detect(inputs)
    except GPU_FAULTS:
        raise
    except Exception as batch_error:
        outcomes: list[ImageDetections | str] = []
        for item in inputs:
            try:
                outcomes.extend(detect([item]))
            except GPU_FAULTS:
                raise
            except Exception as exc:
                outcomes.append(f"{failed}: {exc}")
        if all(isinstance(outcome, str) for outcome in outcomes):
            try:
                detect([probe])
            except Exception:
                raise batch_error from None
        return outcomes


class FrameEnricher:
    """What a detections message gets from the decoded image or per-camera state: the density map made for it (if
    any), track ids and static blobs. The inference worker and `cityguard replay` both run every frame through it, so
    they produce the same messages."""

    def __init__(self, trackers: TrackerPool | None = None, static_blobs: StaticBlobPool | None = None):
        self.trackers = trackers
        self.static_blobs = static_blobs  # background model for traffic cameras; needs CPU-decoded images

    def needs_image(self, camera_id: str) -> bool:
        """Whether this camera's frames must be decoded on the CPU for the background model."""
        return self.static_blobs is not None and camera_id in self.static_blobs.camera_ids

    def enrich(self, item: DecodedFrame, message: Detections, density: np.ndarray | None = None) -> Detections:
        if density is not None:
            message = message.model_copy(update={"density_map": density.astype("float32").tobytes(),
                                                  "density_map_shape": density.shape})
        if self.trackers is not None:
            with STEP_SECONDS.labels("tracking").time():
                message = self.trackers.update(message)
        if self.static_blobs is not None and item.image is not None:
            with STEP_SECONDS.labels("background").time():
                view = self.static_blobs.update(message.camera_id, item.image, message.captured_at)
            if view is not None:
                message = message.model_copy(update={"static_blobs": view.blobs, "view_moved": view.view_moved})
        return in_source_pixels(message, item.frame)


class ZoneDensityMaps:
    """The zone cameras' density maps: which frames get one (DensitySchedule: the map-heavy model cannot run on every
    frame), each made knowing where the frame's detected people are (their height and what the map puts under them
    choose its width), less the camera's learnt background floor, then without the texture of a frame whose people
    it does not see (without_texture).

    The inference worker schedules by its own clock and charges each batch's measured map time, so that maps take at
    most `max_busy_fraction` of it. `cityguard replay` schedules in video time and charges nothing: a map every
    `interval_seconds` of the clip, as a worker that keeps up would make them, whatever this CPU's speed.
    """

    def __init__(self, config: Config, counter: DensityMapCounter, video_time: bool = False):
        settings = self.settings = config.analytics.density_model
        self.counter = counter
        self.video_time = video_time
        self.schedule = DensitySchedule((camera.id for camera in config.cameras if camera.zones),
                                        settings.interval_seconds, settings.maps_per_batch,
                                        settings.max_busy_fraction)
        self.floors = None  # each camera's learnt background response, taken off its maps
        if settings.background_floor.enabled:
            self.floors = DensityFloorPool(settings.background_floor, settings.dense_cell_people)
        self.max_age_s = config.analytics.counting.density_map_max_age_seconds
        for camera_id in self.schedule.cameras:  # from 0, so that the first stale frames show as an increase
            DENSITY_MAP_STALE_FRAMES.labels(camera_id)

    def make(self, frames: list[DecodedFrame], person_boxes: list[np.ndarray | None],
             later_part: bool = False) -> dict[int, np.ndarray]:
        """Density maps for the frames the schedule picks, by index in `frames`; person_boxes: each frame's person
        boxes (N, 4 xyxy), None where its detection failed (the frame is not sent); later_part: the frames are a
        later part of the batch the last call was for (DensitySchedule.choose). Sets each zone camera's map age."""
        # A frame too small for the network (a few pixels tall) gets no map: its zones' counts go stale (unknown),
        # never calm, and the frame's detections still go out. A frame whose detection failed is not sent: no map.
        # Nor does a frozen or blank picture, which shows nothing of the zone now (the analytics take no map from it).
        mappable = [i for i, item in enumerate(frames) if person_boxes[i] is not None
                    and item.frame.picture_fault is None and self.counter.can_map(item.frame.height, item.frame.width)]
        if self.video_time:
            now = max((frames[i].frame.captured_at for i in mappable), default=0.0)
        else:
            now = time.monotonic()
        chosen = [mappable[i] for i in self.schedule.choose(
            [(frames[i].frame.camera_id, frames[i].frame.captured_at) for i in mappable], now, later_part)]
        maps = {}
        if chosen:
            started = time.perf_counter()
            maps = {index: density for index, density in self._maps(frames, chosen, person_boxes).items()
                    if sendable_map(frames[index].frame.camera_id, density)}
            self.schedule.not_made(frames[index].frame.camera_id for index in chosen if index not in maps)
            elapsed = time.perf_counter() - started
            if self.video_time:
                self.schedule.batch_sent()  # a replay's maps go out as made: nothing confirms them later
            else:
                self.schedule.spent(elapsed)
            STEP_SECONDS.labels("density_map").observe(elapsed / len(chosen))
        for item, boxes in zip(frames, person_boxes, strict=True):
            camera_id = item.frame.camera_id
            if camera_id in self.schedule.cameras:
                age = self.schedule.age(camera_id, item.frame.captured_at)
                DENSITY_MAP_AGE.labels(camera_id).set(age)
                if boxes is not None and age > self.max_age_s:  # a frame that goes out, its zones unreliable
                    DENSITY_MAP_STALE_FRAMES.labels(camera_id).inc()
        return maps

    def left_off(self, frame: Frame) -> None:
        """The map made for `frame` does not go out (left off its message as too large to send, or the frame
        dead-lettered): its camera keeps the map age of its last map sent, and is tried again a refresh interval later,
        as after a failed map."""
        self.schedule.not_made([frame.camera_id])
        DENSITY_MAP_AGE.labels(frame.camera_id).set(self.schedule.age(frame.camera_id, frame.captured_at))

    def _maps(self, frames: list[DecodedFrame], chosen: list[int],
              person_boxes: list[np.ndarray | None]) -> dict[int, np.ndarray]:
        """The chosen frames' finished maps by index, made in one call of the model; where that fails, in one call
        per frame, so that a picture the model fails on costs its own map, not the others'. The model failing on some
        input must not stop the partition; a device fault does stop the worker, as the detector's do."""
        try:
            return self._made(frames, chosen, person_boxes)
        except GPU_FAULTS:
            raise
        except Exception as exc:
            cameras = sorted({frames[index].frame.camera_id for index in chosen})
            if len(chosen) == 1:
                log.exception("density map failed for camera %s", cameras[0])
                return {}
            log.warning("density maps failed for cameras %s (%s: %s); making them one at a time", cameras,
                        type(exc).__name__, exc)
        return {index: density for single in chosen
                for index, density in self._maps(frames, [single], person_boxes).items()}

    def _made(self, frames: list[DecodedFrame], indices: list[int],
              person_boxes: list[np.ndarray | None]) -> dict[int, np.ndarray]:
        """The frames' maps by index, made in one call of the model and finished."""
        # Frames the GPU detector took as JPEGs are decoded on the CPU now, the chosen ones alone.
        images = [with_image(frames[i].frame).image if frames[i].image is None else frames[i].image for i in indices]
        made = self.counter.density_maps(images, [person_boxes[i] for i in indices])
        return {index: self._finished(frames[index].frame, made_map, person_boxes[index], image)
                for index, made_map, image in zip(indices, made, images, strict=True)}

    def _finished(self, frame: Frame, made: np.ndarray, person_boxes: np.ndarray, image: np.ndarray) -> np.ndarray:
        """A made map less the camera's background floor (learnt from the maps as made), then without the texture of
        a frame whose people it does not see."""
        if self.floors is not None:
            floored = self.floors.update(frame.camera_id, made, len(person_boxes), image, frame.captured_at)
            DENSITY_FLOOR_PEOPLE.labels(frame.camera_id).set(float(made.sum()) - float(floored.sum()))
            made = floored
        return without_texture(made, person_boxes, image.shape[:2], self.settings)


def sendable_map(camera_id: str, density: np.ndarray) -> bool:
    """Whether the analytics stage will take the map as sent (float32): one it would refuse (a model gone wrong:
    NaN or negative cells) is left off its frame, whose boxes still go."""
    try:
        verify_density_values(density.astype(np.float32))
    except ValueError as exc:
        log.warning("density map of camera %s left out: %s", camera_id, exc)
        DENSITY_MAPS_LEFT_OUT.labels(camera_id, "invalid").inc()
        return False
    return True


def sendable_value(message: Detections) -> tuple[bytes, bool]:
    """The encoded message, and whether its density map was left off: one that would take it past
    MAX_DETECTIONS_BYTES (a camera of many megapixels) is, and the frame's boxes still go."""
    value = encode(message)
    if len(value) > MAX_DETECTIONS_BYTES and message.density_map is not None:
        log.warning("density map of camera %s left out: the detections message would be %d bytes, over %d",
                    message.camera_id, len(value), MAX_DETECTIONS_BYTES)
        DENSITY_MAPS_LEFT_OUT.labels(message.camera_id, "too_large").inc()
        return encode(message.model_copy(update={"density_map": None, "density_map_shape": None})), True
    return value, False


def decoded_on_cpu(detectors: CameraDetectors, enricher: FrameEnricher, camera_id: str) -> bool:
    """Whether a camera's frames are decoded on the CPU as they arrive: for a detector that takes decoded images (or
    the tiled one), or for a traffic camera's background model. With a detector that takes JPEGs (the GPU's), a crowd
    camera's frame is decoded only once it is chosen for a density map (ZoneDensityMaps)."""
    return detectors.needs_image(camera_id) or enricher.needs_image(camera_id)


class InferenceWorker:
    """One member of the inference consumer group; run several to share the frames partitions."""

    def __init__(self, config: Config, consumer: FrameConsumer, producer: KafkaProducer,
                 detectors: CameraDetectors, group_id: str, trackers: TrackerPool | None = None,
                 static_blobs: StaticBlobPool | None = None, resolve_frame: FrameResolver | None = None,
                 density_counter: DensityMapCounter | None = None,
                 model_swapper: ModelSwapper[CameraDetectors] | None = None):
        self.topics = config.broker.topics
        self.max_batch = config.model.max_batch_size
        self.max_wait_s = config.model.max_batch_wait_ms / 1000
        self.max_decoded_bytes = config.model.max_batch_decoded_bytes
        self.failure_pause = Pause(1.0, 10.0)  # a batch that failed comes again after it: the broker is likely away
        self.consumer = consumer
        self.producer = producer
        self.detectors = detectors
        self.enricher = FrameEnricher(trackers, static_blobs)
        self.resolve_frame = resolve_frame
        self.zone_maps = None if density_counter is None else ZoneDensityMaps(config, density_counter)
        self.group_id = group_id
        self.sends: list = []  # futures of the current batch's sends
        self.decoded = 0  # frames of the current batch that were readable
        self.sent_frames: list[tuple[str, float]] = []  # (camera id, model ms) of the current batch's detections
        self.lag_labels: set[tuple[str, str, str]] = set()  # the consumer lag series this worker exports
        self.frame_age_cameras: dict[int, set[str]] = {}  # frames partition -> the cameras whose age it exports
        # Follows the model registry: a promoted model replaces the detectors between batches, never within one.
        self.model_swapper = model_swapper
        SERVING_MODEL.labels(detectors.version or "none").set(1)
        self.cameras = {camera.id for camera in config.cameras}
        self.shedder = FrameShedder(config.model.max_frame_age_s, {c.id: c.fps for c in config.cameras},
                                    config.model.camera_rate_factor)

    def gather(self, stop: threading.Event) -> list:
        """Up to max_batch records, waiting at most max_wait once the first one has arrived; none after half a second
        with nothing to read, so that the caller's checks (lag, connection, positions past a partition's end) run
        while the stage is idle too."""
        records: list = []
        deadline = None
        while len(records) < self.max_batch and not stop.is_set():
            timeout_s = 0.5 if deadline is None else max(0.0, deadline - time.monotonic())
            polled = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=self.max_batch - len(records))
            for partition_records in polled.values():
                records.extend(partition_records)
            if not records:
                break
            if deadline is None:
                deadline = time.monotonic() + self.max_wait_s
            if time.monotonic() >= deadline:
                break
        return records

    def process(self, records: list) -> int:
        """Detects, produces and commits one batch; returns detections messages produced.

        The offsets move only after every output of the batch (detections and dead letters) is acknowledged; if any
        send failed, the consumer is rewound to the batch's first offsets so the whole batch comes again.
        """
        error = process_batch(self.consumer, self.producer, records, self.detect_batch)
        if error is not None:
            if self.zone_maps is not None:  # the frames that come again find their cameras' maps still due
                self.zone_maps.schedule.batch_rewound()
            delay = self.failure_pause.failed(time.monotonic())  # `run` waits it out: no spinning on the batch
            log.error("%s; rewound so the batch is processed again in %g s", error, delay)
            return 0
        self.failure_pause.succeeded()
        if self.zone_maps is not None:
            self.zone_maps.schedule.batch_sent()
        # Counted once confirmed: a rewound batch is detected again, and would be counted again.
        for camera, inference_ms in self.sent_frames:
            FRAMES_CONSUMED.labels(camera).inc()
            INFERENCE_SECONDS.observe(inference_ms / 1000)
        return self.decoded

    def detect_batch(self, records: list) -> list:
        """Sends the detections and dead letters of one batch; returns the futures of those sends.

        The frames are decoded and detected in consecutive parts of at most model.max_batch_decoded_bytes of pixels,
        each part's images let go before the next is decoded: a batch of large frames would otherwise take a small
        machine's memory, and the worker, killed with the batch uncommitted, would meet it again on restart. In
        order, so each camera's tracker and background model see its frames as captured. A part's density maps are
        made from its pictures before they go, in one call per part rather than per batch: the maps' wider passes and
        background floor read the whole pictures, and keeping the chosen ones for a call at the batch's end would
        hold up to maps_per_batch frames beyond the budget."""
        self.sends, self.sent_frames, self.decoded = [], [], 0
        for index, part in enumerate(within_budget(self.read_batch(records), self.max_decoded_bytes)):
            self.detect_part(part, later_part=index > 0)
        return self.sends

    def detect_part(self, part: list[tuple[Frame, object]], later_part: bool) -> None:
        """Decodes, detects and sends one part of the batch; its images go when it returns."""
        decoded = self.decode_part(part)
        if decoded:
            self.detect_and_send(decoded, later_part)
        self.decoded += len(decoded)

    def detect_and_send(self, decoded: list[tuple[DecodedFrame, object]], later_part: bool) -> None:
        BATCH_SIZE.observe(len(decoded))
        frames = [item for item, _ in decoded]
        outcomes = self.detectors.detect(frames)
        person_boxes = [None if isinstance(outcome, str) else outcome[0].person_boxes() for outcome in outcomes]
        density_maps = {} if self.zone_maps is None else self.zone_maps.make(frames, person_boxes, later_part)
        for index, ((item, record), outcome) in enumerate(zip(decoded, outcomes, strict=True)):
            if isinstance(outcome, str):
                self.reject(record, outcome)
                continue
            result, model_name = outcome
            try:
                message = self.enricher.enrich(
                    item, to_message(item.frame, result, model_name, self.detectors.version), density_maps.get(index))
            except Exception as exc:  # per-camera state failing on one frame must not stop its partition
                log.exception("frame %s/%d could not be enriched", item.frame.camera_id, item.frame.seq)
                self.reject(record, f"enrichment failed: {type(exc).__name__}: {exc}")
                if index in density_maps:  # nor does its map go out
                    self.zone_maps.left_off(item.frame)
                continue
            value, map_left_off = sendable_value(message)
            if map_left_off:
                self.zone_maps.left_off(item.frame)
            try:
                self.sends.append(self.producer.send(self.topics.detections, key=item.frame.camera_id.encode(),
                                                     value=value))
            except MessageSizeTooLargeError as exc:  # this frame's output; sending it again would fail again
                self.reject(record, f"detections too large to send: {exc}")
                if index in density_maps:  # nor does its map go out (once more, where it was left off: no matter)
                    self.zone_maps.left_off(item.frame)
                continue
            self.sent_frames.append((item.frame.camera_id, result.inference_ms))
            for step, ms in (("preprocess", result.preprocess_ms), ("postprocess", result.postprocess_ms)):
                STEP_SECONDS.labels(step).observe(ms / 1000)

    def read_batch(self, records: list) -> list[tuple[Frame, object]]:
        """The batch's usable frames, their JPEGs fetched and their headers checked, none decoded; the others are
        dead-lettered once the whole batch is read, so a batch brought again (RetryBatch) has sent no dead letter
        yet."""
        frames, rejected = [], []
        for record in records:
            try:
                with STEP_SECONDS.labels("read").time():
                    frame = decode(record.value, Frame)
                    if (misrouted := wrong_key("frame", frame.camera_id, record.key)) is not None:
                        rejected.append((record, misrouted))  # it would split the camera's tracker between workers
                        continue
                    if frame.camera_id not in self.cameras:
                        # Analytics refuses its detections anyway; a flood of made-up ids must not cost model runs,
                        # nor add series to the metrics labelled by camera.
                        rejected.append((record, f"camera {frame.camera_id!r} is not in the site configuration"))
                        continue
                    FRAME_AGE.labels(frame.camera_id).set(max(0.0, self.shedder.age(frame)))
                    self.frame_age_cameras.setdefault(record.partition, set()).add(frame.camera_id)
                    shed = self.shedder.reason(frame, record.offset)
                    if shed is not None:
                        FRAMES_SHED.labels(frame.camera_id, shed).inc()
                        continue
                    frames.append((checked_frame(frame, self.resolve_frame), record))
            except OSError as exc:
                if exc.errno not in STORE_AWAY_ERRNOS:  # this reference's own fault (a name too long, no access)
                    rejected.append((record, unusable_reason(exc)))
                    continue
                # The frame store is away for now (a shared mount): its frames are still there, so the batch waits.
                raise RetryBatch(f"frame store unreadable: {type(exc).__name__}: {exc}") from exc
            except Exception as exc:  # anything else a hostile message triggers must not kill the worker
                rejected.append((record, unusable_reason(exc)))
        for record, reason in rejected:
            self.reject(record, reason)
        return frames

    def decode_part(self, part: list[tuple[Frame, object]]) -> list[tuple[DecodedFrame, object]]:
        """The part's frames, decoded on the CPU where the detector or the background model needs their pixels
        (decoded_on_cpu); one that does not decode is dead-lettered. Nothing here brings the batch again, so its
        dead letters may go at once."""
        decoded = []
        for frame, record in part:
            try:
                with STEP_SECONDS.labels("decode").time():
                    decode_image = decoded_on_cpu(self.detectors, self.enricher, frame.camera_id)
                    decoded.append((with_image(frame, decode_image), record))
            except Exception as exc:  # what a hostile JPEG triggers in the decoder must not kill the worker
                self.reject(record, unusable_reason(exc))
        return decoded

    def reject(self, record, reason: str) -> None:
        letter = dead_letter(STAGE, record.topic, record.partition, record.offset, record.key, record.value, reason)
        self.sends.append(self.producer.send(self.topics.dead_letter, key=letter.key, value=encode(letter)))

    def update_lag(self) -> None:
        BROKER_CONNECTED.labels(STAGE).set(1 if self.consumer.bootstrap_connected() else 0)
        reset_positions_past_the_end(self.consumer, self.group_id)
        self.lag_labels = export_partition_lag(self.consumer, self.group_id, self.lag_labels)
        # So are its cameras' frame and density map ages: the last ones seen here, often high ones (lag is what moves
        # partitions), would stand beside the new owner's for ever.
        owned = {tp.partition for tp in self.consumer.assignment() if tp.topic == self.topics.frames}
        gone = set(self.frame_age_cameras) - owned
        if gone:
            kept = set().union(*(self.frame_age_cameras.get(partition, ()) for partition in owned))
            for camera in set().union(*(self.frame_age_cameras.pop(partition) for partition in gone)) - kept:
                FRAME_AGE.remove(camera)
                DENSITY_MAP_AGE.remove(camera)

    def swap_model(self) -> None:
        """Between batches: serve a newly promoted (or rolled-back) model once it has finished loading."""
        swapped = self.model_swapper.poll() if self.model_swapper is not None else None
        if swapped is not None:
            SERVING_MODEL.remove(self.detectors.version or "none")
            model, self.detectors = swapped
            SERVING_MODEL.labels(model.version).set(1)
            log.info("now serving model %s (%s)", model.version, model.weights)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            loop_went_round(STAGE)
            self.swap_model()
            records = self.gather(stop)
            if records:
                self.process(records)
                stop.wait(self.failure_pause.remaining(time.monotonic()))
            self.update_lag()

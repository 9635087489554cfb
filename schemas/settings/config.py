"""The one typed configuration model: site, broker, model, cameras, zones, thresholds. Validated at start.

Models hold no I/O and no runtime state; `load_config` reads the files. The environment is read where a setting
names a variable (`env_value`: secrets and URLs) and for KAFKA_BOOTSTRAP_SERVERS, when asked, so a worker started
with another broker in its environment needs no other site file.
"""
from __future__ import annotations

import difflib
import ipaddress
import os
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, Field, ValidationError, ValidationInfo, field_validator, model_validator

from schemas.settings.alerting import AlertingConfig
from schemas.settings.base import (
    PATTERN_WORDS,
    ConfigError,
    Frozen,
    Identifier,
    ListenHost,
    Point,
    require_unique,
    verify_source_characters,
    verify_source_scheme,
    verify_source_variables,
    worded,
)
from schemas.settings.capture import HTTP_SCHEMES, ItsCameraRef, ProducerConfig, SourceKind
from schemas.settings.console import ConsoleConfig
from schemas.settings.crowd import (
    AnalyticsConfig,
    CalibrationConfig,
    RiskThresholds,
    ZoneConfig,
    verify_crowd_state_size,
    verify_zone_areas,
    verify_zone_grids,
)
from schemas.settings.traffic import SceneConfig

__all__ = ["AnalyticsConfig", "CameraConfig", "Config", "ConfigError", "RiskThresholds", "ZoneConfig",
           "load_config", "parse_config", "read_config_file", "validation_problems"]


# What Kafka takes in a topic name (a consumer group id takes more), kept for the site name too, which prefixes the
# analytics stage's changelog topic; well below Kafka's 249 characters with the longest suffix added to it.
KafkaName = Annotated[str, Field(pattern=worded(r"^[A-Za-z0-9._-]{1,200}$",
                                               "1-200 letters, digits, '.', '_' and '-'"))]


class TopicNames(Frozen):
    """Topic names, no two alike; the .v1 suffix is the schema major version carried by the topic's messages."""

    frames: KafkaName = "cityguard.frames.v1"
    detections: KafkaName = "cityguard.detections.v1"
    zone_metrics: KafkaName = "cityguard.zone-metrics.v1"
    events: KafkaName = "cityguard.events.v1"
    line_counts: KafkaName = "cityguard.line-counts.v1"
    alerts: KafkaName = "cityguard.alerts.v1"
    camera_status: KafkaName = "cityguard.camera-status.v1"
    dead_letter: KafkaName = "cityguard.dead-letter.v1"

    def all(self) -> list[str]:
        return list(self.model_dump().values())

    @model_validator(mode="after")
    def verify_names_differ(self) -> "TopicNames":
        """Each topic carries one schema: a stage reading another's output as its input refuses every message, and
        a dead-letter topic that is also an input feeds each letter back to be dead-lettered again, for ever."""
        seen: dict[str, str] = {}
        for field, name in self.model_dump().items():
            if name in seen:
                raise ValueError(f"{seen[name]} and {field} name the same topic; each needs its own")
            seen[name] = field
        return self


# One bootstrap server as the Kafka clients read it: an optional SECURITY_PROTOCOL:// (as some clusters list them),
# then a host name or IPv4 address, or an IPv6 address in brackets, and the port (Kafka's 9092 when left out).
BOOTSTRAP_SERVER = re.compile(r"(?:[A-Za-z_]+://)?(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|[A-Za-z0-9._-]+)"
                              r"(?::(?P<port>[^:]*))?")


def verify_bootstrap_servers(servers: str) -> str:
    """Comma-separated servers a Kafka client can be pointed at. A client given a port it cannot use retries it until
    the stage gives up waiting for its broker, half a minute later, as if the broker were down."""
    entries = servers.split(",")
    for position, entry in enumerate(entries, start=1):
        server = BOOTSTRAP_SERVER.fullmatch(entry.strip())
        if server is None or (server["ipv6"] is not None and not is_ipv6(server["ipv6"])):
            problem = "is not host:port ([address]:port for IPv6)"
        elif server["port"] is not None and not (re.fullmatch(r"[0-9]{1,5}", server["port"])
                                                 and 1 <= int(server["port"]) <= 65535):
            problem = "has a port that is not a number from 1 to 65535"
        else:
            continue
        raise ValueError(f"server {position} of {len(entries)} {problem}")
    return servers


def is_ipv6(address: str) -> bool:
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return False
    return True


class BrokerConfig(Frozen):
    bootstrap_servers: str | None = Field(
        default=None,
        description="host:port[,host:port] ([address]:port for IPv6); unset starts the embedded Tansu broker. "
        "The KAFKA_BOOTSTRAP_SERVERS environment variable overrides it.",
    )
    embedded_port: int = Field(default=0, ge=0, le=65535,
                               description="port for the embedded broker; 0 picks a free one")
    partitions: int = Field(
        default=6, ge=1, le=1024, description="partitions per topic, the ceiling on parallel consumers")
    replication_factor: int = Field(
        default=1, ge=1, le=16,
        description="copies the cluster keeps of each topic the stages create, the analytics state's changelog "
        "included (3 on a production cluster); 1 with the embedded broker, which is one node")
    topics: TopicNames = TopicNames()
    embedded_memory_warn_bytes: int = Field(
        default=4 * 1024**3, ge=1024**2,
        description="the embedded broker keeps every message in RAM and never deletes one (about 0.12 GB per "
        "camera-hour at 10 fps with frames by reference, as `cityguard up` sends them, 2.6-3.1 GB with frames in the "
        "messages): above this resident size `cityguard up` warns and CityguardBrokerMemoryHigh fires")

    @field_validator("bootstrap_servers")
    @classmethod
    def verify_servers(cls, servers: str | None) -> str | None:
        return None if servers is None else verify_bootstrap_servers(servers)


class TrackingConfig(Frozen):
    """Per-camera ByteTrack in the inference stage."""

    enabled: bool = Field(default=True, description="attach per-camera track ids to detections")
    high_confidence: float = Field(default=0.25, gt=0, lt=1, description="first-association threshold")
    low_confidence: float = Field(
        default=0.1, gt=0, lt=1, description="second-association threshold; it sees only the boxes the detector "
        "keeps (model.confidence and class_confidence), so it acts only where those are set below high_confidence")
    new_track_confidence: float = Field(default=0.25, gt=0, lt=1, description="confidence needed to start a track")
    match_iou: float = Field(default=0.8, gt=0, le=1, description="association cost threshold (1 - IoU)")
    lost_track_seconds: float = Field(default=3.0, gt=0, le=600, description="how long a lost track may come back")
    idle_camera_seconds: float = Field(default=300, gt=0, description="drop a camera's tracker after this silence")

    @model_validator(mode="after")
    def verify_thresholds_ordered(self) -> "TrackingConfig":
        if self.low_confidence >= self.high_confidence:
            raise ValueError("low_confidence must be below high_confidence")
        return self


class TilingConfig(Frozen):
    """SAHI-style tiled inference for the cameras listed (wide or distant views): more people found, more time."""

    cameras: list[str] = Field(default_factory=list, description="camera ids that use tiled inference")
    tile_size: int = Field(default=640, ge=64, le=4096, description="tile edge in frame pixels")
    overlap: float = Field(default=0.2, ge=0, lt=0.9, description="fraction of a tile shared with its neighbour")
    whole_frame_pass: bool = Field(default=True, description="also run the whole frame, for objects bigger than a tile")


class ModelConfig(Frozen):
    backend: Literal["ultralytics", "openvino", "gpu-nvjpeg"] = Field(
        default="ultralytics",
        description="ultralytics: any ultralytics model file (.pt on CPU/CUDA, OpenVINO dir, .onnx, TensorRT .engine); "
        "openvino: an OpenVINO export on the CPU with the chosen performance hint; "
        "gpu-nvjpeg: JPEG decode, letterbox and NMS on a CUDA GPU with FP16 fused PyTorch weights",
    )
    openvino_hint: Literal["LATENCY", "THROUGHPUT"] = Field(
        default="THROUGHPUT", description="openvino backend: parallel requests per batch (THROUGHPUT) or one (LATENCY)"
    )
    weights: str = Field(
        default="yolo11n.pt", min_length=1,
        description="ultralytics model name or path; a connected machine downloads names such as yolo11n.pt",
    )
    offline_weights: str | None = Field(
        default="asset:yolo11n_int8_openvino_model", min_length=1,
        description="used instead of weights when YOLO_OFFLINE=1: a path that exists (relative to the config file) "
        "or an asset name (asset:NAME, fetched when missing)",
    )
    registry: str | None = Field(
        default=None, description="model registry folder (`cityguard model ...`), relative to the config file; when "
        "it has a serving version, inference (and the commands that measure it: eval, bench, replay) uses it instead "
        "of weights, inference following promotions and roll-backs")
    image_size: int = Field(default=640, ge=32, le=4096, description="model input size in pixels")
    confidence: float = Field(default=0.25, gt=0, lt=1, description="minimum detection confidence")
    iou: float = Field(default=0.7, gt=0, lt=1, description="NMS IoU threshold")
    classes: list[Annotated[int, Field(ge=0, le=999)]] | None = Field(
        default=None, description="COCO class ids to keep; null keeps all")
    class_confidence: dict[Annotated[int, Field(ge=0, le=999)], Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=dict,
        description="per-class minimum confidence (COCO id -> confidence) overriding `confidence` for that class",
    )
    max_batch_size: int = Field(default=8, ge=1, le=256,
                                description="frames per inference batch; with the gpu-nvjpeg backend also the batch "
                                "the model is captured at (a CUDA graph): batches of more than half of it are padded "
                                "to it, smaller ones run uncaptured")
    max_batch_wait_ms: int = Field(default=50, ge=0, le=10_000, description="longest wait to fill a batch")
    max_batch_decoded_bytes: int = Field(
        default=512 * 2**20, ge=2**20,
        description="most bytes of decoded pixels (3 a pixel, on the CPU or the GPU) a worker holds at once: a batch "
        "of more is detected in consecutive parts within it, a larger frame alone; the default holds 86 frames of "
        "1080p, or 5 of 8K")
    max_frame_age_s: float = Field(default=10.0, gt=0, le=3600,
                                   description="frames older than this when inference reaches them are skipped and "
                                   "counted (cityguard_frames_shed_total), not processed late")
    camera_rate_factor: float = Field(default=2.0, ge=1, le=100,
                                      description="a camera's frames beyond this x its configured fps are skipped, "
                                      "so one flooding camera cannot delay the others on its partition")
    tracking: TrackingConfig = TrackingConfig()
    tiling: TilingConfig = TilingConfig()

    @model_validator(mode="after")
    def verify_tuned_classes_are_kept(self) -> "ModelConfig":
        """A class given its own confidence but left out of `classes` is never reported: its confidence tunes nothing,
        and the class the operator meant to detect goes unseen."""
        dropped = sorted(set(self.class_confidence) - set(self.classes)) if self.classes is not None else []
        if dropped:
            raise ValueError(f"class_confidence gives class ids that classes leaves out, never reported: "
                             f"{', '.join(map(str, dropped))} (add them to classes, or drop their confidence)")
        return self

    def class_ids_outside(self, ids: set[int]) -> list[tuple[str, str]]:
        """(field, class ids) for each setting that names class ids outside `ids` (a model's): COCO's ids given for
        a model retrained on other classes, or a typo, which keep or tune nothing it ever reports."""
        given = [("classes", self.classes or []), ("class_confidence", list(self.class_confidence))]
        outside = [(field, sorted(set(classes) - ids)) for field, classes in given]
        return [(field, ", ".join(map(str, unknown))) for field, unknown in outside if unknown]


GEOMETRY_MARGIN = 0.02  # of the picture's size: a point drawn just past the edge is still on the picture
NOT_IMAGE_POINTS = frozenset({"direction", "ground_points"})  # a Point that is a vector; points in metres


def _image_points(model: BaseModel, where: str) -> Iterator[tuple[str, list[Point]]]:
    """(where, points) of every field of image points (a Point or a list of them) in a configuration, by type, so
    that no polygon, line end or calibration point is left out."""
    for name, field in type(model).model_fields.items():
        value, path = getattr(model, name), f"{where}.{name}" if where else name
        if name in NOT_IMAGE_POINTS or value is None:
            continue
        if field.annotation == list[Point]:
            yield path, value
        elif field.annotation == Point:
            yield path, [value]
        elif isinstance(value, BaseModel):
            yield from _image_points(value, path)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, BaseModel):
                    yield from _image_points(item, f"{path}[{getattr(item, 'id', '')}]")


def _item_ids(model: BaseModel) -> Iterator[str]:
    """The ids of every listed item within a configuration (zones, lanes, lines, regions), at any depth."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, BaseModel):
                if isinstance(value, list) and isinstance(getattr(item, "id", None), str):
                    yield item.id
                yield from _item_ids(item)


class CameraConfig(Frozen):
    id: Identifier
    name: str = ""
    source: Annotated[str, AfterValidator(verify_source_characters), AfterValidator(verify_source_scheme),
                      AfterValidator(verify_source_variables)] = Field(
        min_length=1,
        description="video file path, rtsp:// or http(s):// (HLS .m3u8, MJPEG, MP4, still JPEG) URL, or webcam index; "
        "for an ITS camera the last URL the API gave (re-resolved when it fails); ${NAME} is replaced by that "
        "environment variable (a password: rtsp://viewer:${CAMERA_PASSWORD}@host/stream, reserved characters "
        "percent-encoded in it)")
    kind: SourceKind = Field(default=SourceKind.AUTO, description="how the source is read; auto infers it")
    its: ItsCameraRef | None = Field(default=None, description="ITS national CCTV camera this source comes from")
    fps: float = Field(default=5.0, gt=0, le=60, description="frames sampled per second")
    max_width: int = Field(default=1280, ge=64, le=7680, description="frames wider than this are scaled down "
                           "for the detector; boxes and geometry stay in the camera's own pixels")
    jpeg_quality: int = Field(default=80, ge=10, le=100)
    loop: bool = Field(default=False, description="restart a file source at its end (demo)")
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    zones: list[ZoneConfig] = Field(default_factory=list)
    calibration: CalibrationConfig | None = None
    scene: SceneConfig | None = Field(
        default=None, description="traffic scene; cameras without one get no traffic rules")

    def geometry(self) -> list[tuple[str, list[Point]]]:
        """The camera's zones, lines, regions and calibration points in image pixels, each with where it is in the
        configuration (`scene.lanes[away].polygon`)."""
        return list(_image_points(self, ""))

    def place_ids(self) -> set[str]:
        """The ids of the camera's zones, lanes, lines and regions: what an event's zone_id may name."""
        return set(_item_ids(self))

    def geometry_outside(self, width: int, height: int) -> list[str]:
        """Where the camera's geometry leaves a picture of this size (by more than GEOMETRY_MARGIN of it): drawn on
        another picture than the camera's own, it watches the wrong place."""
        margin_x, margin_y = GEOMETRY_MARGIN * width, GEOMETRY_MARGIN * height
        outside = []
        for where, points in self.geometry():
            far = [(x, y) for x, y in points if not (-margin_x <= x <= width + margin_x
                                                      and -margin_y <= y <= height + margin_y)]
            if far:
                outside.append(f"{where} reaches ({far[0][0]:g}, {far[0][1]:g})")
        return outside

    @field_validator("kind")
    @classmethod
    def verify_kind_reads_the_source(cls, kind: SourceKind, info: ValidationInfo) -> SourceKind:
        """MJPEG and still images are read over http(s), HLS also from a live playlist a local encoder writes: a
        video file read as a stream would end, and be read again from its start at every reconnection, and one
        polled as an image cannot be fetched at all. A source that starts with a ${NAME} is known only at start."""
        source = info.data.get("source")  # absent where it was refused itself
        if (kind not in (SourceKind.HLS, SourceKind.MJPEG, SourceKind.IMAGE) or source is None
                or source.startswith("${")):
            return kind
        scheme, separator, _ = source.partition("://")
        if separator and scheme.lower() in HTTP_SCHEMES:
            return kind
        if kind is SourceKind.HLS and not separator and source.lower().endswith(".m3u8"):
            return kind
        what = f"{scheme}://" if separator else "a file path or webcam index"
        playlist = " or from a local .m3u8 playlist" if kind is SourceKind.HLS else ""
        raise ValueError(f"{kind.value} is read over http(s){playlist}, not {what} (kind auto tells from the source "
                         "how to read it)")

    @model_validator(mode="after")
    def verify_clips_played_once_each(self) -> "CameraConfig":
        """An ITS camera of recorded clips plays each clip once, as a file, and then the next the API lists: read as
        a stream, each clip would end as a failure, and looped, its frames would be published again."""
        if self.its is None or not self.its.serves_clips:
            return self
        if self.kind not in (SourceKind.AUTO, SourceKind.FILE):
            raise ValueError(f"kind {self.kind.value}: an ITS camera of recorded clips (its.cctv_type "
                             f"{self.its.cctv_type}) is read as a file, one clip after another (kind auto or file)")
        if self.loop:
            raise ValueError(f"loop: an ITS camera of recorded clips (its.cctv_type {self.its.cctv_type}) plays each "
                             "clip once (looped, a clip's frames would be published again)")
        return self

    @model_validator(mode="after")
    def verify_position_whole(self) -> "CameraConfig":
        """The map places a camera by both; one alone leaves it off the map without a word."""
        if (self.lat is None) != (self.lon is None):
            raise ValueError("lat and lon go together: give both, or neither")
        return self

    @model_validator(mode="after")
    def verify_geometry_in_pixels(self) -> "CameraConfig":
        """Geometry within the picture's first pixel is in fractions of the picture (as labelling tools export it),
        not in the image pixels the analyzers read: such a zone or line watches no one."""
        items: dict[str, list[Point]] = {}  # a line's ends together: one end alone may well be at a corner
        for where, points in self.geometry():
            items.setdefault(where.rpartition(".")[0] or where, []).extend(points)
        for item, points in items.items():
            if all(0 <= value <= 1 for point in points for value in point):
                raise ValueError(f"{item} lies within the picture's first pixel: give image pixels, not fractions "
                                 "of the picture")
        return self

    @model_validator(mode="after")
    def verify_unique_zone_ids(self) -> "CameraConfig":
        require_unique([zone.id for zone in self.zones], "zone id")
        return self

    @model_validator(mode="after")
    def verify_zones_have_area(self) -> "CameraConfig":
        verify_zone_areas(self.zones, self.calibration)
        return self


class MetricsConfig(Frozen):
    host: ListenHost = "127.0.0.1"
    exporter_port: int = Field(
        default=9100, ge=0, le=65535, description="metrics sink (zones, detections, dead letters)")
    producer_port: int = Field(default=9101, ge=0, le=65535)
    inference_port: int = Field(default=9102, ge=0, le=65535)
    analytics_port: int = Field(default=9104, ge=0, le=65535)


class Config(Frozen):
    site: KafkaName = Field(default="cityguard", description="site name; prefixes consumer group ids and the "
                             "analytics state topic (letters, digits, . _ -)")
    broker: BrokerConfig = BrokerConfig()
    model: ModelConfig = ModelConfig()
    analytics: AnalyticsConfig = AnalyticsConfig()
    metrics: MetricsConfig = MetricsConfig()
    producer: ProducerConfig = ProducerConfig()
    alerting: AlertingConfig = AlertingConfig()
    console: ConsoleConfig = ConsoleConfig()
    cameras: list[CameraConfig] = Field(default_factory=list)
    base_dir: Path = Field(default=Path("."), exclude=True, description="directory relative paths are resolved from")

    @field_validator("cameras")
    @classmethod
    def verify_unique_camera_ids(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        require_unique([camera.id for camera in cameras], "camera id")
        return cameras

    @model_validator(mode="after")
    def verify_routes_name_known_places(self) -> "Config":
        """A route naming a camera or zone that does not exist never matches: its alerts would go by unnoticed."""
        known = {"cameras": {camera.id for camera in self.cameras},
                 "zones": set().union(*(camera.place_ids() for camera in self.cameras))}
        for route in self.alerting.routes:
            for field, ids in known.items():
                unknown = sorted(set(getattr(route.match, field)) - ids)
                if unknown:
                    raise ValueError(f"alerting.routes[{route.id}].match.{field} names unknown {field}: "
                                     f"{', '.join(unknown)}")
            # A route matches an incident of one of its cameras and of one of its zones: a zone of another camera
            # can never be both.
            if route.match.cameras and route.match.zones:
                places = set().union(*(self.camera(camera_id).place_ids() for camera_id in route.match.cameras))
                elsewhere = sorted(set(route.match.zones) - places)
                if elsewhere:
                    raise ValueError(f"alerting.routes[{route.id}].match.zones names zones that none of its "
                                     f"match.cameras has, so it never matches: {', '.join(elsewhere)}")
        return self

    @model_validator(mode="after")
    def verify_windows_hold_frames(self) -> "Config":
        """A window shorter than a zone camera's frame interval holds no frame now and then, and its zones then read
        UNKNOWN (camera down or stalling) although the camera sends every frame."""
        for camera in self.cameras:
            if camera.zones and self.analytics.window_seconds * camera.fps < 1:
                raise ValueError(f"analytics.window_seconds ({self.analytics.window_seconds:g}) is shorter than camera "
                                 f"{camera.id}'s frame interval ({1 / camera.fps:g} s at fps {camera.fps:g}): some "
                                 "of its zones' windows would hold no frame and read UNKNOWN; lengthen the window or "
                                 "raise the camera's fps")
        return self

    @model_validator(mode="after")
    def verify_crowd_state_fits(self) -> "Config":
        for camera in self.cameras:
            verify_crowd_state_size(self.analytics, camera.zones, camera.calibration is not None, camera.id)
        return self

    @model_validator(mode="after")
    def verify_zone_grids_fit(self) -> "Config":
        for camera in self.cameras:
            verify_zone_grids(camera.id, camera.zones, camera.calibration, self.analytics.movement)
        return self

    @model_validator(mode="after")
    def verify_tiled_cameras_exist(self) -> "Config":
        unknown = sorted(set(self.model.tiling.cameras) - {camera.id for camera in self.cameras})
        if unknown:
            raise ValueError(f"model.tiling.cameras names unknown cameras: {', '.join(unknown)}")
        return self

    def verify_frames_outlast_their_age(self) -> None:
        """ConfigError naming both settings where a frame sent by reference may be deleted from the frame store while
        inference still takes it (up to model.max_frame_age_s old): a backlog would reach frames already gone, which
        inference dead-letters instead of shedding. Checked only where frames travel by reference."""
        age_s, ttl_s = self.model.max_frame_age_s, self.producer.frame_store_ttl_s
        if age_s > ttl_s:
            raise ConfigError(f"model.max_frame_age_s ({age_s:g} s) is longer than producer.frame_store_ttl_s "
                              f"({ttl_s:g} s) with frames sent by reference: a backlog would reach frames already "
                              "deleted, which inference dead-letters; lower the one or raise the other")

    def camera(self, camera_id: str) -> CameraConfig:
        for camera in self.cameras:
            if camera.id == camera_id:
                return camera
        raise KeyError(f"camera {camera_id!r} is not configured")

    def resolve_path(self, value: str) -> str:
        """Paths in the file are relative to the file; URLs and absolute paths pass through."""
        if re.match(r"^[a-z][a-z0-9+.-]*://", value) or value.isdigit() or os.path.isabs(value):
            return value
        return str((self.base_dir / value).resolve())

    def group_id(self, stage: str) -> str:
        """Consumer group of a stage; all workers of one stage share it."""
        return f"{self.site}-{stage}"

    def bootstrap_servers(self) -> str | None:
        """KAFKA_BOOTSTRAP_SERVERS, else broker.bootstrap_servers; ConfigError naming the variable where its value is
        no list of servers, which the file's check cannot see."""
        servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not servers:
            return self.broker.bootstrap_servers
        try:
            return verify_bootstrap_servers(servers)
        except ValueError as exc:
            raise ConfigError(f"environment variable KAFKA_BOOTSTRAP_SERVERS: {exc}") from None


def model_fields_at(model: type[BaseModel], location: tuple) -> list[str]:
    """The field names of the settings model that holds `location` (an error's loc: field names, list indices, dict
    keys, and the tag by which a union of models names its member, an alert channel's kind) below `model`; [] where
    the path leaves the models."""
    models = [model]
    for part in location[:-1]:
        holders = [candidate for candidate in models if part in candidate.model_fields]
        if not holders:  # a list index or a dict key, the model is the item's; or a tag, which picks the member
            models = [candidate for candidate in models if part in _tags(candidate)] or models
            continue
        models = [arg for arg in _type_leaves(holders[0].model_fields[part].annotation)
                  if isinstance(arg, type) and issubclass(arg, BaseModel)]
        if not models:
            return []
    return list(models[0].model_fields)


def _tags(model: type[BaseModel]) -> set:
    """The values of a model's Literal fields: what a union of models tells its members apart by."""
    return {value for field in model.model_fields.values() if typing.get_origin(field.annotation) is Literal
            for value in typing.get_args(field.annotation)}


def _type_leaves(annotation) -> list:
    """An annotation's innermost types: list[X] -> X, dict[K, V] -> K, V, X | None -> X, None."""
    args = typing.get_args(annotation)
    return [leaf for arg in args for leaf in _type_leaves(arg)] if args else [annotation]


def validation_problems(exc: ValidationError, section: str = "", model: type[BaseModel] | None = None) -> list[str]:
    """`field.path: message` for each error; never the offending value (it may be a secret put in the wrong field).
    A check across fields names the fields in its own message. An unknown field of `model` (the validated settings
    model) names the field of that name's closest spelling, as a field renamed or mistyped usually is."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in (section, *error["loc"]) if part != "")
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "string_pattern_mismatch" and error["ctx"]["pattern"] in PATTERN_WORDS:
            message = f"should be {PATTERN_WORDS[error['ctx']['pattern']]}"
        if error["type"] == "extra_forbidden" and model is not None and error["loc"]:
            close = difflib.get_close_matches(str(error["loc"][-1]), model_fields_at(model, error["loc"]), n=1)
            if close:
                message += f" (did you mean {close[0]}?)"
        problems.append(f"{where}: {message}" if where else message)
    return problems


# Enough for a site file's mistakes; a YAML file that is no site file (another program's) has one for each key.
MAX_PROBLEMS_LISTED = 10


def first_problems(problems: list[str]) -> list[str]:
    """The first MAX_PROBLEMS_LISTED problems, and how many more there are."""
    more = len(problems) - MAX_PROBLEMS_LISTED
    return problems[:MAX_PROBLEMS_LISTED] + ([f"… and {more} more"] if more > 0 else [])


def parse_config(data: dict, base_dir: Path, source: str = "<config>") -> Config:
    try:
        return Config.model_validate({**data, "base_dir": base_dir})
    except ValidationError as exc:
        problems = [f"  {problem}" for problem in first_problems(validation_problems(exc, model=Config))]
        raise ConfigError(f"invalid configuration in {source}:\n" + "\n".join(problems)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping: PyYAML would keep the last one silently, so an operator's
    second `cameras:` block or a repeated `fps:` would replace the first without a word."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges a mapping whose keys the explicit ones may override
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)):
                continue  # unhashable keys are refused by the mapping itself
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_config(path: str | Path) -> Config:
    path = Path(path)
    return parse_config(read_config_file(path), path.resolve().parent, str(path))


def read_config_file(path: Path) -> dict:
    """The site file's mapping, as every command that reads or rewrites it sees it; ConfigError in one line."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"configuration {path} is not UTF-8 text (a binary file?)") from None
    except yaml.MarkedYAMLError as exc:
        problem = ", ".join(part for part in (exc.context, exc.problem) if part)
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"configuration {path} is not valid YAML: {problem}{where}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration {path} is not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"configuration {path} is nested too deeply to be a site configuration") from None
    if data is None:
        raise ConfigError(f"configuration {path} is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"configuration {path} must be a mapping at the top level")
    return data


DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"

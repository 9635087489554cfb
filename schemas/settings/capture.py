"""Capture configuration: how producers read cameras, report their health and find ITS cameras again."""
from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import Field, model_validator

from schemas.settings.base import EnvName, Frozen, worded


class SourceKind(str, Enum):
    """How a camera source is read; `auto` infers it from the source string (see producers.capture.source_kind)."""

    AUTO = "auto"
    FILE = "file"  # a video file or an http(s) MP4 (read once, or looped)
    HLS = "hls"  # http(s) .m3u8 live playlist
    MJPEG = "mjpeg"  # http(s) multipart/x-mixed-replace JPEG stream (IP cameras' MJPEG), timed by arrival
    RTSP = "rtsp"
    IMAGE = "image"  # a still-image URL fetched periodically (HTTP GET of a JPEG)
    WEBCAM = "webcam"  # a local capture device index


HTTP_SCHEMES = ("http", "https")
ITS_RECORDED_CLIPS = 2  # the cctvType of ITS cameras whose video comes as recorded MP4 clips, each replaced by a newer


class ItsCameraRef(Frozen):
    """What identifies a camera of the ITS national CCTV API, which has no stable id and hands out expiring URLs."""

    name: str = Field(min_length=1, description="cctvname exactly as the API returns it")
    lon: float = Field(ge=-180, le=180, description="coordx (WGS84 longitude)")
    lat: float = Field(ge=-90, le=90, description="coordy (WGS84 latitude)")
    road_type: Literal["ex", "its", "all"] = Field(
        description="the `type` it was discovered with: ex = expressway, its = national road, all = both")
    cctv_type: int = Field(default=1, ge=1, le=4, description="1 HLS, 2 MP4 file (recorded clips, each replaced by a "
                           "newer one: played in turn), 3 still image, 4 HLS over HTTPS")

    @property
    def serves_clips(self) -> bool:
        return self.cctv_type == ITS_RECORDED_CLIPS


MAX_SHARDS = 4096  # producer processes one site's cameras can be split across


class ProducerConfig(Frozen):
    """Settings of the frame producer processes (shared by all their cameras)."""

    shard_index: int = Field(default=0, ge=0, description="which share of the cameras this producer process reads, "
                             "0 to shard_count - 1 (`cityguard produce --shard-index` overrides it)")
    shard_count: int = Field(default=1, ge=1, le=MAX_SHARDS, description="producer processes the cameras are split "
                             "across (`cityguard produce --shard-count` overrides it)")
    reconnect_backoff_base_s: float = Field(default=0.5, gt=0, le=60, description="first wait after a failure")
    reconnect_backoff_max_s: float = Field(default=30.0, gt=0, le=3600, description="longest wait between attempts")
    reconnect_jitter: float = Field(
        default=0.2, ge=0, le=1, description="each wait is randomised by up to this fraction, so cameras that failed "
        "together do not reconnect in lockstep; never beyond reconnect_backoff_max_s")
    down_after_failures: int = Field(default=3, ge=1, le=1000,
                                     description="consecutive failed attempts before a reconnecting camera is down")
    open_timeout_s: float = Field(default=10.0, gt=0, le=300, description="longest wait to open a stream")
    read_timeout_s: float = Field(default=10.0, gt=0, le=300, description="longest wait for the next frame of a stream")
    rtsp_transport: Literal["tcp", "udp"] = Field(default="tcp", description="RTP transport asked of RTSP servers")
    hardware_decoding: Literal["off", "cuda"] = Field(
        default="off", description="decode video on an NVIDIA GPU (NVDEC); a machine without one, and codecs it cannot "
        "decode, fall back to the CPU")
    frozen_after_s: float = Field(default=10.0, gt=0, le=3600,
                                  description="identical frames for this long mark a camera stalled (frozen)")
    frozen_max_difference: float = Field(
        default=0.5, ge=0, le=255, description="mean absolute grey-level difference below which frames are identical")
    blank_after_s: float = Field(default=5.0, gt=0, le=3600, description="blank frames for this long mark it stalled")
    blank_max_stddev: float = Field(
        default=4.0, ge=0, le=128, description="frames whose grey-level standard deviation is below this are blank")
    black_max_mean: float = Field(default=16.0, ge=0, le=255, description="blank frames darker than this are black")
    queue_max_frames: int = Field(
        default=4, ge=1, le=1000, description="encoded frames buffered per camera; when the broker pushes back the "
        "oldest are dropped and counted")
    max_message_bytes: int = Field(
        default=1_000_000, ge=10_000, le=4 * 1024 * 1024,
        description="frames whose message would be larger go to the frame store and are sent as a reference "
        "(the upper bound is the Kafka clients' request limit in infra.kafka); `cityguard up` on the embedded broker "
        "sends every frame by reference unless the site file sets this")
    max_in_flight_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1_000_000, le=4 * 1024**3,
        description="frame bytes sent but not yet acknowledged by the broker; at this the sender takes no more frames "
        "and the per-camera queues drop their oldest (the Kafka client's own queue limit is a backstop at twice this)")
    frame_delivery_timeout_s: float = Field(
        default=30.0, ge=2, le=600, description="a frame the broker has not acknowledged within this is given up and "
        "counted as failed: a late frame is worthless to live analytics")
    frame_store_dir: str = Field(default="var/frames", min_length=1,
                                 description="frame store directory (relative to the configuration file)")
    frame_store_ttl_s: float = Field(default=600.0, gt=0, le=7 * 86400, description="stored frames expire after this")
    status_interval_s: float = Field(default=5.0, gt=0, le=3600,
                                     description="camera-status messages and fps figures are refreshed this often")
    its_api_url: str = Field(default="https://openapi.its.go.kr:9443/cctvInfo",
                             pattern=worded(r"^https?://", "an http:// or https:// URL"),
                             description="ITS national CCTV cctvInfo endpoint")
    its_api_key_env: EnvName = Field(default="ITS_API_KEY",
                                 description="environment variable holding the ITS API key (never the key itself)")
    its_timeout_s: float = Field(default=10.0, gt=0, le=120, description="longest wait for an ITS API answer")
    its_refresh_min_s: float = Field(
        default=10.0, ge=0, le=3600, description="ITS listings are reused this long when several cameras re-resolve")
    its_clip_poll_s: float = Field(
        default=5.0, gt=0, le=3600, description="an ITS camera of recorded clips (cctv_type 2) whose clip has played "
        "asks the API for a newer one after this, then at doubling intervals")
    its_clip_poll_max_s: float = Field(default=60.0, gt=0, le=3600,
                                       description="longest interval between those asks")
    its_clip_first_wait_s: float = Field(
        default=600.0, gt=0, le=86400, description="an ITS camera of recorded clips waiting for its second clip is up "
        "this long, then stalled; later waits may last twice its usual interval between clips plus its_clip_poll_max_s")
    its_max_response_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=1024**3,
                                        description="larger ITS API answers are refused (the API is unavailable)")
    its_allowed_local_hosts: list[str] = Field(
        default_factory=list, description="hosts that ITS stream URLs may name although they are loopback or "
        "link-local (a local relay); by default such URLs, like any scheme but rtsp/http/https, are refused")
    image_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=1024**3,
                                 description="a still-image camera's answer larger than this is refused")

    def stall_after_s(self, fps: float) -> float:
        """No frame for longer than this and a camera has stalled: the longest wait for a frame, or three frame
        intervals of a slow camera."""
        return max(self.read_timeout_s, 3 / fps)

    def report_silence_s(self) -> float:
        """No camera-status report for longer than this and the producer is gone (hung, or stopped): its cameras'
        last reported states say nothing any more."""
        return max(60.0, 3 * self.status_interval_s)

    @model_validator(mode="after")
    def verify_shard_index_below_count(self) -> ProducerConfig:
        if self.shard_index >= self.shard_count:
            raise ValueError(f"shard_index {self.shard_index} must be below shard_count {self.shard_count}")
        return self

    @model_validator(mode="after")
    def verify_in_flight_holds_a_message(self) -> ProducerConfig:
        if self.max_in_flight_bytes < self.max_message_bytes:
            raise ValueError(f"max_in_flight_bytes {self.max_in_flight_bytes} must be at least max_message_bytes "
                             f"{self.max_message_bytes}")
        return self

    @model_validator(mode="after")
    def verify_backoff_ordered(self) -> ProducerConfig:
        if self.reconnect_backoff_base_s > self.reconnect_backoff_max_s:
            raise ValueError("reconnect_backoff_base_s must not exceed reconnect_backoff_max_s")
        return self

    @model_validator(mode="after")
    def verify_clip_polls_ordered(self) -> ProducerConfig:
        if self.its_clip_poll_s > self.its_clip_poll_max_s:
            raise ValueError("its_clip_poll_s must not exceed its_clip_poll_max_s")
        return self

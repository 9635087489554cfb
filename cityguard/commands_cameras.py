"""`cityguard cameras discover|list`: find ITS national CCTV cameras and write them into a site configuration; show
the configured cameras with the live status the producers publish on the camera-status topic.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import yaml
from pydantic import ValidationError

from cityguard.arguments import POSITIVE
from schemas.settings.capture import ProducerConfig, SourceKind
from schemas.settings.config import Config, ConfigError, first_problems, read_config_file, validation_problems

# cctvType -> how the producer reads it (its-cctv-api.md)
CCTV_TYPE_KINDS = {1: SourceKind.HLS, 2: SourceKind.FILE, 3: SourceKind.IMAGE, 4: SourceKind.HLS}


def register(commands, add_command) -> None:
    cameras = commands.add_parser("cameras", help="discover ITS cameras, list configured cameras")
    actions = cameras.add_subparsers(dest="cameras_command", required=True)

    discover = add_command(actions, "discover", "add the ITS national CCTV cameras in a bounding box to a site "
                           "configuration (the API key is read from the environment)", run_discover,
                           needs_config=False)
    discover.add_argument("--config", type=Path, required=True, help="site configuration YAML to add cameras to "
                          "(created if missing)")
    discover.add_argument("--bbox", required=True, help="MINX,MINY,MAXX,MAXY in WGS84 (lon,lat,lon,lat)")
    discover.add_argument("--type", dest="road_type", choices=("ex", "its", "all"), default="all",
                          help="ex = expressways, its = national roads (default: all)")
    discover.add_argument("--cctv-type", type=int, choices=(1, 2, 3, 4), default=1,
                          help="1 live HLS (default), 2 MP4 clips (each replaced by a newer one), 3 still image, "
                          "4 HLS over HTTPS")
    discover.add_argument("--fps", type=float, default=5.0, help="sampling rate for new cameras")

    listing = add_command(actions, "list", "configured cameras with their live status", run_list)
    listing.add_argument("--wait", type=POSITIVE, default=3.0, help="seconds to read the camera-status topic")


def discovered_camera(camera, road_type: str, cctv_type: int, fps: float) -> dict:
    from producers.its_client import stable_camera_id

    ref = camera.ref(road_type, cctv_type)
    return {
        "id": stable_camera_id(camera.name, camera.lon, camera.lat), "name": camera.name, "source": camera.url,
        "kind": CCTV_TYPE_KINDS[ref.cctv_type].value, "fps": fps, "lat": camera.lat, "lon": camera.lon,
        "its": ref.model_dump(),
    }


def merge_cameras(existing: list, discovered: list[dict]) -> tuple[int, int]:
    """Adds the discovered cameras to `existing`, in place; ones already there get the fresh URL and reference and
    keep everything else (zones, calibration, fps, the comments around them). Returns the counts added and
    refreshed."""
    by_id = {camera["id"]: camera for camera in discovered}
    refreshed = 0
    for camera in existing:
        update = by_id.pop(camera.get("id"), None)
        if update is not None:
            for key in ("source", "its", "lat", "lon"):
                camera[key] = update[key]
            refreshed += 1
    existing.extend(by_id.values())
    return len(by_id), refreshed


def run_discover(args, _config) -> int:
    from ruamel.yaml.comments import CommentedSeq

    from producers.its_client import BoundingBox, ItsAuthError, ItsClient, ItsRequestError
    from sinks.console.scene_file import SceneError, SceneFile, as_yaml_nodes

    path: Path = args.config
    try:
        data = read_config_file(path) if path.exists() else {}
        settings = ProducerConfig.model_validate(data.get("producer", {}))
        bbox = BoundingBox.parse(args.bbox)
        client = ItsClient.from_config(settings)
        found = client.cctv_info(bbox, args.road_type, args.cctv_type)
    except ValidationError as exc:
        problems = first_problems(validation_problems(exc, "producer", ProducerConfig))
        raise ConfigError(f"invalid settings in {path}: {'; '.join(problems)}") from None
    except (OSError, yaml.YAMLError, ValueError, ItsAuthError, ItsRequestError) as exc:
        raise ConfigError(str(exc)) from None  # what was given: the site file, the key, the query
    # An API that cannot be reached or fails to answer (ItsApiError) is a failure while running: exit status 1.
    for camera in found:
        if camera.url_refused is not None:
            print(f"cityguard: warning: skipped {camera.name!r}: {camera.url_refused}", file=sys.stderr)
    discovered = list({camera["id"]: camera for camera in
                       (discovered_camera(camera, args.road_type, args.cctv_type, args.fps) for camera in found
                        if camera.url_refused is None)}.values())
    counts = {}

    def add_cameras(document) -> None:
        if not document.get("cameras"):
            document["cameras"] = CommentedSeq()  # in block style, as the cameras added to it
        counts["added"], counts["refreshed"] = merge_cameras(document["cameras"],
                                                             [as_yaml_nodes(camera) for camera in discovered])

    try:  # round-trip, comments and layout kept; never a configuration that cannot start
        saved = SceneFile(path).edit(add_cameras)
    except SceneError as exc:
        raise ConfigError(f"the result would not be valid, {path} left unchanged: {exc}") from None
    print(f"{path}: {len(found)} cameras found, {counts['added']} added, {counts['refreshed']} refreshed, "
          f"{len(saved.cameras)} configured")
    return 0


def latest_statuses(config: Config, wait_s: float) -> dict | None:
    """The newest CameraStatus per camera on the camera-status topic, or None when no broker is reachable."""
    from infra.kafka import broker_reachable, make_consumer
    from schemas import CameraStatus, SchemaError, decode

    servers = config.bootstrap_servers()
    if not servers or not broker_reachable(servers, timeout_s=min(wait_s, 5)):
        return None
    consumer = make_consumer(servers, None, config.broker.topics.camera_status)
    latest: dict[str, CameraStatus] = {}
    deadline = time.monotonic() + wait_s
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=300).values():
                for record in records:
                    try:
                        status = decode(record.value, CameraStatus)
                    except SchemaError:
                        continue
                    if status.camera_id not in latest or status.at >= latest[status.camera_id].at:
                        latest[status.camera_id] = status
    finally:
        consumer.close()
    return latest


def run_list(args, config: Config) -> int:
    statuses = latest_statuses(config, args.wait)
    reachable = statuses is not None
    statuses = statuses or {}
    now = time.time()
    print(f"{'id':<20} {'kind':<7} {'status':<13} {'fps':>5} {'age':>6}  name / place / reason")
    for camera in config.cameras:
        status = statuses.get(camera.id)
        if status is None:
            state, fps, age, reason = "unknown", "", "", ""
        else:
            stale = now - status.at > 3 * config.producer.status_interval_s
            state = status.state.value + (" (old)" if stale else "")
            fps = f"{status.fps:.1f}"
            age = "" if status.last_frame_age_s is None else f"{status.last_frame_age_s:.0f}s"
            reason = status.reason
        place = f" @ {camera.lat:.5f},{camera.lon:.5f}" if camera.lat is not None and camera.lon is not None else ""
        details = f"{camera.name}{place}" + (f" - {reason}" if reason else "")
        print(f"{camera.id:<20} {camera.kind.value:<7} {state:<13} {fps:>5} {age:>6}  {details}")
    if not statuses:
        servers = config.bootstrap_servers()
        print("(no live status: " + (f"no producer has reported to {servers} yet)" if reachable
                                     else f"the broker {servers} is not reachable)" if servers
                                     else "no broker configured: set KAFKA_BOOTSTRAP_SERVERS)"))
    return 0

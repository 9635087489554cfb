"""What the stages check when they start, against this machine's environment and files, gathered so that a command
can check them all before anything starts (`cityguard up` refuses them, `cityguard check-config` warns of them)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from infra import assets
from infra.listeners import is_loopback
from processors.analytics.ignore_filters import IgnoreFilterStore
from processors.inference.backends.registry import ModelCandidate, gpu_missing, model_candidates
from schemas.settings.base import env_value, source_with_variables
from schemas.settings.config import Config, ConfigError
from sinks.alerts.channels import build_channels
from sinks.alerts.service import receiver_token
from sinks.alerts.store import checked_store_url
from sinks.console.server import console_token


def start_problems(config: Config) -> list[str]:
    """One line per problem: the variables the cameras' sources name, asset names the model settings give that no
    catalogue entry has, a local model file or folder the inference stage could not load (model_file_problems), the
    alert channels' variables and sound files, the incident store's URL (its dialect and driver; nothing is connected
    to), a token for the Alertmanager receiver and the console where they listen beyond loopback, folders the settings
    name that are files, an ignore-filters file that cannot be read, a GPU backend on a machine without one, a
    KAFKA_BOOTSTRAP_SERVERS that names no servers, replicas the embedded broker cannot keep, and frames that `up` sends
    by reference deleted from the frame store before inference stops taking them."""
    problems = []

    def check(start_check: Callable, *args) -> None:
        try:
            start_check(*args)
        except ConfigError as exc:
            problems.append(str(exc))

    for camera in config.cameras:
        check(source_with_variables, camera.source, f"camera {camera.id}: source")
    for channel in config.alerting.channels:
        check(build_channels, [channel], config.resolve_path)
    check(checked_store_url, config.alerting)
    check(console_token, config, config.console.host)
    if not is_loopback(config.alerting.receiver.host):  # on loopback the receiver starts without one
        check(receiver_token, config.alerting.receiver)
    for field, value in (("model.weights", config.model.weights), ("model.offline_weights",
                                                                   config.model.offline_weights)):
        if value and assets.is_asset(value):
            try:
                assets.catalogued(value.removeprefix(assets.PREFIX))
            except assets.UnknownAssetError as exc:
                problems.append(f"{field}: {exc}")
    problems.extend(model_file_problems(config))
    for field, folder in (("model.registry", config.model.registry),
                          ("console.hard_negatives_dir", config.console.hard_negatives_dir),
                          ("producer.frame_store_dir", config.producer.frame_store_dir)):
        path = Path(config.resolve_path(folder)) if folder else None
        if path is not None and path.exists() and not path.is_dir():
            problems.append(f"{field}: {path} is a file, not a folder")
    if config.analytics.ignore_filters:
        try:
            IgnoreFilterStore(Path(config.resolve_path(config.analytics.ignore_filters))).load()
        except (OSError, ValueError) as exc:
            problems.append(f"analytics.ignore_filters: {exc}")
    missing_gpu = gpu_missing(config)
    if missing_gpu:
        problems.append(missing_gpu)
    try:
        servers = config.bootstrap_servers()
    except ConfigError as exc:  # KAFKA_BOOTSTRAP_SERVERS, from this environment
        problems.append(str(exc))
    else:
        if config.broker.replication_factor > 1 and not servers:
            problems.append(f"broker.replication_factor is {config.broker.replication_factor} but the embedded "
                            "broker is one node: set it to 1, or name a cluster (KAFKA_BOOTSTRAP_SERVERS)")
        if frames_by_reference(config, embedded_broker=not servers):
            check(config.verify_frames_outlast_their_age)
    return problems


def watches_nothing(config: Config) -> str | None:
    """Why the site reads no frames, where it has no cameras: not refused, as a site file may stand ready for cameras
    to come, but said, as the pipeline then runs with nothing to watch."""
    if config.cameras:
        return None
    return f"site {config.site!r} has no cameras (its cameras list is missing or empty): it watches nothing"


def its_without_key(config: Config) -> str | None:
    """Why the site's ITS cameras will stop, where the ITS API key is not set: not refused, as each plays from the URL
    written in the site file until that expires (hours), but then it cannot be renewed."""
    cameras = [camera.id for camera in config.cameras if camera.its is not None]
    if not cameras or env_value(config.producer.its_api_key_env, "producer.its_api_key_env") is not None:
        return None
    return (f"{config.producer.its_api_key_env} is not set: the ITS cameras ({', '.join(cameras)}) play from the URL "
            "in the site file until it expires, and cannot have it renewed (one of recorded clips plays only that "
            "clip)")


def frames_by_reference(config: Config, embedded_broker: bool) -> bool:
    """Whether the producer `cityguard up` starts sends every frame by reference (`produce --frames-by-reference`): on
    the embedded broker, which keeps every message in RAM for as long as it runs (a frame's JPEG in each would fill it
    within hours), and whose stages all run here, reading the one frame store. A site file that sets
    producer.max_message_bytes has chosen what travels in a message, and keeps it."""
    return embedded_broker and "max_message_bytes" not in config.producer.model_fields_set


def model_file_problems(config: Config) -> list[str]:
    """The models the settings name that the inference stage could not load here, among those it would try before the
    one it loads: a local file or folder that is not there, or a folder that holds no exported model; and a registry
    whose serving version cannot be told. Otherwise found only as the stage loads them. A registry version whose
    model is gone, holds no export or changed since it was registered is not among them: the stage serves the next
    that loads (passed_over_models)."""
    try:
        unusable, _ = model_search(config)
    except ValueError as exc:
        return [str(exc)]
    return [problem for candidate, problem in unusable if candidate.version is None]


def passed_over_models(config: Config) -> list[str]:
    """The model registry's versions the inference stage would pass over here, their model gone, holding no export or
    changed since it was registered, each with the model it serves instead; a registry that cannot be read is named
    by model_file_problems."""
    try:
        unusable, loaded = model_search(config)
    except ValueError:
        return []
    served = f"{loaded.version.version} serves" if loaded and loaded.version else "the configured model serves"
    return [f"{problem}: {served} instead until it is back" for candidate, problem in unusable if candidate.version]


def model_search(config: Config) -> tuple[list[tuple[ModelCandidate, str]], ModelCandidate | None]:
    """The models the inference stage would try here before the one it loads (model_candidates: a registry's serving
    version, the versions served before it, then the settings' models), each with why it is not loaded: a file or
    folder that is not there, a folder that holds no exported model (a settings' one is then loaded, and fails), or
    a registry version whose files changed since it was registered (ModelVersion.check_unchanged, as the stage);
    and the one it loads (None: none found here, or one ultralytics downloads by name or an asset not fetched yet,
    which are not looked for). ValueError naming the registry where it cannot tell which version serves."""
    unusable = []
    for candidate in model_candidates(config):
        if candidate.here is None:  # downloaded or fetched first
            return unusable, None
        if not candidate.here.exists():  # offline, model.weights is loaded instead, or tried
            unusable.append((candidate, f"{candidate.setting}: {candidate.here} does not exist"))
            continue
        marker = export_marker(candidate.here)
        if candidate.here.is_dir() and not any(path.is_file() for path in candidate.here.glob(marker)):
            unusable.append((candidate, f"{candidate.setting}: {candidate.here} is a folder without the "
                                        f"{marker} of a model ultralytics exported"))
            if candidate.version is not None:  # fails to load: the next one is served
                continue
        if candidate.version is not None:
            try:
                candidate.version.check_unchanged()
            except (ValueError, OSError) as exc:  # refused by the stage as it loads it: the next one is served
                unusable.append((candidate, f"{candidate.setting}: {exc}"))
                continue
        return unusable, candidate
    return unusable, None


EXPORT_METADATA = "metadata.yaml"  # what ultralytics writes into most models it exports to a folder
# The folder exports that carry their metadata elsewhere, by the end of the folder's name, each with the file (a
# pattern) ultralytics writes into it: a CoreML package's manifest, a Core AI asset's metadata.json, the ONNX model
# of an IMX or AMD Xilinx export.
EXPORT_MARKERS = {".mlpackage": "Manifest.json", ".aimodel": "metadata.json", "_imx_model": "*.onnx",
                  "_xilinx_model": "*.onnx"}


def export_marker(folder: Path) -> str:
    """The file (a pattern) that a folder named `folder` holds when ultralytics exported a model into it."""
    name = folder.name.lower()
    return next((marker for ending, marker in EXPORT_MARKERS.items() if name.endswith(ending)), EXPORT_METADATA)


def model_class_names(config: Config) -> tuple[Path, dict[int, str]] | None:
    """The model the inference stage would load here and its class names by id, where they can be read without
    loading it: from the metadata.yaml of a model exported to a folder (the offline OpenVINO model). None for a model
    file (a .pt holds its names inside the pickled model, which only torch reads), one downloaded first, or one not
    there."""
    try:
        _, loaded = model_search(config)
    except ValueError:  # named by the start checks
        return None
    if loaded is None:
        return None
    try:
        names = yaml.safe_load((loaded.here / EXPORT_METADATA).read_text(encoding="utf-8"))["names"]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, TypeError, KeyError):
        return None
    if not isinstance(names, dict) or not names or not all(isinstance(class_id, int) for class_id in names):
        return None
    return loaded.here, {class_id: str(name) for class_id, name in names.items()}

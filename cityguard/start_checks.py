"""What the stages check when they start, against this machine's environment and files, gathered so that a command
can check them all before anything starts (`cityguard up` refuses them, `cityguard check-config` warns of them)."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from infra import assets
from infra.listeners import is_loopback
from processors.analytics.ignore_filters import IgnoreFilterStore
from processors.inference.backends.registry import gpu_missing, names_a_local_model
from processors.inference.model_registry import ModelRegistry
from schemas.settings.base import source_with_variables
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
    KAFKA_BOOTSTRAP_SERVERS that names no servers, and replicas the embedded broker cannot keep."""
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
    return problems


def model_file_problems(config: Config) -> list[str]:
    """The model the inference stage would load here, where the settings name a file or folder on this machine that
    is not there, or a folder that holds no exported model: otherwise found only as the stage loads it. A registry's
    serving version is loaded instead of the settings; a name ultralytics downloads (yolo11n.pt) and an asset name
    (fetched when missing) name no local path."""
    model = config.model
    if model.registry:
        try:
            if ModelRegistry(Path(config.resolve_path(model.registry))).pointer()["version"]:
                return []
        except ValueError as exc:  # the stage cannot tell which version serves
            return [f"model.registry: {exc}"]
    local = []
    if os.environ.get("YOLO_OFFLINE") == "1" and model.offline_weights:
        if assets.is_asset(model.offline_weights):
            return []
        local.append(("model.offline_weights", Path(config.resolve_path(model.offline_weights))))
    if names_a_local_model(model.weights):
        local.append(("model.weights", Path(config.resolve_path(model.weights))))
    problems = []
    for field, path in local:
        if not path.exists():  # offline, model.weights is loaded instead, or tried
            problems.append(f"{field}: {path} does not exist")
            continue
        if path.is_dir() and not (path / "metadata.yaml").is_file():
            problems.append(f"{field}: {path} is a folder without the metadata.yaml of a model ultralytics exported")
        break  # the one loaded
    return problems

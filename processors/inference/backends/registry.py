"""Detector backends by name: the one place that maps `model.backend` to a detector class.

Each builder imports its backend when called, so a host only needs the runtime of the backend it uses (torch with
CUDA for gpu-nvjpeg, OpenVINO for openvino).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from infra import assets
from processors.inference.detector import Detector
from processors.inference.model_registry import ModelRegistry, ModelVersion
from schemas.settings.base import ConfigError

if TYPE_CHECKING:
    from schemas.settings.config import Config, ModelConfig

DetectorArgs = tuple[str, int, float, float, list[int] | None]  # weights, image size, confidence, iou, classes


def _ultralytics(args: DetectorArgs, model: ModelConfig) -> Detector:
    from processors.inference.backends.ultralytics import YoloDetector

    return YoloDetector(*args)


def _openvino(args: DetectorArgs, model: ModelConfig) -> Detector:
    from processors.inference.backends.openvino import OpenVinoDetector

    folder = Path(args[0])
    if not (folder.is_dir() and any(folder.glob("*.xml")) and (folder / "metadata.yaml").is_file()):
        raise ValueError(f"model.backend openvino needs an OpenVINO export folder (its .xml, .bin and metadata.yaml, "
                         f"as `cityguard model export --format openvino` writes it): {folder} is not one")
    return OpenVinoDetector(*args, performance_hint=model.openvino_hint)


GPU_MISSING = ("model.backend gpu-nvjpeg needs a CUDA GPU, and torch finds none on this machine: use the ultralytics "
               "or openvino backend here")


NVIDIA_DRIVER = Path("/proc/driver/nvidia")  # there once the kernel driver is loaded, GPU working or not


def gpu_missing(config: Config) -> str | None:
    """Why the configured backend cannot run on this machine at all, for the checks before anything starts: no
    NVIDIA driver, or a torch built without CUDA. A GPU that is not usable now under a loaded driver (one that
    faulted) is left to the worker, which is restarted until it is."""
    if config.model.backend != "gpu-nvjpeg":
        return None
    try:
        import torch
    except ImportError:
        return "model.backend gpu-nvjpeg needs PyTorch, which is not installed here"
    return GPU_MISSING if torch.version.cuda is None or not NVIDIA_DRIVER.exists() else None


def _gpu_nvjpeg(args: DetectorArgs, model: ModelConfig) -> Detector:
    import torch

    from processors.inference.backends.gpu_nvjpeg import GpuJpegDetector  # needs torch with CUDA

    if not torch.cuda.is_available():  # not a ConfigError: a GPU that faulted may come back after a restart
        raise RuntimeError(GPU_MISSING)
    return GpuJpegDetector(*args, largest_batch=model.max_batch_size)


BACKENDS: dict[str, Callable[[DetectorArgs, ModelConfig], Detector]] = {
    "ultralytics": _ultralytics,
    "openvino": _openvino,
    "gpu-nvjpeg": _gpu_nvjpeg,
}


def names_a_local_model(weights: str) -> bool:
    """Whether model.weights names a file or folder on this machine, rather than a model ultralytics knows by name
    (yolo11n.pt, downloaded when missing) or serves from a URL (Triton)."""
    return "://" not in weights and (os.path.sep in weights or weights.startswith("."))


class ModelCandidate(NamedTuple):
    setting: str  # the setting that names the model
    value: str  # as configured, or the registry version
    here: Path | None  # where it lies on this machine; None: an asset not fetched yet, a name or a URL
    version: ModelVersion | None = None  # a model registry version; None: a model the settings name


def registry_versions(config: Config) -> list[ModelVersion]:
    """The model registry's versions the inference stage tries before the settings' models: the serving version,
    then those promoted before it, newest first (a version whose folder is gone or whose record is damaged is not
    tried). Empty without a registry or a serving version; ValueError naming model.registry where the serving
    pointer or the serving version's record cannot be read, which the stage does not start with."""
    if config.model.registry is None:
        return []
    registry = ModelRegistry(Path(config.resolve_path(config.model.registry)))
    try:
        pointer = registry.pointer()
        serving = registry.get(pointer["version"]) if pointer["version"] else None
    except (KeyError, ValueError) as exc:
        raise ValueError(f"model.registry: {exc.args[0]}") from None
    if serving is None:
        return []
    earlier = [entry["version"] for entry in reversed(pointer["history"]) if entry["version"] != serving.version]
    versions = [serving]
    for version in dict.fromkeys(earlier):
        try:
            versions.append(registry.get(version))
        except (KeyError, ValueError, OSError):
            continue
    return versions


def model_candidates(config: Config) -> list[ModelCandidate]:
    """The models the inference stage tries, in its order: a model registry's serving version, then the versions
    promoted before it, newest first (registry_versions: a worker starting while the serving version does not load
    serves the newest that does, load_served_model), then the models the settings name (settings_candidates).
    Nothing is fetched or loaded to list them, so that the checks before anything starts read the stage's order."""
    served = [ModelCandidate(f"model.registry ({'serving ' if index == 0 else ''}{version.version})",
                             version.version, version.weights, version)
              for index, version in enumerate(registry_versions(config))]
    return [*served, *settings_candidates(config)]


def settings_candidates(config: Config) -> list[ModelCandidate]:
    """The models the settings name, in the order the inference stage tries them after a registry's versions:
    model.offline_weights under YOLO_OFFLINE=1 (passed over where it is not here, unless it is an asset), then
    model.weights."""
    def here(value: str, is_path: bool) -> Path | None:
        if assets.is_asset(value):
            try:
                return assets.asset_here(value.removeprefix(assets.PREFIX))
            except assets.UnknownAssetError:  # refused when fetched, and named by the checks before the start
                return None
        return Path(config.resolve_path(value)) if is_path else None

    model = config.model
    offline = os.environ.get("YOLO_OFFLINE") == "1" and model.offline_weights
    tried_first = [ModelCandidate("model.offline_weights", model.offline_weights,
                                  here(model.offline_weights, is_path=True))] if offline else []
    return [*tried_first, ModelCandidate("model.weights", model.weights,
                                         here(model.weights, names_a_local_model(model.weights)))]


def resolve_weights(config: Config) -> str:
    """The model the settings name that the inference stage loads: the first of settings_candidates that is here, or
    that is an asset, fetched into the cache when no mirror has it; else model.weights: a path not there, a name
    ultralytics downloads, a URL. A registry's versions come before it (load_served_model)."""
    candidates = settings_candidates(config)
    for candidate in candidates:
        if candidate.here is not None and candidate.here.exists():
            return str(candidate.here)
        if assets.is_asset(candidate.value):
            return assets.resolve(candidate.value)
    last = candidates[-1]
    return str(last.here) if last.here is not None else last.value


def create_detector(config: Config, weights: str | Path | None = None) -> Detector:
    """The configured backend (config.model.backend), built with the configured thresholds and the model `weights`
    (a registry version's, a candidate's), else the model the settings name (resolve_weights).

    The model runs at the lowest configured confidence; CameraDetectors then applies the per-class thresholds.
    """
    model = config.model
    build = BACKENDS[model.backend]  # the configuration accepts only these names (ModelConfig.backend)
    floor = min([model.confidence, *model.class_confidence.values()])
    named_by_settings = weights is None
    weights = resolve_weights(config) if weights is None else str(weights)
    try:
        return build((weights, model.image_size, floor, model.iou, model.classes), model)
    except ConnectionError as exc:
        if Path(weights).exists():
            raise
        # Not on disk: ultralytics tried to download a model it knows by name.
        raise not_downloaded(model, weights, named_by_settings) from exc


def not_downloaded(model: ModelConfig, weights: str, named_by_settings: bool) -> Exception:
    """The error for a model ultralytics knows by name that it could not download: with the way out where the
    settings named it and give offline weights."""
    if not (named_by_settings and model.offline_weights):
        hint = ""
    elif os.environ.get("YOLO_OFFLINE") == "1":
        # Offline, nothing will be downloaded however often the stage is started again: a mistake in the setting.
        return ConfigError(f"model {weights} is not on this machine, and model.offline_weights "
                           f"({model.offline_weights}) is not there either")
    else:
        hint = f"; without internet, YOLO_OFFLINE=1 uses model.offline_weights ({model.offline_weights})"
    return ConnectionError(f"model {weights} is not on this machine and could not be downloaded{hint}")


def download_settings_model(config: Config) -> None:
    """Fetches the model the settings name (resolve_weights), including one that ultralytics downloads by its name
    (yolo11n.pt) into the working directory, where the stages started from it load it: `up` does this before
    starting anything, so that a machine without internet says so once, in one line, instead of an inference worker
    failing on the download at every restart."""
    weights = resolve_weights(config)
    if Path(weights).exists() or Path(weights).name != weights:
        return  # here already, or a path or URL the start checks and the stage judge
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES, attempt_download_asset

    if weights not in GITHUB_ASSETS_NAMES:
        return
    try:
        attempt_download_asset(weights)
    except ConnectionError as exc:
        raise not_downloaded(config.model, weights, named_by_settings=True) from exc


def version_detector(config: Config, version: ModelVersion) -> Detector:
    """The configured backend with the model of registry version `version`, once its files are found to be those
    registered (ModelVersion.check_unchanged): one changed since would serve what no gate passed."""
    version.check_unchanged()
    return create_detector(config, version.weights)


class ServedModel(NamedTuple):
    detector: Detector
    version: ModelVersion | None  # the registry version loaded; None: the model the settings name
    not_loaded: list[tuple[ModelVersion, Exception]]  # registry versions tried before it, each with its failure

    @property
    def described(self) -> str:
        """Which model this is, and why it is not the registry's serving version where it is not."""
        if self.version is not None:
            what = f"{self.version.version} from the model registry ({self.version.weights})"
        else:
            what = f"{self.detector.name}, the configured model"
        if not self.not_loaded:
            return what + (", serving" if self.version is not None else "")
        serving, failure = self.not_loaded[0]
        return f"{what}: the serving version {serving.version} does not load ({type(failure).__name__}: {failure})"


def load_served_model(config: Config) -> ServedModel:
    """The model the inference stage serves here: the first of model_candidates that loads. A registry version that
    does not load (its weights damaged, changed or gone since it was promoted: version_detector) is passed over for
    the next; the settings' model is loaded as resolve_weights finds it. Where that fails too, the serving version's
    failure is raised: the one to mend."""
    not_loaded: list[tuple[ModelVersion, Exception]] = []
    for version in registry_versions(config):
        try:
            return ServedModel(version_detector(config, version), version, not_loaded)
        except Exception as exc:
            not_loaded.append((version, exc))
    try:
        return ServedModel(create_detector(config), None, not_loaded)
    except Exception:
        if not_loaded:
            raise not_loaded[0][1] from None
        raise

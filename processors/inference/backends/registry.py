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
    value: str  # as configured
    here: Path | None  # where it lies on this machine; None: an asset not fetched yet, a name or a URL


def model_candidates(config: Config) -> list[ModelCandidate]:
    """The models the settings name, in the order the inference stage tries them: model.offline_weights under
    YOLO_OFFLINE=1 (passed over where it is not here, unless it is an asset), then model.weights. Nothing is fetched
    to list them, so that the checks before anything starts read the order the stage loads by (resolve_weights). A
    model registry's serving version, where there is one, is loaded instead of all of them."""
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
    """The model the inference stage loads: the first of model_candidates that is here, or that is an asset, fetched
    into the cache when no mirror has it; else model.weights: a path not there, a name ultralytics downloads, a URL."""
    candidates = model_candidates(config)
    for candidate in candidates:
        if candidate.here is not None and candidate.here.exists():
            return str(candidate.here)
        if assets.is_asset(candidate.value):
            return assets.resolve(candidate.value)
    last = candidates[-1]
    return str(last.here) if last.here is not None else last.value


def create_detector(config: Config) -> Detector:
    """The configured backend (config.model.backend), built with the configured model and thresholds.

    The model runs at the lowest configured confidence; CameraDetectors then applies the per-class thresholds.
    """
    model = config.model
    build = BACKENDS[model.backend]  # the configuration accepts only these names (ModelConfig.backend)
    floor = min([model.confidence, *model.class_confidence.values()])
    weights = resolve_weights(config)
    try:
        return build((weights, model.image_size, floor, model.iou, model.classes), model)
    except ConnectionError as exc:
        if Path(weights).exists():
            raise
        # Not on disk: ultralytics tried to download a model it knows by name.
        if not model.offline_weights:
            hint = ""
        elif os.environ.get("YOLO_OFFLINE") == "1":
            # Offline, nothing will be downloaded however often the stage is started again: a mistake in the setting.
            raise ConfigError(f"model {weights} is not on this machine, and model.offline_weights "
                              f"({model.offline_weights}) is not there either") from exc
        else:
            hint = f"; without internet, YOLO_OFFLINE=1 uses model.offline_weights ({model.offline_weights})"
        raise ConnectionError(f"model {weights} is not on this machine and could not be downloaded{hint}") from exc

"""Offline model export: a wrapper around ultralytics export plus an int8 calibration set made from local footage.

int8 export needs calibration images; ultralytics' default (coco8) would be downloaded, which fails offline, so the
calibration set is built from the site's own sample frames (the right data to calibrate on anyway).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import yaml

from infra.files import replace_tree

FORMATS = ("openvino", "onnx", "engine")


def build_calibration_set(videos: list[str], out_dir: Path, frames: int = 100) -> Path:
    """Spreads `frames` frames over the videos into out_dir/images and writes the dataset yaml ultralytics reads."""
    images = out_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    per_video = max(1, frames // max(1, len(videos)))
    written = 0
    for video in videos:
        capture = cv2.VideoCapture(video)
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or per_video
        step = max(1, total // per_video)
        for index in range(0, min(total, step * per_video), step):
            capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            ok, image = capture.read()
            if not ok:
                break
            cv2.imwrite(str(images / f"{Path(video).stem}-{index:06d}.jpg"), image)
            written += 1
        capture.release()
    if written == 0:
        raise ValueError(f"no frames could be read from {videos}")
    names = coco_names()
    data = {"path": str(out_dir.resolve()), "train": "images", "val": "images", "names": names}
    dataset_yaml = out_dir / "calibration.yaml"
    dataset_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    return dataset_yaml


def coco_names() -> dict[int, str]:
    """The COCO class names, from the dataset file ultralytics ships (read without importing ultralytics, which
    takes seconds)."""
    package = importlib.util.find_spec("ultralytics").submodule_search_locations[0]
    return yaml.safe_load((Path(package) / "cfg" / "datasets" / "coco8.yaml").read_text())["names"]


def export_model(weights: str, export_format: str, image_size: int = 640, half: bool = False, int8: bool = False,
                 data: str | None = None, batch: int = 1, out_dir: Path | None = None) -> str:
    """Exports with ultralytics and returns the path of the exported model: beside the weights (a bare name such as
    yolo11n.pt where ultralytics found or downloaded it, a model built from a .yaml in the current directory), or in
    out_dir. Either way it is written in a temporary folder there and replaces an earlier export of the same name
    whole (replace_tree): a registry or an inference worker loading it meets the old export or the new one, and an
    export that fails or is interrupted leaves the old one."""
    if export_format not in FORMATS:
        raise ValueError(f"unknown format {export_format!r}; choose one of {', '.join(FORMATS)}")
    if int8 and data is None:
        raise ValueError("int8 export needs --data CALIB.yaml (make one with `cityguard model calibration-set`)")
    from ultralytics import YOLO

    model = YOLO(weights)
    source = Path(model.ckpt_path) if model.ckpt_path else None  # None: built from a .yaml
    if source is not None and source.suffix.lower() != ".pt":
        raise ValueError(f"{weights}: an export cannot be exported again; give PyTorch weights (.pt) or a model .yaml")
    folder = Path(out_dir) if out_dir is not None else source.parent if source else Path()
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".export.", suffix=".part") as staging:
        # Ultralytics writes an export beside the .pt it reads (a model built from a .yaml: in the current
        # directory), so it reads one in the temporary folder: a link to the weights, or the built model saved.
        staged = Path(staging) / (source.name if source else f"{Path(model.cfg).stem}.pt")
        if source:
            _link_or_copy(source, staged)
        else:
            model.save(staged)
        exported = Path(YOLO(staged).export(format=export_format, imgsz=image_size, half=half, int8=int8, data=data,
                                            batch=batch, dynamic=False))
        target = folder / exported.name
        replace_tree(target, lambda path: shutil.move(exported, path))
    return str(target)


def _link_or_copy(source: Path, target: Path) -> None:
    """A second name for `source` at `target`, or a copy where it cannot have one (another disk)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)

"""Offline export: a calibration set from local footage, and a real ultralytics export that the backends load."""
import shutil

import onnx
import pytest
import yaml

from cityguard.cli import main
from processors.inference.export import export_model
from tests.conftest import CAR_CLIP, ONNX_MODEL, VTEST, files_limited_to


def test_calibration_set_from_local_videos(tmp_path):
    assert main(["model", "calibration-set", str(VTEST), str(CAR_CLIP), "--out", str(tmp_path), "--frames", "10"]) == 0
    data = yaml.safe_load((tmp_path / "calibration.yaml").read_text())
    images = sorted((tmp_path / "images").glob("*.jpg"))
    assert len(images) == 10 and {p.name.split("-")[0] for p in images} == {"vtest", "car"}
    assert data["names"][0] == "person" and data["train"] == "images"


def test_int8_without_calibration_data_is_refused():
    with pytest.raises(ValueError, match="--data"):
        export_model("yolo11n.yaml", "openvino", int8=True)


def test_an_export_beside_the_weights_that_fails_leaves_the_earlier_export(tmp_path, monkeypatch):
    from ultralytics import YOLO

    weights = tmp_path / "models" / "site.pt"
    weights.parent.mkdir()
    YOLO("yolo11n.yaml").save(weights)  # no .pt weights exist offline: the architecture, random init
    (tmp_path / "models" / "site.onnx").write_bytes(b"an earlier export")
    with files_limited_to(1 << 20), pytest.raises(OSError, match="too large"):  # the disk fills up mid-export
        export_model(str(weights), "onnx", image_size=64)
    assert (tmp_path / "models" / "site.onnx").read_bytes() == b"an earlier export"
    assert sorted(path.name for path in (tmp_path / "models").iterdir()) == ["site.onnx", "site.pt"]
    assert export_model(str(weights), "onnx", image_size=64) == str(tmp_path / "models" / "site.onnx")
    assert onnx.load(tmp_path / "models" / "site.onnx").graph.node  # the new export, whole
    assert sorted(path.name for path in (tmp_path / "models").iterdir()) == ["site.onnx", "site.pt"]
    monkeypatch.chdir(tmp_path)  # a model built from a .yaml is exported into the current directory
    assert export_model("yolo11n.yaml", "onnx", image_size=64) == "yolo11n.onnx"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["models", "yolo11n.onnx"]


def test_an_export_given_as_the_weights_is_refused_naming_it(tmp_path):
    shutil.copyfile(ONNX_MODEL, tmp_path / "site.onnx")
    with pytest.raises(ValueError, match=r"site.onnx: an export cannot be exported again; give PyTorch weights"):
        export_model(str(tmp_path / "site.onnx"), "openvino")
    assert [path.name for path in tmp_path.iterdir()] == ["site.onnx"]


@pytest.mark.slow
def test_onnx_export_loads_in_the_detector(tmp_path, monkeypatch):
    from processors.inference.backends.ultralytics import YoloDetector
    from tests.conftest import video_frames

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "yolo11n.onnx").write_bytes(b"an earlier export")
    # No .pt weights exist offline: export the architecture (random init) to prove the export path end to end.
    path = export_model("yolo11n.yaml", "onnx", image_size=320, out_dir=tmp_path / "models")
    assert path == str(tmp_path / "models" / "yolo11n.onnx") and not (tmp_path / "yolo11n.onnx").exists()
    assert [entry.name for entry in (tmp_path / "models").iterdir()] == ["yolo11n.onnx"]  # replaced whole
    result = YoloDetector(path, image_size=320).detect(video_frames(VTEST, 1))
    assert len(result) == 1 and result[0].xyxy.shape[1] == 4

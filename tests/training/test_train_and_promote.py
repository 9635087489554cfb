"""The whole loop on real models, through the CLI: a dataset from the demo clip, one epoch from a model definition
(random initialisation: tests the loop, not accuracy), the registry, the gate both ways, and roll-back."""
import json

import pytest

from cityguard.cli import main
from processors.inference.model_registry import ModelRegistry
from tests.conftest import OFFLINE_MODEL, ONNX_MODEL, REPO
from tests.test_cli_errors import assert_one_line_error_printed

DEMO = REPO / "configs" / "demo.yaml"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Eight frames of the campus clip, pre-labelled by the shared int8 model, split by time."""
    root = tmp_path_factory.mktemp("dataset")
    assert main(["dataset", "build", "--config", str(DEMO), "--out", str(root / "site"), "--false-alarms",
                 str(root / "none"), "--background", "8", "--block-seconds", "10", "--val-fraction", "0.25"]) == 0
    return root / "site"


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    registry = tmp_path_factory.mktemp("registry")
    assert main(["model", "train", "--data", str(dataset / "data.yaml"), "--base", "yolo11n.yaml", "--epochs", "1",
                 "--imgsz", "96", "--batch", "4", "--device", "cpu", "--workers", "0", "--freeze", "3",
                 "--augment", "mosaic=0", "--runs", str(registry.parent / "runs"), "--name", "one-epoch",
                 "--registry", str(registry)]) == 0
    return registry


def test_one_epoch_registers_a_candidate_with_its_data_settings_and_curves(trained, dataset):
    run = json.loads((trained / "v1" / "run.json").read_text())
    assert (trained / "v1" / "best.pt").exists()
    assert run["kind"] == "trained" and run["parent"] is None and len(run["data_hash"]) == 64
    assert run["settings"]["freeze"] == 3 and run["settings"]["augmentation"] == {"mosaic": 0.0}
    assert run["settings"]["image_size"] == 96 and run["base_weights"] == "yolo11n.yaml"
    assert run["metrics"]["epoch"] == 1 and "metrics/mAP50(B)" in run["metrics"]
    assert run["data"] == str((dataset / "data.yaml").resolve())
    curves = trained.parent / "runs" / "one-epoch" / "curves.png"
    assert curves.read_bytes().startswith(b"\x89PNG")
    assert not (trained / "serving.json").exists()  # a candidate, not yet serving


def test_resuming_a_finished_run_says_so(trained, capsys):
    run = str(trained.parent / "runs" / "one-epoch")
    assert main(["model", "train", "--resume", run, "--registry", str(trained)]) == 2
    assert "training to 1 epochs is finished, nothing to resume" in capsys.readouterr().err


def test_training_again_into_a_registered_run_is_refused(trained, dataset, capsys):
    assert main(["model", "train", "--data", str(dataset / "data.yaml"), "--base", "yolo11n.yaml", "--runs",
                 str(trained.parent / "runs"), "--name", "one-epoch", "--registry", str(trained)]) == 2
    assert_one_line_error_printed(capsys, "one-epoch is the training run v1 registered from", "give a new --name")


def test_the_gate_refuses_the_untrained_candidate_and_promotes_the_real_model(trained, dataset, capsys):
    registry, val = str(trained), str(dataset / "images" / "val")
    out = trained.parent / "gates"
    gate = ["--config", str(DEMO), "--images", val, "--registry", registry, "--false-alarms", str(out / "none")]
    # serving: the shared COCO model; the one-epoch candidate finds nobody and must be refused
    assert main(["model", "register", str(OFFLINE_MODEL), "--serve", "--registry", registry]) == 0
    capsys.readouterr()
    # the validation labels are the shared model's own pre-labels, which no operator has reviewed
    assert main(["model", "gate", "v1", *gate, "--out", str(out / "v1")]) == 2
    assert_one_line_error_printed(capsys, "images/val: ", "carry only the detector's pre-labels", "--allow-unreviewed")
    assert not (out / "v1").exists()
    assert main(["model", "gate", "v1", *gate, "--promote", "--allow-unreviewed", "--out", str(out / "v1")]) == 1
    assert "warning: " in capsys.readouterr().err
    refused = json.loads((out / "v1" / "gate.json").read_text())
    assert not refused["promoted"] and refused["reason"].startswith("refused: mAP@0.5 0.000 below serving")
    assert json.loads((trained / "serving.json").read_text())["version"] == "v2"
    # the other way round: the one-epoch model serving (set here without the gate, which --serve refuses now that a
    # model serves), the real model as candidate is promoted; a model registered already is not registered again
    assert main(["model", "register", str(trained / "v1" / "best.pt"), "--serve", "--registry", registry]) == 2
    capsys.readouterr()
    assert main(["model", "register", str(trained / "v1" / "best.pt"), "--registry", registry]) == 2
    assert_one_line_error_printed(capsys, "best.pt is registered already, as v1")
    ModelRegistry(trained).promote("v1", "the one-epoch model serving, for the test")
    # it finds none of the labelled people: no figure of the real model could be below its zeros
    assert main(["model", "gate", "v2", *gate, "--promote", "--allow-unreviewed", "--out", str(out / "v2")]) == 1
    assert "the set gives the serving model nothing to compare against" in capsys.readouterr().out
    assert json.loads((trained / "serving.json").read_text())["version"] == "v1"
    # another detector serving, which finds some of the people
    assert main(["model", "register", str(ONNX_MODEL), "--no-load-check", "--registry", registry]) == 0
    ModelRegistry(trained).promote("v3", "another model serving, for the test")
    assert main(["model", "gate", "v2", *gate, "--promote", "--allow-unreviewed", "--out", str(out / "v2")]) == 0
    report = json.loads((out / "v2" / "gate.json").read_text())
    assert report["passed"] and report["promoted"] and report["reason"].startswith("passed: ")
    assert "Promoted: v2 serves now." in (out / "v2" / "gate.md").read_text()
    assert json.loads((trained / "serving.json").read_text())["version"] == "v2"
    assert main(["model", "rollback", "--registry", registry]) == 0
    assert json.loads((trained / "serving.json").read_text())["version"] == "v3"
    capsys.readouterr()
    assert main(["model", "list", "--registry", registry]) == 0
    assert "* v3" in capsys.readouterr().out

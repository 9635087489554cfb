"""The model registry's commands: --serve only for a site's first model, and a damaged serving pointer stops a
start in one line."""
from __future__ import annotations

import json
import shutil

import pytest

from cityguard.cli import main
from processors.inference.model_registry import ModelRegistry
from tests.conftest import OFFLINE_MODEL, pipeline_config
from tests.test_cli_errors import assert_one_line_error, assert_one_line_error_printed, cityguard


def weights(tmp_path, name: str):
    path = tmp_path / name
    path.write_bytes(name.encode())
    return path


def test_register_serve_is_refused_while_a_model_serves(tmp_path, capsys):
    registry = tmp_path / "registry"
    assert main(["model", "register", str(OFFLINE_MODEL), "--serve", "--note", "the shared COCO model",
                 "--registry", str(registry)]) == 0
    capsys.readouterr()
    assert main(["model", "register", str(weights(tmp_path, "second.pt")), "--serve",
                 "--registry", str(registry)]) == 2
    assert_one_line_error_printed(capsys, "v1 is serving", "model gate <version>")
    assert ModelRegistry(registry).versions() == ["v1"]  # nothing registered by the refused command
    assert json.loads((registry / "serving.json").read_text())["version"] == "v1"
    assert main(["model", "list", "--registry", str(registry)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("- the shared COCO model")


def test_register_serve_is_refused_when_another_model_was_served_while_it_was_checked(tmp_path, monkeypatch, capsys):
    """Two sites' first models registered at once: each found none serving before its load check, and the second
    to finish would replace the first without the gate."""
    registry = ModelRegistry(tmp_path / "registry")
    registry.register(weights(tmp_path, "first.pt"), {})

    def loaded_while_the_first_is_served(config, confidence, path):
        registry.promote("v1", "registered as serving without the gate")

    monkeypatch.setattr("cityguard.evaluation.runners.evaluation_detector", loaded_while_the_first_is_served)
    assert main(["model", "register", str(weights(tmp_path, "second.pt")), "--serve",
                 "--registry", str(registry.root)]) == 2
    assert_one_line_error_printed(capsys, "v2 was not promoted: it was compared with no serving model, and v1 serves",
                                  "stays registered", "model gate v2")
    assert registry.serving().version == "v1" and registry.versions() == ["v1", "v2"]


def test_a_file_that_is_not_a_loadable_model_is_not_registered(tmp_path, capsys):
    registry = tmp_path / "registry"
    assert main(["model", "register", str(weights(tmp_path, "junk.pt")), "--serve", "--registry", str(registry)]) == 2
    assert_one_line_error_printed(capsys, "junk.pt cannot be loaded as a model by the ultralytics backend",
                                  "--no-load-check")
    assert ModelRegistry(registry).versions() == [] and not (registry / "serving.json").exists()
    assert main(["model", "register", str(weights(tmp_path, "junk.pt")), "--no-load-check",
                 "--registry", str(registry)]) == 0  # its owner says it is built for other hardware
    assert ModelRegistry(registry).versions() == ["v1"]


def test_an_inference_start_with_a_number_for_the_serving_version_fails_in_one_line(tmp_path):
    registry = ModelRegistry(tmp_path / "registry")
    registry.register(weights(tmp_path, "model.pt"), {})
    (registry.root / "serving.json").write_text('{"version": 3, "history": []}')
    config, path = pipeline_config(tmp_path, "pointer", "127.0.0.1:1", model={"registry": str(registry.root)})
    assert_one_line_error(cityguard("infer", "--config", str(path)), 2, "serving.json: field 'version'")


def test_a_training_that_fails_before_its_first_checkpoint_leaves_no_run_folder(tmp_path, monkeypatch, capsys):
    def fails(data, settings, runs, name, checkpoint=False):
        if checkpoint:  # ultralytics got as far as saving an epoch: the run can be resumed
            (runs / name / "weights").mkdir(parents=True)
            (runs / name / "weights" / "last.pt").write_bytes(b"epoch 1")
        raise RuntimeError(f"{data}: no images")

    monkeypatch.setattr("cityguard.training.train.train", fails)
    (tmp_path / "data.yaml").write_text("path: .\n")
    command = ["model", "train", "--data", str(tmp_path / "data.yaml"), "--runs", str(tmp_path / "runs"),
               "--registry", str(tmp_path / "registry"), "--base", "yolo11n.yaml"]
    assert main([*command, "--name", "first"]) == 1
    assert_one_line_error_printed(capsys, "data.yaml: no images")
    assert not (tmp_path / "runs" / "first").exists()
    monkeypatch.setattr("cityguard.training.train.train",
                        lambda *args: fails(*args, checkpoint=True))
    assert main([*command, "--name", "second"]) == 1
    assert (tmp_path / "runs" / "second" / "cityguard-train.json").exists()  # what --resume reads


def test_training_into_an_existing_run_folder_is_refused_before_training(tmp_path, monkeypatch, capsys):
    """Ultralytics would train into it: over the weights and curves a registered version's record points to, or
    mixed with an earlier run's files."""
    trained = []
    monkeypatch.setattr("cityguard.training.train.train", lambda *args: trained.append(args))
    (tmp_path / "data.yaml").write_text("path: .\n")
    runs, registry = tmp_path / "runs", ModelRegistry(tmp_path / "registry")
    command = ["model", "train", "--data", str(tmp_path / "data.yaml"), "--runs", str(runs),
               "--registry", str(registry.root), "--base", "yolo11n.yaml"]
    (runs / "interrupted" / "weights").mkdir(parents=True)
    (runs / "interrupted" / "weights" / "last.pt").write_bytes(b"epoch 3")
    assert main([*command, "--name", "interrupted"]) == 2
    assert_one_line_error_printed(capsys, f"{runs / 'interrupted'} exists",
                                  f"give a new --name, or --resume {runs / 'interrupted'}")
    registry.register(weights(tmp_path, "best.pt"), {"kind": "trained", "run_dir": str((runs / "done").resolve())})
    (runs / "done").mkdir()
    (runs / "done" / "results.csv").write_text("epoch,metrics/mAP50(B)\n1,0.5\n")
    assert main([*command, "--name", "done"]) == 2
    assert_one_line_error_printed(capsys, f"{runs / 'done'} is the training run v1 registered from",
                                  "give a new --name")
    assert trained == [] and registry.versions() == ["v1"]
    assert sorted(path.name for path in runs.rglob("*")) == ["done", "interrupted", "last.pt", "results.csv",
                                                             "weights"]  # no run record written into either


def test_a_training_with_no_registry_to_register_in_is_refused_before_training(tmp_path, monkeypatch, capsys):
    trained = []
    monkeypatch.setattr("cityguard.training.train.train", lambda *args: trained.append(args))
    (tmp_path / "data.yaml").write_text("path: .\n")
    config, path = pipeline_config(tmp_path, "unregistered", "127.0.0.1:1")
    assert main(["model", "train", "--config", str(path), "--data", str(tmp_path / "data.yaml"), "--runs",
                 str(tmp_path / "runs"), "--base", "yolo11n.yaml"]) == 2
    assert_one_line_error_printed(capsys, "set model.registry in the configuration, or pass --registry")
    assert trained == [] and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("base", "says"), [
    ("yolo11n.pt", "--base yolo11n.pt would be downloaded, and YOLO_OFFLINE=1 says this machine has no internet"),
    (str(OFFLINE_MODEL), "training starts from PyTorch weights (.pt) or a model .yaml, not an export"),
])
def test_a_base_that_cannot_be_trained_from_here_is_refused_before_training(tmp_path, capsys, base, says):
    (tmp_path / "data.yaml").write_text("path: .\n")
    assert main(["model", "train", "--data", str(tmp_path / "data.yaml"), "--base", base, "--runs",
                 str(tmp_path / "runs"), "--registry", str(tmp_path / "registry")]) == 2
    assert_one_line_error_printed(capsys, says)
    assert not (tmp_path / "runs").exists()


def test_a_roll_back_to_a_pruned_version_fails_in_one_line_and_the_site_still_starts(tmp_path, capsys):
    registry = ModelRegistry(tmp_path / "registry")
    for name in ("a.pt", "b.pt"):
        registry.register(weights(tmp_path, name), {})
    registry.promote("v1", "first")
    registry.promote("v2", "gate passed")
    shutil.rmtree(registry.root / "v1")
    capsys.readouterr()
    assert main(["model", "rollback", "--registry", str(registry.root)]) == 2
    assert_one_line_error_printed(capsys, "cannot roll back: model version 'v1' is not in", "v2 still serves")
    assert registry.serving().version == "v2"


def test_a_damaged_run_record_stops_the_listing_in_one_line_naming_it(tmp_path, capsys):
    registry = ModelRegistry(tmp_path / "registry")
    registry.register(weights(tmp_path, "a.pt"), {})
    (registry.root / "v1" / "run.json").write_text("{}")
    capsys.readouterr()
    assert main(["model", "list", "--registry", str(registry.root)]) == 2
    assert_one_line_error_printed(capsys, f"{registry.root / 'v1' / 'run.json'}: field 'weights'")


def test_a_version_whose_files_changed_since_it_was_registered_is_not_gated(tmp_path, capsys):
    """The stage would not serve it: a report on it would pass or refuse a model nobody can promote."""
    registry = ModelRegistry(tmp_path / "registry")
    model = registry.register(weights(tmp_path, "a.pt"), {})
    model.weights.write_bytes(b"retrained in place")
    (tmp_path / "images").mkdir()
    capsys.readouterr()
    assert main(["model", "gate", "v1", "--registry", str(registry.root), "--images", str(tmp_path / "images"),
                 "--out", str(tmp_path / "gate")]) == 2
    assert_one_line_error_printed(capsys, f"{model.weights}: the files of v1 changed since it was registered")
    assert not (tmp_path / "gate").exists()

"""User mistakes end in one line on stderr and an exit status (2: what the user gave), not a traceback."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from cityguard.cli import run_reporting_errors
from schemas.settings.config import Config, ConfigError
from tests.conftest import OFFLINE_MODEL, REPO, VTEST


def cityguard(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cityguard", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)


def assert_one_line_error(result: subprocess.CompletedProcess, status: int, *fragments: str) -> None:
    assert result.returncode == status, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert all(fragment in result.stderr for fragment in fragments), result.stderr


def assert_one_line_error_printed(capsys, *fragments: str) -> None:
    """The same for a command run in this process (`cityguard.cli.main`), its output captured by pytest."""
    error = capsys.readouterr().err
    assert error.startswith("cityguard: error: ") and error.count("\n") == 1, error
    assert "Traceback" not in error and all(fragment in error for fragment in fragments), error


@pytest.mark.parametrize(("content", "says"), [
    (b"\x7fELF\x02\x01\x01\x00\xd0\xff\xfe binary", "is not UTF-8 text"),
    (("cameras: " + "[" * 5000 + "]" * 5000 + "\n").encode(), "nested too deeply"),
    (b"", "is empty"),
    (b"- id: campus\n- id: gate\n", "must be a mapping at the top level"),
    (b"cameras: [unclosed\n", "is not valid YAML"),
    (b"cameras:\n  - id: campus\n    jpeg_quality: 500\n", "cameras.0.jpeg_quality"),
    (b"cameras:\n  - id: campus\n    source: a.mp4\n    jpeg_quality: 500\n    fps: 0\n",
     "site.yaml: cameras.0.fps: Input should be greater than 0; cameras.0.jpeg_quality"),
    (b"cameras:\n  - id: campus\n    source: a.mp4\n    scene:\n      thresholds: {wrong_way_min_distance_px: 80}\n",
     "wrong_way_min_distance_px is no longer read: give wrong_way_min_distance_diagonals"),
    # Another program's YAML: a problem for each of its keys, the first ten listed.
    ("".join(f"key{number}: {number}\n" for number in range(60)).encode(),
     "site.yaml: key0: Extra inputs are not permitted; key1: Extra inputs are not permitted; key2: Extra inputs are "
     "not permitted; key3: Extra inputs are not permitted; key4: Extra inputs are not permitted; key5: Extra inputs "
     "are not permitted; key6: Extra inputs are not permitted; key7: Extra inputs are not permitted; key8: Extra "
     "inputs are not permitted; key9: Extra inputs are not permitted; … and 50 more\n"),
], ids=["binary", "deeply-nested", "empty", "top-level-list", "bad-yaml", "invalid-field", "two-invalid-fields",
        "renamed-field", "not-a-site-file"])
def test_a_bad_configuration_file_is_one_line_and_status_2(tmp_path, content, says):
    path = tmp_path / "site.yaml"
    path.write_bytes(content)
    assert_one_line_error(cityguard("check-config", "--config", str(path)), 2, "cityguard: error: ", says)


def test_a_missing_configuration_file(tmp_path):
    result = cityguard("check-config", "--config", str(tmp_path / "nope.yaml"))
    assert_one_line_error(result, 2, "cannot read configuration", "nope.yaml")


def test_a_wrong_images_folder_for_count_evaluation(tmp_path):
    truth = tmp_path / "truth.csv"
    truth.write_text("a.jpg,3\n")
    result = cityguard("eval", "counts", "--images", str(tmp_path / "nonexistent"), "--truth", str(truth))
    assert_one_line_error(result, 2, "cityguard eval counts: error: argument --images: no folder ", "nonexistent")


def test_a_usage_mistake_is_one_line_naming_the_help():
    result = cityguard("eval", "counts", "--images", "tests")
    assert_one_line_error(result, 2, "required: --truth", "cityguard eval counts --help")


def test_debug_shows_the_traceback(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_bytes(b"")
    config = ["--config", str(path)]
    for args in (["--debug", "check-config", *config], ["check-config", "--debug", *config]):
        result = cityguard(*args)
        assert result.returncode != 0 and "Traceback" in result.stderr and "is empty" in result.stderr


def resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


@pytest.mark.skipif(resolves("github.com"), reason="a connected machine would download the model")
def test_a_model_that_cannot_be_downloaded_names_the_offline_switch(tmp_path):
    clip = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=5",
                    "-t", "1", str(clip)], check=True, timeout=60)
    (tmp_path / "site.yaml").write_text("cameras:\n  - id: cam\n    source: clip.mp4\n")
    environment = {name: value for name, value in os.environ.items() if name != "YOLO_OFFLINE"}
    result = subprocess.run([sys.executable, "-m", "cityguard", "replay", "--config", str(tmp_path / "site.yaml"),
                             "--camera", "cam", str(clip)], cwd=tmp_path, env=environment, capture_output=True,
                            text=True, timeout=120, check=False)
    assert_one_line_error(result, 1, "model yolo11n.pt is not on this machine and could not be downloaded",
                          "YOLO_OFFLINE=1 uses model.offline_weights (asset:yolo11n_int8_openvino_model)")


def test_an_error_the_project_raises_speaks_for_itself_and_a_librarys_or_a_builtins_keeps_its_name(tmp_path, capsys):
    import numpy as np

    from cityguard.replay import find_camera

    assert run_reporting_errors(lambda: find_camera(Config(), "gate"), debug=False) == 2
    assert capsys.readouterr().err == ("cityguard: error: camera 'gate' is not in the site configuration "
                                       "(cameras: )\n")
    assert run_reporting_errors(lambda: np.linalg.inv(np.zeros((2, 2))), debug=False) == 2
    assert capsys.readouterr().err == ("cityguard: error: LinAlgError: Singular matrix (--debug shows the "
                                       "traceback)\n")
    # A bug in the project's own code, raised by a built-in it called: the name stays.
    module = tmp_path / "unpacking.py"
    module.write_text("def frame_size(text):\n    width, height = text.split('x')\n    return width, height\n")
    namespace = {"__name__": "cityguard.unpacking"}
    exec(compile(module.read_text(), str(module), "exec"), namespace)
    assert run_reporting_errors(lambda: namespace["frame_size"]("640x480x3"), debug=False) == 2
    assert capsys.readouterr().err.startswith("cityguard: error: ValueError: too many values to unpack")


@pytest.mark.parametrize(("args", "says"), [
    (["eval", "detector", "--images", "tests", "--confidence", "1.5"], "--confidence: expected a value at least 0 and "
                                                                       "at most 1, got 1.5"),
    (["eval", "events", "--truth", "a", "--predicted", "b", "--tolerance", "-5"], "--tolerance: expected a value at "
                                                                                 "least 0, got -5"),
    (["eval", "events", "--truth", "a", "--predicted", "b", "--segment", "nan"], "--segment: expected a value above "
                                                                                "0, got nan"),
    (["model", "calibration-set", "README.md", "--frames", "0"], "--frames: expected a value at least 1, got 0"),
    (["model", "calibration-set", "README.md", "--frames", "many"], "--frames: expected an integer, got 'many'"),
    (["model", "calibration-set", "clip.mp4"], "argument videos: no file clip.mp4"),
    (["model", "register", "README.md"], "README.md is not a model: give a weights file (.engine, .onnx, .pt"),
    (["eval", "detector", "--images", "nowhere"], "argument --images: no folder nowhere"),
    (["console", "--host", "0.0.0.0/0"], "argument --host: not an IP address (IPv6 without brackets) or host name"),
])
def test_an_option_outside_its_range_or_a_missing_path_is_refused_before_anything_runs(capsys, monkeypatch, args, says):
    from cityguard.cli import main

    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and says in error, error


@pytest.mark.parametrize(("args", "env", "says"), [
    (["--shard-index", "2", "--shard-count", "2"], {}, "argument --shard-index: 2 must be below --shard-count 2"),
    (["--shard-index", "1"], {}, "--shard-index and --shard-count go together"),
    (["--shard-index", "0", "--shard-count", "0"], {}, "argument --shard-count: expected a value at least 1"),
    # A pod-index label the cluster does not set arrives empty: refused, not read as shard 0 of the file's count.
    ([], {"CITYGUARD_PRODUCER_SHARD_INDEX": "", "CITYGUARD_PRODUCER_SHARD_COUNT": "2"},
     "argument --shard-index: expected an integer, got ''"),
], ids=["index-not-below-count", "index-alone", "no-shards", "empty-index-in-environment"])
def test_a_producer_shard_outside_its_count_is_refused_naming_the_flag(tmp_path, capsys, monkeypatch, args, env, says):
    from cityguard.cli import main

    site = tmp_path / "site.yaml"
    site.write_text(f"cameras:\n  - id: walk\n    source: {VTEST}\n")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_:
        main(["produce", "--config", str(site), *args])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("cityguard produce: error: ") and error.count("\n") == 1 and says in error, error


def test_check_config_warns_of_replicas_the_embedded_broker_cannot_keep(tmp_path, monkeypatch):
    from cityguard.start_checks import start_problems
    from schemas.settings.config import parse_config

    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    site = {"broker": {"replication_factor": 3}, "cameras": [{"id": "walk", "source": str(VTEST)}]}
    assert start_problems(parse_config(site, tmp_path)) == [
        "broker.replication_factor is 3 but the embedded broker is one node: set it to 1, or name a cluster "
        "(KAFKA_BOOTSTRAP_SERVERS)"]
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092,kafka-3:9092")
    assert start_problems(parse_config(site, tmp_path)) == []


def test_check_config_warns_that_its_cameras_cannot_be_renewed_without_the_api_key(tmp_path, monkeypatch, capsys):
    from cityguard.cli import main

    site = tmp_path / "site.yaml"
    site.write_text(f"cameras:\n  - id: gangbyeon\n    source: {VTEST}\n    its: {{name: '[강변북로] 성수대교', "
                    "lon: 127.03, lat: 37.54, road_type: its}\n  - id: walk\n    source: " f"{VTEST}\n")
    monkeypatch.delenv("ITS_API_KEY", raising=False)
    assert main(["check-config", "--config", str(site)]) == 0  # the URL in the file plays until it expires
    assert capsys.readouterr().err == (
        "cityguard: warning: ITS_API_KEY is not set: the ITS cameras (gangbyeon) play from the URL in the site file "
        "until it expires, and cannot have it renewed (one of recorded clips plays only that clip)\n")
    monkeypatch.setenv("ITS_API_KEY", "a-key")
    assert main(["check-config", "--config", str(site)]) == 0
    assert capsys.readouterr().err == ""


def test_a_bootstrap_server_port_out_of_range_in_the_environment_stops_a_stage_at_start_naming_the_variable(
        tmp_path, monkeypatch, capsys):
    from cityguard.cli import main

    site = tmp_path / "site.yaml"
    site.write_text(f"cameras:\n  - id: walk\n    source: {VTEST}\n")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:99999")
    problem = ("environment variable KAFKA_BOOTSTRAP_SERVERS: server 1 of 1 has a port that is not a number from 1 to "
               "65535")
    assert main(["check-config", "--config", str(site)]) == 0  # the file is right; this environment is not
    assert capsys.readouterr().err == f"cityguard: warning: {problem} (the stage that needs it refuses to start here)\n"
    # Not half a minute of waiting for a broker at a port no client can use, then status 1 as if it were down.
    assert_one_line_error(cityguard("analyze", "--config", str(site)), 2, f"cityguard: error: {problem}")


def test_start_checks_name_a_folder_setting_given_a_file_and_filters_that_cannot_be_read(tmp_path):
    from cityguard.start_checks import start_problems
    from schemas.settings.config import parse_config

    (tmp_path / "models").write_text("")
    (tmp_path / "negatives").write_text("")
    (tmp_path / "frames").write_text("")  # the producer would fail each large frame it stores there, while running
    (tmp_path / "filters.json").write_text("{not json")
    site = {"cameras": [{"id": "walk", "source": str(VTEST)}], "model": {"registry": "models"},
            "console": {"hard_negatives_dir": "negatives"}, "analytics": {"ignore_filters": "filters.json"},
            "producer": {"frame_store_dir": "frames"}}
    problems = start_problems(parse_config(site, tmp_path))
    assert problems[:3] == [f"model.registry: {tmp_path / 'models'} is a file, not a folder",
                            f"console.hard_negatives_dir: {tmp_path / 'negatives'} is a file, not a folder",
                            f"producer.frame_store_dir: {tmp_path / 'frames'} is a file, not a folder"]
    assert problems[3].startswith(f"analytics.ignore_filters: {tmp_path / 'filters.json'}: not an ignore-filters file")
    assert len(problems) == 4

    # Folders and a filters file not made yet are what a first start has.
    for name in ("models", "negatives", "frames", "filters.json"):
        (tmp_path / name).unlink()
    assert start_problems(parse_config(site, tmp_path)) == []


def test_start_checks_name_a_local_model_the_inference_stage_could_not_load(tmp_path, monkeypatch):
    from cityguard.start_checks import start_problems
    from processors.inference.model_registry import ModelRegistry
    from schemas.settings.config import parse_config

    def problems(model: dict) -> list[str]:
        return start_problems(parse_config({"cameras": [{"id": "walk", "source": str(VTEST)}], "model": model},
                                           tmp_path))

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    # Offline, a missing offline model falls back to model.weights, which is then loaded, or tried.
    assert problems({"weights": "models/best.pt", "offline_weights": "models/best_openvino_model"}) == [
        f"model.offline_weights: {tmp_path / 'models' / 'best_openvino_model'} does not exist",
        f"model.weights: {tmp_path / 'models' / 'best.pt'} does not exist"]
    (tmp_path / "models").mkdir()
    assert problems({"weights": "./models", "offline_weights": None}) == [
        f"model.weights: {tmp_path / 'models'} is a folder without the metadata.yaml of a model ultralytics exported"]
    (tmp_path / "models" / "best_openvino_model").mkdir()
    (tmp_path / "models" / "best_openvino_model" / "metadata.yaml").write_text("names: {0: person}\n")
    # Found, the offline model is loaded and model.weights is not.
    assert problems({"weights": "models/best.pt", "offline_weights": "models/best_openvino_model"}) == []
    # Names ultralytics downloads, assets fetched when missing, a Triton URL: nothing to find here.
    assert problems({"weights": "yolo11n.pt", "offline_weights": "asset:yolo11n_int8_openvino_model"}) == []
    assert problems({"weights": "models/best.pt", "offline_weights": "asset:yolo11n_int8_openvino_model"}) == []
    assert problems({"weights": "http://triton:8000/yolo", "offline_weights": None}) == []
    monkeypatch.delenv("YOLO_OFFLINE")
    assert problems({"weights": "yolo11n.pt", "offline_weights": "models/nope"}) == []  # read only offline

    # A registry's serving version is loaded instead of model.weights.
    registry = ModelRegistry(tmp_path / "registry")
    (tmp_path / "best.pt").write_bytes(b"weights")
    registry.promote(registry.register(tmp_path / "best.pt", {"kind": "imported"}).version, "test")
    assert problems({"weights": "models/gone.pt", "registry": "registry"}) == []


def test_start_checks_know_a_folder_export_by_the_files_its_format_holds(tmp_path):
    """ultralytics writes metadata.yaml into most models it exports to a folder, but a CoreML package, a Core AI asset
    and an IMX or AMD Xilinx export carry their metadata in their own files: each is told by those."""
    from cityguard.start_checks import start_problems
    from schemas.settings.config import parse_config

    def problems(weights: str) -> list[str]:
        return start_problems(parse_config({"cameras": [{"id": "walk", "source": str(VTEST)}],
                                            "model": {"weights": weights, "offline_weights": None}}, tmp_path))

    for name, marker, made in (("best.mlpackage", "Manifest.json", "Manifest.json"),
                               ("best.aimodel", "metadata.json", "metadata.json"),
                               ("best_imx_model", "*.onnx", "model_imx.onnx"),
                               ("best_xilinx_model", "*.onnx", "best.onnx"),
                               ("best_ncnn_model", "metadata.yaml", "metadata.yaml")):
        export = tmp_path / "models" / name
        export.mkdir(parents=True)
        assert problems(f"models/{name}") == [
            f"model.weights: {export} is a folder without the {marker} of a model ultralytics exported"]
        (export / made).write_text("{}")
        assert problems(f"models/{name}") == []
    # The OpenVINO backend reads the class names from metadata.yaml: another format's files do not stand in for it.
    openvino = tmp_path / "models" / "best_openvino_model"
    openvino.mkdir()
    (openvino / "Manifest.json").write_text("{}")
    (openvino / "best.onnx").write_text("{}")
    assert problems("models/best_openvino_model") == [
        f"model.weights: {openvino} is a folder without the metadata.yaml of a model ultralytics exported"]


def test_check_config_warns_of_scene_classes_the_model_does_not_have(tmp_path, capsys):
    from cityguard.cli import main

    export = tmp_path / "site_openvino_model"  # a model retrained on the site's own classes
    export.mkdir()
    (export / "metadata.yaml").write_text("names: {0: person, 1: car, 2: bus, 3: tram}\n")
    scene = ("    scene:\n      vehicle_classes: [car, bsu]\n      road_classes: [person, car, bsu, trams]\n"
             "      counting_lines:\n        - {id: c1, start: [0, 5], end: [5, 5], classes: [cars]}\n")
    site = tmp_path / "site.yaml"

    def warnings(model: str, scene: str) -> list[str]:
        site.write_text(f"model: {model}\ncameras:\n  - id: walk\n    source: {VTEST}\n{scene}")
        assert main(["check-config", "--config", str(site)]) == 0
        return capsys.readouterr().err.splitlines()

    model = "{weights: ./site_openvino_model, offline_weights: null}"
    assert warnings(model, scene) == [
        f"cityguard: warning: camera walk: scene.{field}: the model {export} has no class {classes}"
        for field, classes in (
            ("vehicle_classes", "bsu (did you mean bus?)"),
            ("road_classes", "bsu (did you mean bus?), trams (did you mean tram?)"),
            ("counting_lines[c1].classes", "cars (did you mean car?)"))]
    # The lists left to their defaults name COCO's classes: one this model lacks is one it never reports.
    assert warnings(model, "    scene: {}\n") == []
    # A .pt file holds its names in the pickled model, and a model ultralytics downloads is not here to read.
    (tmp_path / "site.pt").write_bytes(b"weights")
    assert warnings("{weights: ./site.pt, offline_weights: null}", scene) == []
    assert warnings("{weights: yolo11n.pt, offline_weights: null}", scene) == []
    # An asset this machine has is the model the stage loads, wherever model.weights or the offline model names it.
    counting = "    scene:\n      counting_lines:\n        - {id: c1, start: [0, 5], end: [5, 5], classes: [cars]}\n"
    assert warnings("{weights: 'asset:yolo11n_int8_openvino_model', offline_weights: null}", counting) == [
        f"cityguard: warning: camera walk: scene.counting_lines[c1].classes: the model {OFFLINE_MODEL} has no class "
        "cars (did you mean car?)"]


def test_check_config_warns_of_model_class_ids_the_model_does_not_have(tmp_path, capsys):
    from cityguard.cli import main

    site = tmp_path / "site.yaml"

    def warnings(model: str) -> list[str]:
        site.write_text(f"model: {model}\ncameras:\n  - id: walk\n    source: {VTEST}\n")
        assert main(["check-config", "--config", str(site)]) == 0
        return capsys.readouterr().err.splitlines()

    offline = "weights: 'asset:yolo11n_int8_openvino_model', offline_weights: null"
    assert warnings(f"{{{offline}, classes: [2, 300, 0, 80, 91], class_confidence: {{2: 0.5, 91: 0.4}}}}") == [
        f"cityguard: warning: model.classes: the model {OFFLINE_MODEL} has no class id 80, 91, 300 (its ids are "
        "0-79)",
        f"cityguard: warning: model.class_confidence: the model {OFFLINE_MODEL} has no class id 91 (its ids are "
        "0-79)"]
    assert warnings(f"{{{offline}, classes: [0, 2, 79]}}") == []
    # A .pt file holds its class ids in the pickled model: nothing to check against without loading it.
    (tmp_path / "site.pt").write_bytes(b"weights")
    assert warnings("{weights: ./site.pt, offline_weights: null, classes: [300]}") == []


def test_check_config_refuses_an_unknown_asset_and_warns_of_a_missing_file(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text("cameras:\n  - id: walk\n    source: asset:vtest2.avi\n")
    assert_one_line_error(cityguard("check-config", "--config", str(path)), 2,
                          "camera walk: source: unknown asset 'vtest2.avi' (known: ", "vtest.avi")
    path.write_text("cameras:\n  - id: walk\n    source: clips/walk.mp4\n  - id: gate\n    source: rtsp://cam/gate\n")
    result = cityguard("check-config", "--config", str(path))
    assert result.returncode == 0 and "2 cameras, 0 zones: OK" in result.stdout
    assert result.stderr == (f"cityguard: warning: camera walk: source {tmp_path / 'clips' / 'walk.mp4'} is not a "
                             "file or folder on this machine\n")


@pytest.mark.parametrize(("url", "status", "says"), [
    ("postgresql+psycopg://ops:hunter2@127.0.0.1:1/incidents", 1,
     "cannot open postgresql+psycopg://127.0.0.1:1/incidents: connection failed"),
    ("bogus://x", 2, "not a database URL this installation knows: bogus://x"),
    ("mysql://ops:hunter2@db.example/incidents", 2, "the driver for mysql://db.example/incidents is not installed"),
], ids=["no server", "unknown scheme", "driver missing"])
def test_an_incident_store_that_cannot_be_opened_is_named_in_one_line(monkeypatch, capsys, url, status, says):
    from cityguard.cli import main

    monkeypatch.setenv("CITYGUARD_INCIDENT_STORE_URL", url)
    assert main(["incidents", "list", "--config", str(REPO / "configs" / "demo.yaml")]) == status
    error = capsys.readouterr().err
    assert "hunter2" not in error
    assert error.startswith("cityguard: error: incident store ($CITYGUARD_INCIDENT_STORE_URL): ") and says in error


def test_check_config_warns_of_what_a_stage_would_refuse_at_start_here(tmp_path, monkeypatch, capsys):
    from cityguard.cli import main

    for name in ("CITYGUARD_CONSOLE_TOKEN", "CITYGUARD_ALERTMANAGER_TOKEN", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN",
                 "TWILIO_FROM_NUMBER"):
        monkeypatch.delenv(name, raising=False)
    site = tmp_path / "site.yaml"
    monkeypatch.delenv("GATE_CAMERA_PASSWORD", raising=False)
    site.write_text("cameras:\n  - {id: cam, source: asset:vtest.avi}\n"
                    "  - {id: gate, source: 'rtsp://viewer:${GATE_CAMERA_PASSWORD}@10.0.0.5/s'}\n"
                    "  - {id: alley, source: 'rtsp://viewer:hunter2@10.0.0.6/s'}\n"
                    "console: {host: 0.0.0.0}\n"
                    "alerting:\n  receiver: {host: 0.0.0.0}\n  store_url: notaurl\n"
                    "  channels:\n    - {kind: sound, id: alarm, file: nope.wav}\n    - {kind: sms, id: text}\n")
    assert main(["check-config", "--config", str(site)]) == 0
    warnings = capsys.readouterr().err.splitlines()
    assert [line.split(":")[2].strip() for line in warnings] == [
        "camera alley", "camera gate", "alert channel alarm", "alert channel text",
        "incident store (alerting.store_url)", "console.host 0.0.0.0 is not a loopback address", "alerting.receiver"]
    assert all(line.startswith("cityguard: warning: ") for line in warnings)
    assert "source holds a password in the configuration file" in warnings[0] and "hunter2" not in warnings[0]
    assert "environment variable GATE_CAMERA_PASSWORD is not set" in warnings[1]

    # `up` refuses what a stage would, before it starts anything.
    assert main(["up", "--config", str(site), "--duration", "1", "--log-dir", str(tmp_path / "logs")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("cityguard: error: camera gate: source: environment variable "
                                   "GATE_CAMERA_PASSWORD is not set (and 5 more: cityguard check-config lists them)\n")
    assert not (tmp_path / "logs").exists()


def test_check_config_names_every_unset_variable_of_an_alert_channel_at_once(tmp_path, monkeypatch, capsys):
    from cityguard.cli import main

    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM_NUMBER", "OPS_HOOK_URL", "OPS_HOOK_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    site = tmp_path / "site.yaml"
    site.write_text("cameras:\n  - {id: cam, source: asset:vtest.avi}\n"
                    "alerting:\n  channels:\n    - {kind: sms, id: text}\n"
                    "    - {kind: webhook, id: ops, url_env: OPS_HOOK_URL, bearer_token_env: OPS_HOOK_TOKEN}\n")
    assert main(["check-config", "--config", str(site)]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "cityguard: warning: alert channel text: environment variables TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and "
        "TWILIO_FROM_NUMBER are not set (the stage that needs it refuses to start here)",
        "cityguard: warning: alert channel ops: environment variables OPS_HOOK_URL and OPS_HOOK_TOKEN are not set "
        "(the stage that needs it refuses to start here)"]


@pytest.mark.parametrize("cameras", ["", "cameras: []\n"])
def test_check_config_and_up_say_that_a_site_without_cameras_watches_nothing(tmp_path, monkeypatch, capsys, cameras):
    from cityguard.cli import main

    site = tmp_path / "site.yaml"
    site.write_text(f"site: lobby\n{cameras}")
    assert main(["check-config", "--config", str(site)]) == 0  # a site file may stand ready for cameras to come
    captured = capsys.readouterr()
    assert captured.err == ("cityguard: warning: site 'lobby' has no cameras (its cameras list is missing or empty): "
                            "it watches nothing\n")
    assert captured.out == f"{site}: site 'lobby', 0 cameras, 0 zones: OK\n"

    # up says so first; an alert channel without its variables stops it there, before anything starts.
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM_NUMBER"):
        monkeypatch.delenv(name, raising=False)
    site.write_text(f"site: lobby\n{cameras}alerting:\n  channels:\n    - {{kind: sms, id: text}}\n")
    assert main(["up", "--config", str(site), "--duration", "1", "--log-dir", str(tmp_path / "logs")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ("warning: site 'lobby' has no cameras (its cameras list is missing or empty): it watches "
                            "nothing\n")
    assert captured.err.startswith("cityguard: error: alert channel text: environment variables ")


def test_check_config_warns_of_a_webhook_url_with_a_password_in_the_configuration_file(tmp_path, capsys):
    from cityguard.cli import main

    site = tmp_path / "site.yaml"
    site.write_text("cameras:\n  - {id: cam, source: asset:vtest.avi}\n"
                    "alerting:\n  channels:\n"
                    "    - {kind: webhook, id: ops, url: 'https://bob:Hunter2Secret@hooks.example.com/x'}\n"
                    "    - {kind: webhook, id: desk, url: 'https://hooks.example.com/desk'}\n")
    assert main(["check-config", "--config", str(site)]) == 0
    assert capsys.readouterr().err == ("cityguard: warning: alert channel ops: url holds a password in the "
                                       "configuration file: give the URL in an environment variable instead "
                                       "(url_env)\n")


def test_a_broker_asked_for_a_port_in_use_says_so_before_claiming_it(capsys):
    from cityguard.cli import main

    with socket.socket() as other:  # another program listening there
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        assert main(["broker", "--port", str(port), "--config", str(REPO / "configs" / "demo.yaml")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f"cityguard: error: 127.0.0.1:{port} is in use (another broker, or another program "
                            "listens there)\n")


def test_a_second_metrics_listener_on_a_port_in_use_names_it():
    from cityguard.stages import serve_metrics
    from schemas.settings.base import ConfigError

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"^inference metrics: cannot listen on 127.0.0.1:{port} \(Address "
                                              r"already in use\): give this process another --metrics-port"):
            serve_metrics(Config(), port, "inference")


def test_up_refuses_ports_another_up_holds_before_starting_anything():
    from cityguard.up import refuse_busy_ports
    from schemas.settings.base import ConfigError

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        config = Config.model_validate({"metrics": {"exporter_port": port}})
        with pytest.raises(ConfigError, match=rf"in use: metrics sink 127.0.0.1:{port} \(metrics.exporter_port\)"):
            refuse_busy_ports(config)
    twice = Config.model_validate({"console": {"port": 9100}})  # the metrics sink's default port
    with pytest.raises(ConfigError, match=r"one port for two listeners: 9100 \(metrics.exporter_port, console.port\)"):
        refuse_busy_ports(twice)


def test_a_backend_given_a_model_it_cannot_run_says_what_it_needs(tmp_path):
    import torch

    from cityguard.start_checks import start_problems
    from processors.inference.backends.registry import NVIDIA_DRIVER, create_detector

    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"onnx")
    openvino = Config.model_validate({"model": {"backend": "openvino", "weights": str(onnx), "offline_weights": None}})
    with pytest.raises(ValueError, match=r"openvino needs an OpenVINO export folder .*model\.onnx is not one"):
        create_detector(openvino)
    if not torch.cuda.is_available():
        gpu = Config.model_validate({"model": {"backend": "gpu-nvjpeg", "weights": "yolo11n.pt"}})
        with pytest.raises(RuntimeError, match="gpu-nvjpeg needs a CUDA GPU, and torch finds none"):
            create_detector(gpu)  # a GPU that faulted may be back after a restart
        if not NVIDIA_DRIVER.exists():  # no driver at all: up refuses it before it starts anything
            assert "gpu-nvjpeg needs a CUDA GPU" in " ".join(start_problems(gpu))


def test_offline_weights_that_are_not_there_are_a_setting_to_correct_not_a_failure_to_retry(tmp_path, monkeypatch):
    from processors.inference.backends.registry import create_detector

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    config = Config.model_validate({"model": {"weights": "yolo11n.pt", "offline_weights": str(tmp_path / "missing")}})
    with pytest.raises(ConfigError, match="model yolo11n.pt is not on this machine, and model.offline_weights"):
        create_detector(config)


def test_mistakes_that_used_to_end_in_a_traceback_or_an_answer_are_one_line(tmp_path, monkeypatch, capsys):
    from cityguard.cli import main

    site = tmp_path / "site.yaml"
    site.write_text("cameras:\n  - {id: cam, source: 'rtsp//viewer:CamSecret8@10.0.0.5/s'}\n"  # its scheme mistyped
                    "alerting: {store_url: 'postgresql://ops:Secret99@db.example:notaport/incidents'}\n")
    assert main(["check-config", "--config", str(site)]) == 0
    warnings = capsys.readouterr().err
    assert "is not a file or folder on this machine" in warnings
    assert "not a database URL this installation knows" in warnings
    assert "CamSecret8" not in warnings and "Secret99" not in warnings

    monkeypatch.setenv("CITYGUARD_LOG_LEVEL", "LOUD")
    with pytest.raises(SystemExit) as exit_:
        main(["check-config", "--config", str(site)])
    assert exit_.value.code == 2 and "CITYGUARD_LOG_LEVEL: invalid choice: 'LOUD'" in capsys.readouterr().err
    monkeypatch.delenv("CITYGUARD_LOG_LEVEL")

    with pytest.raises(SystemExit) as exit_:
        main(["ignore", "add", "--camera", "cam", "--class", "person", "--polygon", "0,0 10,0 10,10", "--expires",
              "99999999999d", "--store", str(tmp_path / "ignore.json"), "--config", str(site)])
    assert exit_.value.code == 2 and "at most 3650d" in capsys.readouterr().err
    assert not (tmp_path / "ignore.json").exists()

    truth, predicted = tmp_path / "truth.csv", tmp_path / "predicted.csv"
    truth.write_text("camera,type,start,end\ncam,collision,1,5\n")  # seconds from the clip's start
    predicted.write_text("camera,type,start,end,score\ncam,collision,1796000000,1796000005,0.9\n")  # unix times
    assert main(["eval", "events", "--truth", str(truth), "--predicted", str(predicted), "--out",
                 str(tmp_path / "report")]) == 2
    assert_one_line_error_printed(capsys, "are the truth and the predictions in the same times?")


def test_more_mistakes_are_refused_in_one_line_naming_what_was_given(tmp_path, capsys):
    from cityguard.cli import main

    site = tmp_path / "site.yaml"
    site.write_text("model: {offline_weights: 'asset:nope_model'}\ncameras:\n  - {id: cam, source: asset:vtest.avi}\n")
    assert main(["check-config", "--config", str(site)]) == 0
    assert "model.offline_weights: unknown asset 'nope_model'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["incidents", "list", "--limit", "99999999999999999999", "--config", str(site)])
    assert exit_.value.code == 2 and "--limit: expected a value at least 1" in capsys.readouterr().err
    truth = tmp_path / "truth.csv"
    truth.write_text("camera,type,start,end\ncam,collision,1,5\n")
    assert main(["eval", "events", "--truth", str(truth), "--predicted", str(truth), "--cameras", "nosuch", "--out",
                 str(tmp_path / "report")]) == 2
    assert_one_line_error_printed(capsys, "--cameras names cameras that neither")
    (tmp_path / "logs").write_text("")
    site.write_text("cameras:\n  - {id: cam, source: asset:vtest.avi}\n")
    assert main(["up", "--config", str(site), "--log-dir", str(tmp_path / "logs"), "--duration", "1"]) == 2
    assert_one_line_error_printed(capsys, "File exists")


def test_a_file_that_holds_no_decodable_frame_is_an_error_not_an_empty_replay(tmp_path):
    (tmp_path / "site.yaml").write_text("cameras:\n  - id: cam\n    source: clip.jpg\n")
    (tmp_path / "clip.jpg").write_text("not a picture")
    result = cityguard("replay", "--config", str(tmp_path / "site.yaml"), "--camera", "cam", str(tmp_path / "clip.jpg"))
    assert result.returncode != 0 and "no frame could be decoded" in result.stderr.splitlines()[-1], result.stderr


def test_an_error_that_shows_the_form_a_setting_takes_is_printed_whole(tmp_path, capsys):
    from cityguard.cli import main

    site = tmp_path / "site.yaml"
    site.write_text("console: {public_origins: [console.city.example]}\n")
    assert main(["check-config", "--config", str(site)]) == 2
    assert_one_line_error_printed(capsys, "console.public_origins: an origin is a scheme, a host and an optional port "
                                  "with nothing after, such as https://console.city.example or http://10.0.0.5:8080")


def test_a_short_console_token_behind_a_reverse_proxy_stops_the_console_naming_the_setting(tmp_path, capsys,
                                                                                           monkeypatch):
    from cityguard.cli import main

    site = tmp_path / "site.yaml"
    site.write_text("console: {require_token_for_reads: true}\n")
    monkeypatch.setenv("CITYGUARD_CONSOLE_TOKEN", "short")
    assert main(["console", "--config", str(site)]) == 2
    assert_one_line_error_printed(capsys, "CITYGUARD_CONSOLE_TOKEN is too short for a listener that a reverse proxy "
                                  "publishes (console.require_token_for_reads is set): give it 16 characters or more")

"""Commands of the evaluation, dataset, bench, calibration and Grafana areas: what an installed package lacks and what
a user gets wrong end in one line on stderr, never a traceback or a silent success."""
from __future__ import annotations

import hashlib
import json
import sys
from unittest.mock import ANY

import cv2
import numpy as np
import pytest
import torch

from cityguard import commands_alerts, commands_eval
from cityguard.bench import gpu
from cityguard.cli import build_parser, main
from tests.evaluation.test_devset import FILES, write_source
from tests.test_cli_errors import assert_one_line_error_printed


@pytest.fixture
def without_repository_folders(tmp_path, monkeypatch):
    """As in an installed package: no tests/devsets and no infra/grafana beside the code."""
    monkeypatch.setattr(commands_eval, "DEVSETS", tmp_path / "no-tests" / "devsets")
    monkeypatch.setattr(commands_alerts, "GRAFANA_DIR", tmp_path / "no-infra" / "grafana")
    return tmp_path


def test_commands_parse_without_the_repositorys_devsets_and_dashboards(without_repository_folders, capsys):
    assert build_parser().parse_args(["check-config"]).command == "check-config"
    with pytest.raises(SystemExit) as stopped:
        main(["devset", "build", "crowd", "--out", str(without_repository_folders / "out")])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "unknown development set 'crowd'" in error and "no-tests" in error


@pytest.mark.parametrize("kind", ["detector", "counts", "events"])
def test_eval_help_says_where_the_report_goes_by_default(kind, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["eval", kind, "--help"])
    assert stopped.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert ("--out OUT folder to write the report into: report.md with its plots, report.json (default: "
            f"var/eval/{kind})") in shown


def test_grafana_provision_without_dashboards_fails_naming_the_folder_and_option(without_repository_folders,
                                                                                   capsys):
    assert main(["grafana", "provision", "--url", "http://127.0.0.1:9", "--token", "t"]) == 2
    dashboards = without_repository_folders / "no-infra" / "grafana" / "dashboards"
    assert_one_line_error_printed(capsys, str(dashboards), "--dashboards")


def test_an_unknown_development_set_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["devset", "build", "crwod", "--out", "x"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "unknown development set 'crwod' (known: crowd, traffic)" in error


@pytest.fixture
def small_devset(tmp_path, monkeypatch):
    """A development set `small` with a local copy of its source, and an empty shared folder."""
    write_source(tmp_path / "devsets" / "small", FILES)
    monkeypatch.setattr(commands_eval, "DEVSETS", tmp_path / "devsets")
    monkeypatch.setenv("CITYGUARD_SHARED_DIR", str(tmp_path / "shared"))
    monkeypatch.delenv("CITYGUARD_ASSET_MIRROR", raising=False)  # a mirror may hold a note of its own
    return ["devset", "build", "small", "--out", str(tmp_path / "out"),
            "--from", str(tmp_path / "devsets" / "small" / "mirror")]


def test_a_mistyped_held_out_note_is_an_error(small_devset, tmp_path, capsys):
    assert main([*small_devset, "--held-out", str(tmp_path / "held-out-sourcse.md")]) == 2
    assert_one_line_error_printed(capsys, "held-out-sourcse.md", "--held-out")
    assert not (tmp_path / "out").exists()


def test_without_the_default_held_out_note_the_build_warns_that_the_check_is_off(small_devset, tmp_path, capsys):
    assert main(small_devset) == 0
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("cityguard: warning: ")
    assert f"no held-out note ({tmp_path / 'shared' / 'reference' / 'held-out-sources.md'})" in captured.err
    assert "2 images with counts" in captured.out


@pytest.mark.parametrize("folder", ["shared", "mirror"])
def test_a_refused_source_is_an_error_on_stderr(small_devset, tmp_path, capsys, monkeypatch, folder):
    # The note is found where the asset lookup reads: CITYGUARD_SHARED_DIR, or an asset mirror folder before it.
    monkeypatch.setenv("CITYGUARD_ASSET_MIRROR", str(tmp_path / "mirror"))
    note = tmp_path / folder / "reference" / "held-out-sources.md"
    note.parent.mkdir(parents=True)
    note.write_text(f"{hashlib.sha256(b'image one').hexdigest()}\n")
    assert main(small_devset) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "cityguard: error: refused: item1: img/1.jpg has a held-out sha256\n"


def test_a_short_row_of_an_events_csv_names_its_line(tmp_path, capsys):
    (tmp_path / "truth.csv").write_text("camera,type,start,end\ncam,crowd,0,10\ncam,crowd\n")
    (tmp_path / "predicted.csv").write_text("camera,type,start,end\ncam,crowd,2,9\n")
    assert main(["eval", "events", "--truth", str(tmp_path / "truth.csv"), "--predicted",
                 str(tmp_path / "predicted.csv"), "--out", str(tmp_path / "report")]) == 2
    assert_one_line_error_printed(capsys, "truth.csv:3: no start, end")


def test_per_frame_scores_are_not_counted_as_predicted_events(tmp_path, capsys):
    (tmp_path / "truth.csv").write_text("camera,type,start,end\ncam,crowd,1,2\n")
    # two areas a frame, as `cityguard replay --frame-scores` writes them for a camera with two pedestrian areas
    rows = "".join(f"cam,crowd,{k / 10:.3f},{(k + 1) / 10:.3f},{score},{k + 1}\n" for k in range(40)
                   for score in (0.9 if 10 <= k < 20 else 0, 0))
    (tmp_path / "scores.csv").write_text("camera,type,start,end,score,frame\n" + rows)
    given = ["eval", "events", "--truth", str(tmp_path / "truth.csv"), "--predicted", str(tmp_path / "scores.csv"),
             "--out", str(tmp_path / "report")]
    assert main(given) == 2
    assert_one_line_error_printed(capsys, "scores.csv holds per-frame scores", "give --segment SECONDS")
    assert main([*given, "--segment", "0.1"]) == 0
    assert "1 labelled, 80 frame scores: AUC crowd 1.000 (precision and recall need events" in capsys.readouterr().out
    # nothing matched as events in the report either: no false positives from the frames scored 0
    assert json.loads((tmp_path / "report" / "report.json").read_text()) == {
        "segment_s": 0.1, "types": [{"type": "crowd", "roc": ANY}]}
    assert "precision" not in (tmp_path / "report" / "report.json").read_text()


def test_a_benchmark_option_mistake_is_one_line(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["bench", "analytics", "--frames", "abc"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error == ("cityguard bench analytics: error: argument --frames: expected an integer, got 'abc' "
                     "(see cityguard bench analytics --help)\n")


@pytest.mark.parametrize(("command", "error"), [
    (["scaleout", "--stage", "analytics", "--frames", "50", "--workers", "1"],
     "--frames 50 closes 0 analytics windows (10 s at 5 fps): give more than 100"),
    (["analytics", "--frames", "30"], "--frames 30 closes 0 analytics windows (10 s at 5 fps): give more than 100"),
    (["console", "--duration", "15"], "--duration 15 leaves no time to measure after the 20 s of --warmup before "
     "`cityguard up` stops: give at least 30"),
    (["inference", "--frames", "4"], "--frames 4: a single batch of the workers' 4 (model.max_batch_size), and the "
     "rate is timed from the first output to the last: give more than 4 frames in all"),
    (["scaleout", "--stage", "inference", "--cameras", "2", "--frames", "2", "--workers", "1"],
     "2 cameras x 2 frames: a single batch of the workers' 4 (model.max_batch_size), and the rate is timed from "
     "the first output to the last: give more than 4 frames in all"),
    (["scaleout", "--stage", "inference", "--cameras", "1", "--frames", "8", "--batch", "16", "--workers", "1"],
     "1 camera x 8 frames: a single batch of the workers' 16 (--batch 16), and the rate is timed from the first "
     "output to the last: give more than 16 frames in all"),
])
def test_a_benchmark_that_could_time_nothing_is_refused_before_it_starts(capsys, command, error):
    """Too few frames to close two windows or fill two batches, or a demo that stops before its warm-up ends."""
    assert main(["bench", *command]) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", f"cityguard: error: {error}\n")


def test_the_gpu_bench_refuses_a_folder_without_jpegs_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["gpu.py", "--jpegs", str(tmp_path)])
    with pytest.raises(SystemExit) as stopped:
        gpu.main()
    assert stopped.value.code == f"--jpegs {tmp_path}: no .jpg files there"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal of a machine without a CUDA GPU")
def test_the_gpu_bench_refuses_a_machine_without_a_cuda_gpu_in_one_line(tmp_path, monkeypatch):
    (tmp_path / "frame.jpg").write_bytes(cv2.imencode(".jpg", np.zeros((48, 64, 3), np.uint8))[1].tobytes())
    monkeypatch.setattr(sys, "argv", ["gpu.py", "--jpegs", str(tmp_path)])
    with pytest.raises(SystemExit) as stopped:
        gpu.main()
    assert stopped.value.code == ("this benchmark times the GPU path: it needs a CUDA GPU, and torch finds none on "
                                  "this machine")


def test_an_option_a_command_does_not_take_points_to_that_commands_help(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["check-config", "--bogus", "1"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == ("cityguard check-config: error: unrecognized arguments: --bogus 1 "
                                       "(see cityguard check-config --help)\n")


def test_calibrating_a_camera_that_is_not_configured_is_one_line(capsys):
    assert main(["calibrate", "--camera", "nope"]) == 2
    assert_one_line_error_printed(capsys, "camera 'nope' is not in", "(cameras: ")


@pytest.mark.parametrize(("args", "says"), [
    (["model", "train", "--data", "/nonexistent/data.yaml"], "argument --data: no file /nonexistent/data.yaml"),
    (["model", "export", "--weights", "/nonexistent/best.pt", "--format", "onnx"],
     "argument --weights: no model /nonexistent/best.pt"),
], ids=["train", "export"])
def test_a_missing_dataset_or_weights_path_is_named_before_any_download(args, says, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(args)
    assert stopped.value.code == 2 and says in capsys.readouterr().err

"""`cityguard up`: the whole pipeline from one command, stopped by Ctrl-C with no process left behind."""
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import yaml

from infra.assets import CATALOGUE, asset_path
from infra.broker import free_port
from infra.kafka import make_consumer
from schemas import Frame, decode
from schemas.settings.config import load_config
from tests.asset_server import canonical_tree, serving
from tests.conftest import REPO, VTEST, pipeline_config

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def site_with_assets_by_name(tmp_path):
    """A site whose clip and offline model are asset names, as in configs/demo.yaml."""
    _, path = pipeline_config(tmp_path, "up", bootstrap="unused",
                                   broker={"partitions": 2, "embedded_memory_warn_bytes": 1024**2},
                                   alerting={"receiver": {"port": 0}, "store_url": f"sqlite:///{tmp_path}/i.sqlite"})
    site = yaml.safe_load(path.read_text())
    site["model"]["offline_weights"] = "asset:yolo11n_int8_openvino_model"
    site["cameras"][0]["source"] = "asset:vtest.avi"
    path.write_text(yaml.safe_dump(site))
    return path


def stand_in_asset_server(tmp_path):
    """The site's assets served at their canonical URLs' paths, from this machine's copies."""
    used = [CATALOGUE["vtest.avi"], CATALOGUE["yolo11n_int8_openvino_model"]]
    content = {file.url: asset_path(asset.name) / file.path if asset.folder else asset_path(asset.name)
               for asset in used for file in asset.files}
    return serving(canonical_tree(tmp_path / "www", used, content))


def test_up_shows_live_status_restarts_a_dead_stage_and_ctrl_c_leaves_no_orphans(tmp_path):
    # Its own embedded broker (no bootstrap servers anywhere), free metrics ports, a looping camera; and a machine
    # without the shared folder, whose clip and model come from a server standing in for their public URLs.
    path = site_with_assets_by_name(tmp_path)
    env = {key: value for key, value in os.environ.items()
           if key not in ("KAFKA_BOOTSTRAP_SERVERS", "CITYGUARD_ASSET_MIRROR")}
    with stand_in_asset_server(tmp_path) as (asset_url, downloads):
        env.update({"YOLO_OFFLINE": "1", "CITYGUARD_SHARED_DIR": str(tmp_path / "no-shared"),
                    "CITYGUARD_ASSET_CACHE": str(tmp_path / "cache"), "CITYGUARD_ASSET_BASE_URL": asset_url})
        status_lines, console_lines, descendants, said, up, frames = run_up_until_status(path, tmp_path, env)
    assert up.returncode == 0, said
    assert "stopped: all stages and the broker" in said
    assert "fps" in status_lines[-1] and "p/m²" in status_lines[-1]
    assert len(console_lines) == 1 and console_lines[0].startswith("console: http://127.0.0.1:")
    assert "?token=" in console_lines[0], "no token configured: up makes one and prints it in the URL"
    survivors = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not survivors, f"left behind: {[p.cmdline()[:4] for p in survivors]}"
    # `up` fetched the clip and the model's 3 files once, before the broker and the stages started.
    assert len(downloads) == 4 and (tmp_path / "cache" / "vtest.avi").is_file()
    assert -1 < said.find("fetching asset vtest.avi") < said.find("\nbroker: "), said
    # On the embedded broker every frame went by reference (the site file leaves producer.max_message_bytes alone),
    # and inference resolved them: the status lines count people.
    store = (tmp_path / "var" / "frames").resolve()
    assert f"\nframes: by reference, each kept 600 s in {store} " in said
    assert frames and all(frame.jpeg is None and frame.frame_ref for frame in frames)
    assert any(int(line.split("|")[1].split()[0]) > 0 for line in status_lines if "people in frame" in line), \
        status_lines


@pytest.mark.parametrize("asset", ["vtest.avi", "yolo11n_int8_openvino_model"])
def test_up_stops_with_one_line_before_starting_anything_when_an_asset_cannot_be_fetched(tmp_path, asset):
    # A machine without the shared folder or a connection: each stage would fail on the download and be restarted
    # for ever, the terminal only saying that they exit. The model is the settings' one while a model registry serves
    # no version yet.
    path = site_with_assets_by_name(tmp_path)
    site = yaml.safe_load(path.read_text())
    site["model"]["registry"] = str(tmp_path / "registry")
    if asset != "vtest.avi":
        site["cameras"][0]["source"] = str(VTEST)
    path.write_text(yaml.safe_dump(site))
    env = {key: value for key, value in os.environ.items()
           if key not in ("KAFKA_BOOTSTRAP_SERVERS", "CITYGUARD_ASSET_MIRROR")}
    env.update({"YOLO_OFFLINE": "1", "CITYGUARD_SHARED_DIR": str(tmp_path / "no-shared"),
                "CITYGUARD_ASSET_CACHE": str(tmp_path / "cache"),
                "CITYGUARD_ASSET_BASE_URL": f"http://127.0.0.1:{free_port('127.0.0.1')}"})
    up = subprocess.run([sys.executable, "-m", "cityguard", "up", "--config", str(path), "--log-dir",
                         str(tmp_path / "logs")], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert up.returncode == 1, up.stderr
    error = up.stderr.strip().splitlines()[-1]
    assert error.startswith(f"cityguard: error: cannot download asset {asset} from http://127.0.0.1:"), up.stderr
    assert f"CITYGUARD_ASSET_MIRROR/{CATALOGUE[asset].mirror_path}" in error
    assert "broker: " not in up.stdout and not (tmp_path / "logs").exists()


def test_up_stops_with_one_line_before_starting_anything_when_the_ultralytics_model_cannot_be_downloaded(tmp_path):
    # A machine without internet where YOLO_OFFLINE is not set: the inference stage would try to download yolo11n.pt
    # at every restart. A proxy that refuses every connection stands in for the missing internet on any machine.
    path = site_with_assets_by_name(tmp_path)
    site = yaml.safe_load(path.read_text())
    site["model"]["weights"] = "yolo11n.pt"
    site["cameras"][0]["source"] = str(VTEST)
    path.write_text(yaml.safe_dump(site))
    refused = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    env = {key: value for key, value in os.environ.items() if key not in (
        "KAFKA_BOOTSTRAP_SERVERS", "YOLO_OFFLINE", "NO_PROXY", "no_proxy")}
    env.update({"HTTPS_PROXY": refused, "https_proxy": refused, "HTTP_PROXY": refused, "http_proxy": refused,
                "YOLO_CONFIG_DIR": str(tmp_path / "ultralytics")})
    up = subprocess.run([sys.executable, "-m", "cityguard", "up", "--config", str(path), "--log-dir",
                         str(tmp_path / "logs")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert up.returncode == 1, up.stderr
    assert up.stderr.strip().splitlines()[-1] == (
        "cityguard: error: model yolo11n.pt is not on this machine and could not be downloaded; without internet, "
        "YOLO_OFFLINE=1 uses model.offline_weights (asset:yolo11n_int8_openvino_model)"), up.stderr
    assert "broker: " not in up.stdout and not (tmp_path / "logs").exists()
    assert not (tmp_path / "yolo11n.pt").exists()


def first_frames(servers: str, topic: str, count: int = 10) -> list:
    """The first `count` frames of the topic (fewer if it has no more within 10 s)."""
    consumer = make_consumer(servers, None, topic, auto_offset_reset="earliest")
    frames = []
    try:
        deadline = time.monotonic() + 10
        while len(frames) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                frames += [decode(record.value, Frame) for record in records]
    finally:
        consumer.close()
    return frames[:count]


def run_up_until_status(path, tmp_path, env):
    """Starts `cityguard up`, waits for three status lines with zone figures, reads the frames topic's first frames,
    kills one stage and waits for its restart, then stops it with Ctrl-C."""
    up = subprocess.Popen([sys.executable, "-m", "cityguard", "up", "--config", str(path), "--log-dir",
                           str(tmp_path / "logs")], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    status_lines, console_lines, descendants, output = [], [], [], []
    try:
        deadline = time.monotonic() + 120
        for line in up.stdout:
            output.append(line)
            if line.startswith("console: "):
                console_lines.append(line)
            if line.startswith("[campus]"):
                status_lines.append(line)
                if "zone walkway:" in line and " p/m², risk " in line and len(status_lines) >= 3:
                    break
            assert time.monotonic() < deadline, "no status line with zone figures within 120 s"
        servers = next(line for line in output if line.startswith("broker: ")).split()[1]
        frames = first_frames(servers, load_config(path).broker.topics.frames)
        descendants = psutil.Process(up.pid).children(recursive=True)
        assert len(descendants) >= 7, \
            "broker, alerts, export-metrics, console, analyze, infer and produce run as processes"
        # A stage that dies is started again after a back-off; the rest of the pipeline goes on meanwhile.
        sink = next(p for p in psutil.Process(up.pid).children() if "export-metrics" in p.cmdline())
        sink.kill()
        for line in up.stdout:
            output.append(line)
            if line.startswith("export-metrics restarted"):
                break
            assert time.monotonic() < deadline + 30, "the killed stage was not restarted"
        assert any(line.startswith("export-metrics killed by SIGKILL; restarting it in 1 s") for line in output)
        restarted = next(p for p in psutil.Process(up.pid).children() if "export-metrics" in p.cmdline())
        assert restarted.pid != sink.pid
        descendants = psutil.Process(up.pid).children(recursive=True)
        up.send_signal(signal.SIGINT)
        rest = up.communicate(timeout=90)[0]
    finally:
        if up.poll() is None:
            up.kill()
    # A bound of 1 MiB is passed at once: the in-memory broker's growth is reported, with the way out.
    assert any(line.startswith("warning: embedded broker uses") and "KAFKA_BOOTSTRAP_SERVERS" in line
               for line in output + rest.splitlines())
    return status_lines, console_lines, descendants, "".join(output) + rest, up, frames

"""`cityguard cameras discover` and `cameras list` against the fake ITS API."""
from __future__ import annotations

import logging
import re

import pytest
import yaml

from cityguard.cli import main
from producers.its_client import stable_camera_id
from schemas.settings.config import load_config
from tests.producers.fake_its import FakeItsApi, record

KEY = "discover-key-123"


@pytest.fixture
def api():
    listing = {"cameras": [record("[경부선] 금토분기점2", "127.086135", "37.414184", "http://cctv.example/270/t1"),
                           record("[경부선] 양재", 127.0381, 37.4705, "http://cctv.example/271/t1")]}
    fake = FakeItsApi(KEY, cameras=lambda: listing["cameras"]).start()
    fake.listing = listing
    yield fake
    fake.stop()


def site_file(tmp_path, api, extra: dict | None = None):
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({"site": "seoul", "producer": {"its_api_url": api.url,
                                                                  "its_api_key_env": "CITYGUARD_ITS_KEY"},
                                    **(extra or {})}, allow_unicode=True))
    return path


def discover(path, *extra: str) -> int:
    return main(["cameras", "discover", "--config", str(path), "--bbox", "126.76,37.41,127.18,37.70",
                 "--type", "ex", *extra])


def test_discover_writes_cameras_with_stable_ids_and_refreshes_them(tmp_path, api, monkeypatch, capsys):
    monkeypatch.setenv("CITYGUARD_ITS_KEY", KEY)
    path = site_file(tmp_path, api)
    assert discover(path) == 0
    config = load_config(path)
    first = config.cameras[0]
    assert first.id == stable_camera_id("[경부선] 금토분기점2", 127.086135, 37.414184)
    assert (first.lat, first.lon, first.kind.value, first.source) == (37.414184, 127.086135, "hls",
                                                                     "http://cctv.example/270/t1")
    assert (first.its.name, first.its.road_type, first.its.cctv_type) == ("[경부선] 금토분기점2", "ex", 1)
    assert api.requests[-1]["type"] == "ex"

    # The operator adds a zone; a later discovery refreshes the URL and keeps it.
    data = yaml.safe_load(path.read_text())
    data["cameras"][0]["zones"] = [{"id": "ramp", "polygon": [[0, 0], [10, 0], [10, 10]], "area_m2": 50}]
    path.write_text("# Seoul south, expressway cameras\n" + yaml.safe_dump(data, allow_unicode=True)
                    .replace("  zones:", "  # drawn by the operator\n  zones:"))
    api.listing["cameras"] = [{**camera, "cctvurl": camera["cctvurl"].replace("t1", "t2")}
                              for camera in api.listing["cameras"]]
    assert discover(path) == 0
    again = load_config(path)
    assert [camera.id for camera in again.cameras] == [camera.id for camera in config.cameras]
    assert again.cameras[0].source.endswith("/t2") and again.cameras[0].zones[0].id == "ramp"
    assert "0 added, 2 refreshed" in capsys.readouterr().out
    kept = path.read_text()
    assert kept.startswith("# Seoul south, expressway cameras\n")
    assert re.search(r"\n +# drawn by the operator\n +zones:", kept), kept  # at the column it was written at


def test_discover_keeps_the_quotes_the_stages_need(tmp_path, api, monkeypatch):
    monkeypatch.setenv("CITYGUARD_ITS_KEY", KEY)
    path = tmp_path / "site.yaml"
    path.write_text(f"site: seoul\nproducer:\n  its_api_url: {api.url}\n  its_api_key_env: CITYGUARD_ITS_KEY\n"
                    "cameras:\n  - id: ramp\n    name: 'On'  # the ramp's sign; unquoted, YAML 1.1 reads true\n"
                    "    source: asset:vtest.avi\n")
    assert discover(path) == 0
    assert load_config(path).cameras[0].name == "On" and "name: 'On'  # the ramp's sign" in path.read_text()


def test_discover_skips_a_camera_listed_without_a_name(tmp_path, api, monkeypatch, caplog):
    monkeypatch.setenv("CITYGUARD_ITS_KEY", KEY)
    api.listing["cameras"].append(record("", 127.05, 37.45, "http://cctv.example/272/t1"))
    path = site_file(tmp_path, api)
    with caplog.at_level(logging.WARNING, logger="producers.its_client"):
        assert discover(path) == 0
    assert [camera.name for camera in load_config(path).cameras] == ["[경부선] 금토분기점2", "[경부선] 양재"]
    assert "skipped 1 camera records without a name" in caplog.text


def test_discover_reports_a_rejected_key_without_showing_it(tmp_path, api, monkeypatch, capsys):
    monkeypatch.setenv("CITYGUARD_ITS_KEY", "not-the-key-987")
    path = site_file(tmp_path, api)
    before = path.read_text()
    assert discover(path) == 2
    error = capsys.readouterr().err
    assert "rejected the key" in error and "not-the-key-987" not in error
    assert path.read_text() == before


def test_discover_without_a_key_names_the_variable(tmp_path, api, monkeypatch, capsys):
    monkeypatch.delenv("CITYGUARD_ITS_KEY", raising=False)
    assert discover(site_file(tmp_path, api)) == 2
    assert "CITYGUARD_ITS_KEY" in capsys.readouterr().err and api.requests == []


def test_a_key_pasted_where_its_variable_belongs_is_refused_without_showing_it(tmp_path, api, capsys):
    path = site_file(tmp_path, api)
    data = yaml.safe_load(path.read_text())
    data["producer"]["its_api_key_env"] = "9f8e7d6c5b4a3921"
    path.write_text(yaml.safe_dump(data))
    assert discover(path) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "producer.its_api_key_env" in error and "9f8e7d6c5b4a3921" not in error
    assert api.requests == []


def test_list_shows_configured_cameras_without_a_broker(tmp_path, api, monkeypatch, capsys):
    monkeypatch.setenv("CITYGUARD_ITS_KEY", KEY)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    path = site_file(tmp_path, api)
    discover(path)
    capsys.readouterr()
    assert main(["cameras", "list", "--config", str(path), "--wait", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "[경부선] 양재 @ 37.47050,127.03810" in out and "unknown" in out and "no live status" in out


def test_list_says_when_the_broker_is_not_reachable(tmp_path, api, monkeypatch, capsys):
    monkeypatch.setenv("CITYGUARD_ITS_KEY", KEY)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # nothing listens on port 1
    path = site_file(tmp_path, api)
    discover(path)
    capsys.readouterr()
    assert main(["cameras", "list", "--config", str(path), "--wait", "1"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "(no live status: the broker 127.0.0.1:1 is not reachable)"


@pytest.mark.parametrize("failure", ["unreachable", 429, 408, 503])
def test_discover_against_an_api_that_cannot_answer_now_fails_while_running(tmp_path, api, monkeypatch, capsys,
                                                                              failure):
    # Nothing the user gave is wrong (the API is down, rate-limits or times out): exit status 1, a failure while
    # running, not 2, in one line.
    monkeypatch.setenv("CITYGUARD_ITS_KEY", KEY)
    path = site_file(tmp_path, api)
    if failure == "unreachable":
        api.stop()
    else:
        api.fail_status = failure
    before = path.read_text()
    assert discover(path) == 1
    error = capsys.readouterr().err
    assert error.startswith("cityguard: error: ITS API ") and error.count("\n") == 1 and KEY not in error
    assert path.read_text() == before

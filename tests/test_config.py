import math
from pathlib import Path

import pytest
import yaml

from cityguard.cli import main
from schemas.settings.config import DEFAULT_CONFIG, ConfigError, load_config

CAMERA = {"id": "cam1", "source": "video.mp4", "zones": [
    {"id": "z1", "polygon": [[0, 0], [100, 0], [100, 100], [0, 100]], "area_m2": 50}]}
MP4_CAMERA = {"name": "CAM MP4", "lon": 127.0, "lat": 37.5, "road_type": "ex", "cctv_type": 2}


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_demo_configuration_is_valid():
    config = load_config(DEFAULT_CONFIG)
    assert config.cameras and all(camera.zones for camera in config.cameras)


def test_relative_paths_resolve_against_the_file(tmp_path):
    config = load_config(write(tmp_path, {"cameras": [CAMERA]}))
    assert config.resolve_path("video.mp4") == str(tmp_path / "video.mp4")
    assert config.resolve_path("rtsp://cam/stream") == "rtsp://cam/stream"


@pytest.mark.parametrize("change, field", [
    (lambda d: d["cameras"][0]["zones"][0].update(area_m2=0), "cameras.0.zones.0.area_m2"),
    (lambda d: d["cameras"][0]["zones"][0].update(polygon=[[0, 0], [10, 10], [10, 0], [0, 10]]),
     "cameras.0.zones.0.polygon"),
    (lambda d: d["cameras"][0]["zones"][0].update(polygon=[[100 + 50 * math.cos(i / 50), 100 + 50 * math.sin(i / 50)]
                                                           for i in range(300)]),  # a circle of 300 points
     "cameras.0.zones.0.polygon: polygon has 300 points; at most 256"),
    (lambda d: d["cameras"][0]["zones"][0].update(polygon=[[0, 0], [1e300, 0], [1e300, 1e300], [0, 1e300]]),
     "cameras.0.zones.0.polygon.1.0: Input should be less than or equal to 10000000"),
    (lambda d: d["cameras"][0].update(fps=0), "cameras.0.fps"),
    (lambda d: d["cameras"][0].update(colour="red"), "cameras.0.colour"),
    (lambda d: d.update(broker={"partitions": 0}), "broker.partitions"),
    (lambda d: d.update(model={"tracking": {"low_confidence": 0.5, "high_confidence": 0.3}}), "model.tracking"),
    (lambda d: d.update(analytics={"density_model": {"device": "gpu"}}), "analytics.density_model.device"),
    (lambda d: d["cameras"][0].update(source="rtsp://viewer:${camera password}@10.0.0.5/s"), "cameras.0.source"),
    (lambda d: d["cameras"][0].update(source="rstp://10.0.0.5/s"), "cameras.0.source: unknown URL scheme 'rstp' "
                                                                   "(did you mean rtp or rtsp?)"),
    (lambda d: d["cameras"][0].update(source=""), "cameras.0.source"),  # would read the configuration's folder
    (lambda d: d["cameras"][0].update(source="   "), "cameras.0.source: source is blank"),
    # A newline pasted into a path names no file, and split check-config's warning about it in two.
    (lambda d: d["cameras"][0].update(source="clips/a\nb.mp4"), "cameras.0.source: source holds a control character"),
    # A file read as a live stream would be read again from its start at every reconnection.
    (lambda d: d["cameras"][0].update(kind="mjpeg"), "cameras.0.kind: mjpeg is read over http(s), not a file path"),
    (lambda d: d["cameras"][0].update(kind="hls"), "cameras.0.kind: hls is read over http(s) or from a local .m3u8 "
                                                   "playlist, not a file path"),
    (lambda d: d["cameras"][0].update(source="rtsp://10.0.0.5/s", kind="mjpeg"), "cameras.0.kind: mjpeg is read over "
                                                                                 "http(s), not rtsp://"),
    # A still image is fetched over http(s): a file path polled as one fails at every try.
    (lambda d: d["cameras"][0].update(source="snapshots/cam1.jpg", kind="image"), "cameras.0.kind: image is read over "
                                                                                 "http(s), not a file path"),
    # An ITS camera of recorded clips plays each clip once, as a file: read as a stream or looped, it would publish
    # a clip's frames again.
    (lambda d: d["cameras"][0].update(source="https://cctv.example/mp4/x", kind="hls", its=MP4_CAMERA),
     "cameras.0: kind hls: an ITS camera of recorded clips (its.cctv_type 2) is read as a file"),
    (lambda d: d["cameras"][0].update(source="https://cctv.example/mp4/x", loop=True, its=MP4_CAMERA),
     "cameras.0: loop: an ITS camera of recorded clips (its.cctv_type 2) plays each clip once"),
    (lambda d: d.update(producer={"its_clip_poll_s": 120}), "its_clip_poll_s must not exceed its_clip_poll_max_s"),
    (lambda d: d.update(model={"classes": [0, -1]}), "model.classes.1"),
    (lambda d: d.update(model={"weights": ""}), "model.weights: String should have at least 1 character"),
    (lambda d: d.update(model={"offline_weights": ""}), "model.offline_weights: String should have at least 1"),
    # A row short: numpy's words about an inhomogeneous array named no row.
    (lambda d: d["cameras"][0].update(calibration={
        "image_points": [[0, 0], [100, 0], [100, 100], [0, 100]], "ground_points": [[0, 0], [10, 0], [10, 10], [0, 10]],
        "homography": [[0.1, 0, 0], [0, 0.1], [0, 0, 1]]}),
     "cameras.0.calibration.homography.1: List should have at least 3 items after validation, not 2"),
    (lambda d: d["cameras"][0].update(calibration={
        "image_points": [[0, 0], [100, 0], [100, 100], [0, 100]], "ground_points": [[0, 0], [10, 0], [10, 10], [0, 10]],
        "homography": [[0.1, 0, 0], [0, 0.1, 0]]}),
     "cameras.0.calibration.homography: List should have at least 3 items after validation, not 2"),
    (lambda d: d["cameras"][0].update(scene={"thresholds": {"reported_object_grace_seconds": 2}}),
     "cameras.0.scene.thresholds: reported_object_grace_seconds must not be shorter than static_object_grace_seconds"),
    (lambda d: d["cameras"][0].update(scene={"thresholds": {"stopped_seconds": 40}}),
     "cameras.0.scene.thresholds: unseen_stop_seconds must not be below stopped_seconds"),
    # Occupancy is a share of the lane: a jammed level of 5 would never be reached.
    (lambda d: d["cameras"][0].update(scene={"thresholds": {"congestion_occupancy_levels": [0.3, 0.6, 5]}}),
     "cameras.0.scene.thresholds.congestion_occupancy_levels.2: Input should be less than or equal to 1"),
    (lambda d: d.update(site="Seoul Itaewon"), "site"),  # prefixes a topic: Kafka takes no space in one
    (lambda d: d.update(broker={"topics": {"frames": "frames v1"}}), "broker.topics.frames"),
    # A dead-letter topic that is also an input would feed each letter back to be dead-lettered again, for ever.
    (lambda d: d.update(broker={"topics": {"frames": "x.v1", "dead_letter": "x.v1"}}),
     "broker.topics: frames and dead_letter name the same topic; each needs its own"),
    (lambda d: d.update(broker={"topics": {"events": "cityguard.detections.v1"}}),
     "broker.topics: detections and events name the same topic"),
    # A client would retry a port it cannot use until the stage gave up on the broker, half a minute later.
    (lambda d: d.update(broker={"bootstrap_servers": "localhost:notaport"}),
     "broker.bootstrap_servers: server 1 of 1 has a port that is not a number from 1 to 65535"),
    (lambda d: d.update(broker={"bootstrap_servers": "kafka-1:9092,kafka-2:99999"}),
     "broker.bootstrap_servers: server 2 of 2 has a port that is not a number from 1 to 65535"),
    (lambda d: d.update(broker={"bootstrap_servers": "kafka-1:9092,"}),
     "broker.bootstrap_servers: server 2 of 2 is not host:port ([address]:port for IPv6)"),
    (lambda d: d.update(broker={"bootstrap_servers": "::1:9092"}), "broker.bootstrap_servers: server 1 of 1 is not"),
    # Each stage stopped as it began listening there, blaming its port.
    (lambda d: d.update(metrics={"host": "not a host"}), "metrics.host: not an IP address (IPv6 without brackets) or "
                                                         "host name"),
    (lambda d: d.update(console={"host": "999.1.1.1"}), "console.host: not an IP address"),
    (lambda d: d.update(alerting={"receiver": {"host": "[::1]"}}), "alerting.receiver.host: not an IP address"),
    (lambda d: d.update(metrics={"host": "http://0.0.0.0"}), "metrics.host: not an IP address"),
    # Cars tuned but left out of the classes kept: never reported, the tuning silently doing nothing.
    (lambda d: d.update(model={"classes": [0], "class_confidence": {2: 0.4}}),
     "model: class_confidence gives class ids that classes leaves out, never reported: 2"),
    # Half a position leaves the camera off the map.
    (lambda d: d["cameras"][0].update(lat=37.53), "cameras.0: lat and lon go together"),
    # Fractions of the picture, as labelling tools export them: a zone of one pixel watches no one.
    (lambda d: d["cameras"][0]["zones"][0].update(polygon=[[0.1, 0.2], [0.9, 0.2], [0.9, 0.8], [0.1, 0.8]]),
     "cameras.0: zones[z1] lies within the picture's first pixel: give image pixels"),
    (lambda d: d["cameras"][0].update(scene={"counting_lines": [{"id": "gate", "start": [0, 0.5], "end": [1, 0.5]}]}),
     "cameras.0: scene.counting_lines[gate] lies within the picture's first pixel"),
    # A pattern's refusal says in words what is wanted: a regular expression tells an operator nothing.
    (lambda d: d.update(alerting={"contacts": [{"id": "kim", "phone": "010-1234-5678"}]}),
     "alerting.contacts.0.phone: should be a number in international (E.164) form: '+', the country code and the "
     "number without its leading 0, spaces or dashes, e.g. +821012345678"),
    (lambda d: d["cameras"][0].update(id="Gate 3"), "cameras.0.id: should be letters, digits, '_', '.' and '-'"),
    (lambda d: d.update(alerting={"channels": [{"kind": "webhook", "id": "ops", "url_env": "ops-hook"}]}),
     "should be the name of an environment variable"),
    # A window shorter than the camera's frame interval holds no frame now and then: its zones read UNKNOWN.
    (lambda d: (d["cameras"][0].update(fps=0.2), d.update(analytics={"window_seconds": 2})),
     "analytics.window_seconds (2) is shorter than camera cam1's frame interval (5 s at fps 0.2)"),
])
def test_bad_configuration_names_the_field(tmp_path, change, field):
    data = {"cameras": [yaml.safe_load(yaml.safe_dump(CAMERA))]}
    change(data)
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, data))
    assert field in str(error.value)


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1", "::", "::1", "fe80::1%eth0", "localhost",
                                  "exporter.cityguard.svc.cluster.local", "cam-host-1", "host.example."])
def test_a_listener_takes_an_ip_address_or_a_host_name(tmp_path, host):
    config = load_config(write(tmp_path, {"metrics": {"host": host}, "console": {"host": host},
                                          "alerting": {"receiver": {"host": host}}}))
    assert config.metrics.host == config.console.host == config.alerting.receiver.host == host


@pytest.mark.parametrize("source, kind", [
    ("http://10.0.0.5/mjpg/1", "mjpeg"), ("HTTPS://cctv.example/live", "hls"), ("${CAMERA_URL}", "mjpeg"),
    ("recorder/live.m3u8", "hls"),  # a live playlist a local encoder writes
    ("http://10.0.0.5/cgi-bin/snapshot.cgi", "image"),
])
def test_a_live_stream_kind_takes_a_source_it_reads_or_one_known_only_at_start(tmp_path, source, kind):
    config = load_config(write(tmp_path, {"cameras": [{**CAMERA, "source": source, "kind": kind}]}))
    assert config.cameras[0].kind == kind


def test_a_mistyped_or_renamed_field_is_named_with_the_closest_known_one(tmp_path):
    camera = {**CAMERA, "fsp": 5, "zones": [{**CAMERA["zones"][0], "are_m2": 50}]}
    data = {"cameras": [camera], "analytics": {"density_model": {"narrowed_max_people": 80}}, "alertng": {}}
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, data))
    problems = str(error.value).splitlines()[1:]
    assert sorted(problem.strip() for problem in problems) == [
        "alertng: Extra inputs are not permitted (did you mean alerting?)",
        "analytics.density_model.narrowed_max_people: Extra inputs are not permitted (did you mean "
        "rescaled_max_people?)",
        "cameras.0.fsp: Extra inputs are not permitted (did you mean fps?)",
        "cameras.0.zones.0.are_m2: Extra inputs are not permitted (did you mean area_m2?)",
    ]
    del data["alertng"]
    data["frobnicate"] = 1  # nothing like it: no guess
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, data))
    assert "  frobnicate: Extra inputs are not permitted" in str(error.value).splitlines()


def test_a_mistyped_field_of_an_alert_channel_is_named_with_the_closest_of_its_kind(tmp_path):
    channels = [{"kind": "webhook", "id": "ops", "url_evn": "OPS_URL"},
                {"kind": "sound", "id": "alarm", "fiel": "a.wav"}, {"kind": "sms", "id": "text", "templte": "{title}"}]
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, {"alerting": {"channels": channels}}))
    problems = [problem.strip() for problem in str(error.value).splitlines()[1:]]
    assert problems == ["alerting.channels.0.webhook.url_evn: Extra inputs are not permitted (did you mean url_env?)",
                        "alerting.channels.1.sound.file: Field required",
                        "alerting.channels.1.sound.fiel: Extra inputs are not permitted (did you mean file?)",
                        "alerting.channels.2.sms.templte: Extra inputs are not permitted (did you mean template?)"]


def test_an_outline_closed_or_with_a_vertex_repeated_is_read_without_the_repeat(tmp_path):
    """GeoJSON and shapely close an outline by repeating its first point; a double click repeats a vertex. Both
    outlines were refused as ones whose edges cross."""
    camera = {**CAMERA, "zones": [
        {"id": "closed", "polygon": [[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]], "area_m2": 50},
        {"id": "double-click", "polygon": [[0, 0], [100, 0], [100, 0], [100, 100]], "area_m2": 50}],
        "scene": {"lanes": [{"id": "closed", "polygon": [[0, 0], [50, 0], [50, 100], [0, 100], [0, 0]],
                             "direction": [0, 1]}]}}
    loaded = load_config(write(tmp_path, {"cameras": [camera]})).cameras[0]
    assert [zone.polygon for zone in loaded.zones] == [[(0, 0), (100, 0), (100, 100), (0, 100)],
                                                       [(0, 0), (100, 0), (100, 100)]]
    assert loaded.scene.lanes[0].polygon == [(0, 0), (50, 0), (50, 100), (0, 100)]
    # Closed, a segment is still no outline.
    camera["zones"] = [{"id": "segment", "polygon": [[0, 0], [100, 100], [0, 0]], "area_m2": 50}]
    with pytest.raises(ConfigError, match="cameras.0.zones.0.polygon: polygon has zero area"):
        load_config(write(tmp_path, {"cameras": [camera]}))


def test_a_truth_value_where_a_number_belongs_is_refused_naming_it(tmp_path):
    """YAML reads yes, no, on and off as true and false, which pydantic would take for 1 and 0: `fps: yes` for 1 fps."""
    path = tmp_path / "site.yaml"
    path.write_text("broker: {partitions: off}\n"
                    "model: {class_confidence: {0: yes}}\n"
                    "alerting:\n  channels:\n    - {id: ops, kind: webhook, url_env: OPS_URL, retry: {timeout_s: on}}\n"
                    "cameras:\n  - id: cam1\n    source: video.mp4\n    fps: yes\n"
                    "    zones:\n      - {id: z1, polygon: [[0, 0], [true, 0], [100, 100]], area_m2: 50}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    fields = [problem.strip().partition(": ")[::2] for problem in str(error.value).splitlines()[1:]]
    truth_value = "a number, not true/false (YAML reads yes, no, on and off as true/false)"
    assert sorted(fields) == [("alerting.channels.0.webhook.retry.timeout_s", truth_value),
                              ("broker.partitions", truth_value), ("cameras.0.fps", truth_value),
                              ("cameras.0.zones.0.polygon.1.0", truth_value),
                              ("model.class_confidence.0", truth_value)]
    # Whole numbers where fractions may be, and points as YAML lists, as before.
    path.write_text("cameras:\n  - id: cam1\n    source: video.mp4\n    fps: 5\n    loop: yes\n"
                    "    zones:\n      - {id: z1, polygon: [[0, 0], [100, 0], [100, 100]], area_m2: 50}\n")
    camera = load_config(path).cameras[0]
    assert (camera.fps, camera.loop, camera.zones[0].polygon[1]) == (5.0, True, (100.0, 0.0))


def test_cross_field_checks(tmp_path):
    with pytest.raises(ConfigError, match="cameras: duplicate camera id: cam1"):
        load_config(write(tmp_path, {"cameras": [CAMERA, CAMERA]}))
    with pytest.raises(ConfigError, match="unknown cameras: nope"):
        load_config(write(tmp_path, {"cameras": [CAMERA], "model": {"tiling": {"cameras": ["nope"]}}}))


def test_a_route_naming_a_camera_or_zone_that_does_not_exist_is_refused(tmp_path):
    def site(match: dict) -> dict:
        return {"cameras": [CAMERA], "alerting": {
            "channels": [{"id": "alarm", "kind": "sound", "file": "alarm.wav"}],
            "routes": [{"id": "night", "match": match, "broadcast": ["alarm"]}]}}

    assert load_config(write(tmp_path, site({"cameras": ["cam1"], "zones": ["z1"]}))).alerting.routes
    with pytest.raises(ConfigError, match=r"alerting.routes\[night\].match.cameras names unknown cameras: cam-2"):
        load_config(write(tmp_path, site({"cameras": ["cam1", "cam-2"]})))
    with pytest.raises(ConfigError, match=r"alerting.routes\[night\].match.zones names unknown zones: plaza"):
        load_config(write(tmp_path, site({"zones": ["plaza"]})))
    # A zone of another camera than the route's: no incident is of both.
    data = site({"cameras": ["cam1"], "zones": ["plaza"]})
    data["cameras"].append({**CAMERA, "id": "cam2", "zones": [{**CAMERA["zones"][0], "id": "plaza"}]})
    with pytest.raises(ConfigError, match=r"alerting.routes\[night\].match.zones names zones that none of its "
                                          r"match.cameras has, so it never matches: plaza"):
        load_config(write(tmp_path, data))


def test_a_key_given_twice_is_refused_with_its_line(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text("site: a\ncameras:\n  - id: cam1\n    source: video.mp4\n    fps: 5\n    fps: 50\n")
    with pytest.raises(ConfigError, match="duplicate key 'fps' at line 6"):
        load_config(path)


def test_anchors_and_merge_keys_still_load(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text("cameras:\n  - &cam {id: cam1, source: video.mp4, fps: 5}\n  - <<: *cam\n    id: cam2\n")
    assert [(camera.id, camera.fps) for camera in load_config(path).cameras] == [("cam1", 5.0), ("cam2", 5.0)]


def test_a_producer_asked_for_a_camera_that_is_not_configured_refuses_to_start(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    path = write(tmp_path, {"cameras": [CAMERA]})
    assert main(["produce", "--config", str(path), "--camera", "cam1", "--camera", "nope"]) == 2
    assert "--camera names cameras that are not configured: nope (known: cam1)" in capsys.readouterr().err


def test_environment_overrides_bootstrap_servers(tmp_path, monkeypatch):
    config = load_config(write(tmp_path, {"broker": {"bootstrap_servers": "a:9092"}}))
    assert config.bootstrap_servers() == "a:9092"
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "b:9092")
    assert config.bootstrap_servers() == "b:9092"


@pytest.mark.parametrize("servers", ["kafka", "kafka-1.cluster.local:9092,kafka-2.cluster.local:9093", "[::1]:9092",
                                     "[fd00::5]", "10.0.0.5:65535", "PLAINTEXT://kafka:9092, SASL_SSL://kafka:9094"])
def test_bootstrap_servers_take_what_the_kafka_clients_read(tmp_path, monkeypatch, servers):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", servers)
    assert load_config(write(tmp_path, {"broker": {"bootstrap_servers": servers}})).bootstrap_servers() == servers


def test_a_bootstrap_server_in_the_environment_with_a_port_out_of_range_is_refused_naming_the_variable(
        tmp_path, monkeypatch):
    config = load_config(write(tmp_path, {"broker": {"bootstrap_servers": "a:9092"}}))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:99999")
    with pytest.raises(ConfigError, match=r"^environment variable KAFKA_BOOTSTRAP_SERVERS: server 1 of 1 has a port "
                                          r"that is not a number from 1 to 65535$"):
        config.bootstrap_servers()


def test_cli_fails_at_start_naming_the_field(tmp_path, capsys):
    data = {"cameras": [{**CAMERA, "jpeg_quality": 500}]}
    assert main(["check-config", "--config", str(write(tmp_path, data))]) == 2
    assert "cameras.0.jpeg_quality" in capsys.readouterr().err


def test_unreadable_configuration(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("cameras: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_readme_configuration_reference_is_current():
    from schemas.settings.reference import README, readme_with_reference

    text = README.read_text()
    assert readme_with_reference(text) == text, "run: .venv/bin/python -m schemas.settings.reference --write"


def test_geometry_that_leaves_the_cameras_picture_is_named():
    from processors.analytics.registry import geometry_mismatch

    camera = load_config(Path("tests/devsets/traffic/site.yaml")).camera("bangkok-jam")  # a 1920x1080 camera
    assert camera.geometry_outside(1920, 1080) == [] and geometry_mismatch(camera, 1920, 1080) is None
    # The same geometry against the 1280x720 frames capture scales it to: drawn on the wrong picture.
    assert camera.geometry_outside(1280, 720) == ["scene.lanes[away].polygon reaches (400, 1080)",
                                                  "scene.sidewalks[left-footway].polygon reaches (0, 1080)"]
    assert geometry_mismatch(camera, 1280, 720).startswith(
        "camera bangkok-jam: scene.lanes[away].polygon reaches (400, 1080); scene.sidewalks")
    demo = load_config(DEFAULT_CONFIG).cameras[0]
    assert demo.geometry_outside(768, 576) == [] and demo.geometry_outside(768 * 0.99, 576 * 0.99) == []


def test_a_password_pasted_into_a_sources_placeholder_is_not_repeated_in_the_error(tmp_path):
    camera = {**CAMERA, "source": "rtsp://viewer:${Hunter2-Secret}@10.0.0.5/stream1"}
    with pytest.raises(ConfigError, match=r"cameras\.0\.source: placeholder 1") as refused:
        load_config(write(tmp_path, {"cameras": [camera]}))
    assert "Hunter2" not in str(refused.value)


def test_a_sources_variables_are_read_from_the_environment_at_start(monkeypatch):
    from schemas.settings.base import source_with_variables

    monkeypatch.setenv("ALLEY_CAMERA_PASSWORD", "s3cr%40t\n")
    assert source_with_variables("rtsp://viewer:${ALLEY_CAMERA_PASSWORD}@10.0.0.5/stream1", "camera a: source") == (
        "rtsp://viewer:s3cr%40t@10.0.0.5/stream1")
    monkeypatch.delenv("ALLEY_CAMERA_PASSWORD")
    with pytest.raises(ConfigError, match=r"^camera a: source: environment variable ALLEY_CAMERA_PASSWORD is not "
                                          r"set$"):
        source_with_variables("rtsp://viewer:${ALLEY_CAMERA_PASSWORD}@10.0.0.5/stream1", "camera a: source")
    assert source_with_variables("clips/$5 walk.mp4", "camera a: source") == "clips/$5 walk.mp4"


def test_a_source_names_every_unset_variable_at_once(monkeypatch):
    from schemas.settings.base import source_variable_values, source_with_variables

    for name in ("GATE_CAMERA_USER", "GATE_CAMERA_PASSWORD", "GATE_CAMERA_HOST"):
        monkeypatch.delenv(name, raising=False)
    source = "rtsp://${GATE_CAMERA_USER}:${GATE_CAMERA_PASSWORD}@${GATE_CAMERA_HOST}/${GATE_CAMERA_PASSWORD}"
    for read in (source_with_variables, source_variable_values):
        with pytest.raises(ConfigError, match=r"^camera gate: source: environment variables GATE_CAMERA_USER, "
                                              r"GATE_CAMERA_PASSWORD and GATE_CAMERA_HOST are not set$"):
            read(source, "camera gate: source")
    monkeypatch.setenv("GATE_CAMERA_USER", "viewer")
    monkeypatch.setenv("GATE_CAMERA_HOST", "10.0.0.5")
    with pytest.raises(ConfigError, match=r"^camera gate: source: environment variable GATE_CAMERA_PASSWORD is not "
                                          r"set$"):
        source_with_variables(source, "camera gate: source")
    monkeypatch.setenv("GATE_CAMERA_PASSWORD", "hunter2")
    assert source_with_variables(source, "camera gate: source") == "rtsp://viewer:hunter2@10.0.0.5/hunter2"
    assert source_variable_values(source, "camera gate: source") == ["viewer", "hunter2", "10.0.0.5"]

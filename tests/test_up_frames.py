"""Where the producer that `cityguard up` starts sends frames: by reference on the embedded broker, which keeps every
message in RAM, unless the site file sets producer.max_message_bytes; the console benchmark keeps them in the
messages, as its figures were measured."""
import yaml

from cityguard.bench.console import site_with_frames_in_messages
from cityguard.cli import main
from cityguard.start_checks import frames_by_reference, start_problems
from schemas.settings.config import load_config

EMBEDDED = True


def site(tmp_path, **producer):
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({"site": "s", **({"producer": producer} if producer else {}), "cameras": []}))
    return path


def test_on_the_embedded_broker_frames_go_by_reference_unless_the_site_file_sets_max_message_bytes(tmp_path):
    assert frames_by_reference(load_config(site(tmp_path)), EMBEDDED)
    assert frames_by_reference(load_config(site(tmp_path, frame_store_ttl_s=60)), EMBEDDED)
    # Set to the value it has anyway: the site chose what travels in a message, and keeps it.
    assert not frames_by_reference(load_config(site(tmp_path, max_message_bytes=1_000_000)), EMBEDDED)


def test_on_a_configured_broker_frames_travel_as_max_message_bytes_says(tmp_path):
    assert not frames_by_reference(load_config(site(tmp_path)), False)


def test_the_console_benchmark_runs_up_on_the_site_with_frames_in_the_messages(tmp_path):
    path = site(tmp_path, frame_store_dir="frames", frame_store_ttl_s=60)
    config = load_config(path)
    bench_site = load_config(site_with_frames_in_messages(config, path))
    assert not frames_by_reference(bench_site, EMBEDDED)
    assert bench_site.producer == config.producer and bench_site.base_dir == config.base_dir


def test_up_refuses_frames_by_reference_deleted_before_inference_stops_taking_them(tmp_path, monkeypatch):
    """A backlog up to model.max_frame_age_s old would reach frames the store deleted after frame_store_ttl_s, which
    inference dead-letters: refused where every frame goes by reference, in one line naming both settings."""
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)

    def problems(model: dict, **producer) -> list[str]:
        path = site(tmp_path, **producer)
        data = yaml.safe_load(path.read_text())
        path.write_text(yaml.safe_dump({**data, "model": {"offline_weights": None, **model}}))
        return start_problems(load_config(path))

    refused = ("model.max_frame_age_s (900 s) is longer than producer.frame_store_ttl_s (600 s) with frames sent by "
               "reference: a backlog would reach frames already deleted, which inference dead-letters; lower the one "
               "or raise the other")
    assert problems({"max_frame_age_s": 900}) == [refused]
    assert problems({"max_frame_age_s": 900}, frame_store_ttl_s=900) == []
    assert problems({"max_frame_age_s": 600}) == []
    # Frames in the messages: the store holds none that a backlog would look for.
    assert problems({"max_frame_age_s": 900}, max_message_bytes=1_000_000) == []
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092")
    assert problems({"max_frame_age_s": 900}) == []


def test_a_producer_told_to_send_frames_by_reference_refuses_a_store_that_deletes_them_too_soon(tmp_path, capsys,
                                                                                                  monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    path = site(tmp_path, frame_store_ttl_s=5)
    assert main(["produce", "--config", str(path), "--frames-by-reference"]) == 2
    assert capsys.readouterr().err == (
        "cityguard: error: model.max_frame_age_s (10 s) is longer than producer.frame_store_ttl_s (5 s) with frames "
        "sent by reference: a backlog would reach frames already deleted, which inference dead-letters; lower the "
        "one or raise the other\n")

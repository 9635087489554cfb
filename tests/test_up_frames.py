"""Where the producer that `cityguard up` starts sends frames: by reference on the embedded broker, which keeps every
message in RAM, unless the site file sets producer.max_message_bytes; the console benchmark keeps them in the
messages, as its figures were measured."""
import yaml

from cityguard.bench.console import site_with_frames_in_messages
from cityguard.up import frames_by_reference
from schemas.settings.config import load_config

EMBEDDED = object()  # stands in for the embedded broker: only whether there is one counts


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
    assert not frames_by_reference(load_config(site(tmp_path)), None)


def test_the_console_benchmark_runs_up_on_the_site_with_frames_in_the_messages(tmp_path):
    path = site(tmp_path, frame_store_dir="frames", frame_store_ttl_s=60)
    config = load_config(path)
    bench_site = load_config(site_with_frames_in_messages(config, path))
    assert not frames_by_reference(bench_site, EMBEDDED)
    assert bench_site.producer == config.producer and bench_site.base_dir == config.base_dir

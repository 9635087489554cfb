"""`cityguard bench sink` prints the metrics sink's CPU per frame; the tests check what it feeds the sink, not times."""
from prometheus_client import REGISTRY

from cityguard.bench.sink import messages, site
from cityguard.cli import main
from schemas import Detections, ZoneMetrics, decode
from schemas.settings.config import Config

TOPICS = Config().broker.topics.model_dump().values()


def test_the_frames_go_round_the_cameras_with_a_window_per_zone_every_ten_seconds_of_video():
    config = site(2)
    fed = messages(config, 200, 4, start=1000.0)  # 100 frames of each camera at 5 fps: 20 s of video
    topics = config.broker.topics
    frames = [decode(value, Detections) for topic, value in fed if topic == topics.detections]
    windows = [decode(value, ZoneMetrics) for topic, value in fed if topic == topics.zone_metrics]
    assert len(frames) == 200 and {len(frame.class_name) for frame in frames} == {4}
    assert [frame.camera_id for frame in frames[:4]] == ["bench-sink-0", "bench-sink-1"] * 2
    assert sorted((window.camera_id, window.window_end) for window in windows) == [
        ("bench-sink-0", 1009.8), ("bench-sink-0", 1019.8), ("bench-sink-1", 1009.8), ("bench-sink-1", 1019.8)]


def test_the_benchmark_prints_a_row_per_boxes_count_and_the_sink_takes_every_frame(capsys):
    def sample(name: str, **labels) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0

    unreadable = sum(sample("cityguard_metrics_sink_unreadable_total", topic=topic) for topic in TOPICS)
    frames = sample("cityguard_frames_detected_total", camera="bench-sink-0")
    assert main(["bench", "sink", "--cameras", "3", "--boxes", "4,8", "--frames", "60"]) == 0
    out = capsys.readouterr().out
    assert "   4 boxes a frame:" in out and "   8 boxes a frame:" in out and "cameras at 5 fps per core" in out
    # what was timed was handled, not refused as unreadable: per row, a frame of each camera first, then its 20
    assert sum(sample("cityguard_metrics_sink_unreadable_total", topic=topic) for topic in TOPICS) == unreadable
    assert sample("cityguard_frames_detected_total", camera="bench-sink-0") == frames + 2 * (1 + 20)

"""`cityguard bench sink` prints the metrics sink's CPU per frame; the tests check what it feeds the sink, not times."""
from cityguard.bench.sink import messages, site
from cityguard.cli import main
from schemas import Detections, ZoneMetrics, decode


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


def test_the_benchmark_prints_a_row_per_boxes_count(capsys):
    assert main(["bench", "sink", "--cameras", "3", "--boxes", "4,8", "--frames", "60"]) == 0
    out = capsys.readouterr().out
    assert "   4 boxes a frame:" in out and "   8 boxes a frame:" in out and "cameras at 5 fps per core" in out

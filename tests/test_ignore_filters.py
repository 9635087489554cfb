"""Operator ignore filters: exactly their camera, class and region, until they expire; stored, listed, removed."""
import json
import math

import numpy as np
import pytest

from cityguard.cli import main
from processors.analytics.ignore_filters import (
    IgnoreFilter,
    IgnoreFilterReader,
    IgnoreFilterStore,
    UnusableRegion,
    ignored_mask,
    without_ignored,
)
from processors.analytics.traffic.analyzer import TrafficAnalyzer
from schemas import Detections, EventState
from schemas.settings.config import Config
from tests.traffic.scenarios import pedestrians, stopped_in_zone
from tests.traffic.simulator import T0, WB_Y
from tests.traffic.suite import camera, frames

BUS_STOP = ((900.0, WB_Y - 30), (1100.0, WB_Y - 30), (1100.0, WB_Y + 30), (900.0, WB_Y + 30))
ROAD = ((0.0, 290.0), (1280.0, 290.0), (1280.0, 470.0), (0.0, 470.0))


def a_filter(class_name="person", polygon=((0, 0), (100, 0), (100, 100), (0, 100)), camera_id="cam",
             expires_at=None) -> IgnoreFilter:
    return IgnoreFilter("f1", camera_id, class_name, tuple(polygon), T0, expires_at)


def frame(camera_id="cam", at=T0 + 10) -> Detections:
    # feet at (50, 90) person, (50, 90) car, (150, 90) person, (50, 90) person tracked
    return Detections(camera_id=camera_id, seq=1, captured_at=at, image_width=640, image_height=480, model="m",
                      inference_ms=1, xyxy=[(40, 10, 60, 90), (30, 50, 70, 90), (140, 10, 160, 90), (45, 20, 55, 90)],
                      confidence=[0.9, 0.8, 0.7, 0.6], class_id=[0, 2, 0, 0],
                      class_name=["person", "car", "person", "person"], track_id=[1, 2, 3, 4])


def test_a_filter_drops_only_its_class_inside_its_region_on_its_camera():
    assert ignored_mask(frame(), [a_filter()]).tolist() == [True, False, False, True]
    kept = without_ignored(frame(), [a_filter()])
    assert kept.class_name == ["car", "person"] and kept.track_id == [2, 3] and kept.confidence == [0.8, 0.7]
    assert not ignored_mask(frame("other"), [a_filter()]).any()
    assert not ignored_mask(frame(), [a_filter("bicycle")]).any()


def test_a_filter_stops_at_its_expiry_judged_by_capture_time():
    rule = a_filter(expires_at=T0 + 60)
    assert ignored_mask(frame(at=T0 + 59), [rule]).any()
    assert not ignored_mask(frame(at=T0 + 60), [rule]).any()


@pytest.mark.parametrize(("polygon", "reason"), [
    (((0, 0), (100, 100), (100, 0), (0, 100)), "edges cross"),
    (((0, 50), (100, 50), (50, 50)), "zero area"),  # collinear: it would cover no one
    (((0, 0), (math.inf, 0), (math.inf, 100), (0, 100)), "finite"),
    (((0, 0), (math.nan, 0), (0, 100)), "finite"),
    (((0, 0), (100, 0)), "3 or more points"),
])
def test_a_region_that_covers_nothing_is_refused(polygon, reason):
    with pytest.raises(UnusableRegion, match=reason):
        a_filter(polygon=polygon)


def test_a_region_closed_or_with_a_point_repeated_is_kept_without_the_repeat():
    # As a zone's outline: GeoJSON closes one by repeating its first point, a double click repeats a vertex.
    assert a_filter(polygon=((0, 0), (100, 0), (100, 0), (100, 100), (0, 100), (0, 0))).polygon == (
        (0, 0), (100, 0), (100, 100), (0, 100))


def test_a_stored_region_that_covers_nothing_is_left_out_and_the_rest_still_apply(tmp_path):
    store = IgnoreFilterStore(tmp_path / "ignore.json")
    kept = store.add("cam", "car", [(0, 0), (9, 0), (9, 9)], None, now=1000.0)
    stored = json.loads(store.path.read_text())  # as an earlier version let a collinear region through
    stored["filters"].append({**stored["filters"][0], "id": "flat", "polygon": [[0, 5], [9, 5], [4, 5]]})
    store.path.write_text(json.dumps(stored))
    assert [f.id for f in store.load()] == [kept.id]


def traffic_events(filters: list[IgnoreFilter]) -> list[tuple[str, tuple[int, ...]]]:
    analyzer = TrafficAnalyzer.restore(camera(), Config(), None)
    events = []
    for detections, blobs in frames(stopped_in_zone(np.random.default_rng(3)), np.random.default_rng(3)):
        output = analyzer.update(without_ignored(detections, filters).model_copy(update={"static_blobs": blobs}))
        events += [(event.type, tuple(event.track_ids)) for event in output.events]
    return events


def test_filtering_the_bus_stop_silences_the_car_stopped_there_and_nothing_else():
    everything = traffic_events([])
    assert {("stopped_vehicle", (1,)), ("stopped_vehicle", (2,))} <= set(everything)
    bus_stop_cars = [a_filter("car", BUS_STOP, "sim")]
    silenced = traffic_events(bus_stop_cars)
    assert ("stopped_vehicle", (2,)) not in silenced
    assert silenced == [event for event in everything if event != ("stopped_vehicle", (2,))]
    assert traffic_events([a_filter("truck", BUS_STOP, "sim")]) == everything
    assert traffic_events([a_filter("car", BUS_STOP, "sim", expires_at=T0)]) == everything


def test_store_adds_lists_removes_and_prunes_expired(tmp_path):
    store = IgnoreFilterStore(tmp_path / "ignore.json")
    old = store.add("cam", "person", [(0, 0), (9, 0), (9, 9)], 60, now=1000.0)
    kept = store.add("cam", "car", [(0, 0), (9, 0), (9, 9)], None, note="parked trailer", now=1050.0)
    assert [f.id for f in store.load()] == [old.id, kept.id]
    newer = store.add("cam", "person", [(0, 0), (5, 0), (5, 5)], 10, now=2000.0)  # `old` expired at 1060
    assert [f.id for f in store.load()] == [kept.id, newer.id]
    store.remove(kept.id)
    assert [f.id for f in store.load()] == [newer.id]
    with pytest.raises(KeyError, match="no ignore filter"):
        store.remove("nope")
    reader = IgnoreFilterReader(store, interval_s=0)
    assert [f.id for f in reader.current(2000.0)] == [newer.id]
    (tmp_path / "ignore.json").write_text("{broken")
    assert [f.id for f in reader.current(2000.0)] == [newer.id] and "not an ignore-filters file" in reader.error


def test_frames_analysed_again_after_a_restart_are_filtered_as_the_first_time(tmp_path):
    # The stage checkpointed at frame C and analysed on to frame K, where a person on the roadway raised an
    # incident; then the operator added a filter for people on the road, and the worker restarted from C.
    detections = [d.model_copy(update={"static_blobs": b})
                  for d, b in frames(pedestrians(np.random.default_rng(3)), np.random.default_rng(3))]
    uninterrupted = TrafficAnalyzer.restore(camera(), Config(), None)
    opened_at = next(i for i, d in enumerate(detections) if any(
        e.type == "pedestrian_on_roadway" for e in uninterrupted.update(d).events))
    checkpoint_at, added_at = opened_at - 5, opened_at + 5
    store = IgnoreFilterStore(tmp_path / "ignore.json")
    reader = IgnoreFilterReader(store, interval_s=0)
    first_run = TrafficAnalyzer.restore(camera(), Config(), None)
    sent = []
    for i, d in enumerate(detections[:added_at]):
        if i == checkpoint_at:
            checkpoint = first_run.state_bytes()
        sent += first_run.update(without_ignored(d, reader.current(d.captured_at))).events
    store.add("sim", "person", ROAD, None, now=detections[added_at].captured_at)

    restarted = TrafficAnalyzer.restore(camera(), Config(), checkpoint)
    for d in detections[checkpoint_at:]:
        sent += restarted.update(without_ignored(d, reader.current(d.captured_at))).events

    on_road = [(e.event_id, e.state) for e in sent if e.type == "pedestrian_on_roadway"]
    assert {state for _, state in on_road} == {EventState.OPENED, EventState.RESOLVED}
    assert len({event_id for event_id, _ in on_road}) == 1


def test_ignore_commands(tmp_path, capsys):
    store = str(tmp_path / "ignore.json")
    assert main(["ignore", "add", "--store", store, "--camera", "campus", "--class", "person",
                 "--polygon", "10,10 60,10 60,120 10,120", "--expires", "2h", "--note", "statue"]) == 0
    added = IgnoreFilterStore(tmp_path / "ignore.json").load()[0]
    assert added.expires_at - added.created_at == 7200 and added.polygon[2] == (60.0, 120.0)
    capsys.readouterr()
    assert main(["ignore", "list", "--store", store]) == 0
    listing = capsys.readouterr().out
    assert added.id in listing and "person" in listing and "statue" in listing
    assert main(["ignore", "remove", added.id, "--store", store]) == 0
    assert IgnoreFilterStore(tmp_path / "ignore.json").load() == []


def test_ignore_mistakes_are_refused_in_one_line(tmp_path, capsys):
    add = ["ignore", "add", "--camera", "campus", "--class", "person", "--polygon", "10,10 60,10 60,120"]
    with pytest.raises(SystemExit) as refused:
        main([*add, "--store", str(tmp_path / "ignore.json"), "--expires", "0s"])
    assert refused.value.code == 2 and "would have expired already" in capsys.readouterr().err
    typo = tmp_path / "nowhere" / "ignore.json"
    assert main([*add, "--store", str(typo)]) == 2
    assert capsys.readouterr().err == f"cityguard: error: --store {typo}: no folder {typo.parent}\n"
    assert main(["ignore", "list", "--store", str(typo)]) == 2
    assert not typo.parent.exists()
    capsys.readouterr()
    assert main([*add[:5], "persn", *add[6:], "--store", str(tmp_path / "ignore.json")]) == 0
    assert "warning: class 'persn' is neither a COCO class nor one the site's scenes name" in capsys.readouterr().err


@pytest.mark.broker
def test_the_analytics_stage_applies_a_filter_added_while_it_runs(kafka_bootstrap, tmp_path):
    """Four people on the walkway, two of them standing where a filter is added mid-stream: the zone counts four,
    then two, without a restart."""
    import time

    from infra.kafka import create_topics, make_producer
    from schemas import ZoneMetrics, decode, encode
    from tests.conftest import pipeline_config
    from tests.pipeline_helpers import StageProcess, TopicReader

    store = IgnoreFilterStore(tmp_path / "ignore.json")
    config, path = pipeline_config(tmp_path, "ignore", kafka_bootstrap,
                                   analytics={"window_seconds": 2, "ignore_filters": str(store.path)})
    topics = config.broker.topics
    create_topics(kafka_bootstrap, topics.all(), config.broker.partitions)
    feet_x = [100, 200, 500, 600]  # the first two in the left half, where the filter goes
    boxes = [(x - 10, 300, x + 10, 400) for x in feet_x]
    analyze = StageProcess("analyze", path, kafka_bootstrap, tmp_path)
    metrics = TopicReader(kafka_bootstrap, topics.zone_metrics)
    producer = make_producer(kafka_bootstrap)

    def people(records) -> list[int]:
        return [decode(r.value, ZoneMetrics).people_max for r in records]

    def publish(first_seq: int, count: int) -> None:
        # Captured now: a filter applies to frames captured since it was added.
        started = time.time()
        for seq in range(first_seq, first_seq + count):
            frame = Detections(camera_id="campus", seq=seq, captured_at=started + (seq - first_seq) * 0.5,
                               image_width=768, image_height=576, model="m", inference_ms=1, xyxy=boxes,
                               confidence=[0.9] * 4, class_id=[0] * 4, class_name=["person"] * 4)
            producer.send(topics.detections, key=b"campus", value=encode(frame))
        producer.flush()

    try:
        publish(0, 12)  # 6 s: two closed windows of four people
        metrics.wait_for(lambda records: len(records) >= 2, 120, [analyze], "windows before the filter")
        store.add("campus", "person", [(0, 0), (384, 0), (384, 576), (0, 576)], None, note="statues")
        time.sleep(3)  # the stage re-reads the file every 2 s
        publish(12, 12)
        records = metrics.wait_for(lambda records: 2 in people(records), 60, [analyze], "windows after the filter")
    finally:
        producer.close()
        metrics.close()
        analyze.stop()
    counts = people(records)
    assert counts[:2] == [4, 4] and set(counts) <= {2, 4} and counts[-1] == 2

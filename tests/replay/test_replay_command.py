"""`cityguard replay` on the shared clips: events in video time, the Event JSON lines `cityguard eval events` reads,
and a recording that replays to the same events without the model."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
import yaml

from cityguard.cli import main
from cityguard.evaluation.loaders import holds_frame_scores, load_event_csv, load_event_messages
from cityguard.replay import CLIP_ORIGIN_S, recorded_detections, recording_offset, zone_summaries
from schemas import Detections, Event, LineCounts, PictureFault, RiskLevel, ZoneMetrics
from schemas.geometry import box_iou
from tests.conftest import CAR_CLIP, LOT_CLIP, OFFLINE_MODEL, REPO, VTEST


def site(tmp_path):
    """The lot as a pedestrian area (a plaza), as an operator would configure it."""
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({
        "site": "replay-test",
        "model": {"offline_weights": str(OFFLINE_MODEL)},
        "cameras": [{"id": "lot", "source": str(LOT_CLIP), "fps": 12, "scene": {
            "pedestrian_areas": [{"id": "plaza", "polygon": [[0, 0], [480, 0], [480, 270], [0, 270]]}]}}],
    }))
    return path


@pytest.mark.slow
def test_replay_writes_events_in_clip_time_a_recording_replays_the_same_and_ignore_filters_apply(tmp_path, capsys):
    config = site(tmp_path)
    events, scores, recording = tmp_path / "events.jsonl", tmp_path / "scores.csv", tmp_path / "detections.jsonl"
    assert main(["replay", "--config", str(config), "--camera", "lot", str(LOT_CLIP), "--events", str(events),
                 "--frame-scores", str(scores), "--record-detections", str(recording)]) == 0
    printed = capsys.readouterr().out
    assert "opened   vehicle_in_pedestrian_area" in printed
    intervals = load_event_messages(events)
    assert intervals and {i.type for i in intervals} == {"vehicle_in_pedestrian_area"}
    assert all(0 <= i.start <= i.end <= 3.5 for i in intervals), "times are seconds from the clip start"
    frame_scores = load_event_csv(scores)
    assert holds_frame_scores(scores)  # told from events by its frame column
    assert len(frame_scores) == len(recording.read_text().splitlines())
    assert max(s.score for s in frame_scores) > 0.5

    again = tmp_path / "again.jsonl"
    assert main(["replay", "--config", str(config), "--camera", "lot", "--detections", str(recording),
                 "--events", str(again)]) == 0
    assert again.read_text() == events.read_text()

    # The operators' ignore filters apply as in the analytics stage: the car and the bicycle no longer reach the rules.
    filters = tmp_path / "ignore-filters.json"
    for name in ("car", "bicycle"):
        assert main(["ignore", "add", "--config", str(config), "--store", str(filters), "--camera", "lot",
                     "--class", name, "--polygon", "0,0 480,0 480,270 0,270", "--expires", "never"]) == 0
    filtered_site = yaml.safe_load(config.read_text())
    filtered_site["analytics"] = {"ignore_filters": str(filters)}
    config.write_text(yaml.safe_dump(filtered_site))
    capsys.readouterr()
    assert main(["replay", "--config", str(config), "--camera", "lot", "--detections", str(recording)]) == 0
    assert "vehicle_in_pedestrian_area" not in capsys.readouterr().out


@pytest.mark.slow
def test_a_folder_of_the_clips_pictures_replays_as_the_clip(tmp_path, capsys):
    pictures = tmp_path / "frames"
    pictures.mkdir()
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(LOT_CLIP), str(pictures / "%04d.png")], check=True)
    scores = tmp_path / "scores.csv"
    assert main(["replay", "--config", str(site(tmp_path)), "--camera", "lot", str(pictures),
                 "--frame-scores", str(scores)]) == 0
    assert "opened   vehicle_in_pedestrian_area" in capsys.readouterr().out
    frame_scores = load_event_csv(scores)
    assert len(frame_scores) == len(list(pictures.iterdir()))
    assert [s.start for s in frame_scores] == pytest.approx([index / 12 for index in range(len(frame_scores))],
                                                            abs=1e-3)  # at the camera's 12 fps


@pytest.mark.slow
def test_a_crowd_camera_replays_with_its_density_maps_in_video_time_at_the_footages_own_rate(tmp_path, capsys):
    # 40 s of a street with 3-9 people (vtest.avi) recorded at 2 fps, for a camera configured at the default 5 fps,
    # in a zone of 3 m^2: about 2 p/m^2 once the map counts them. A map every 20 s of video keeps the test short.
    clip = tmp_path / "street-2fps.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(VTEST), "-t", "40", "-r", "2", "-an",
                    "-c:v", "libx264", "-preset", "ultrafast", str(clip)], check=True, timeout=60)
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump({
        "site": "replay-crowd",
        "model": {"offline_weights": str(OFFLINE_MODEL)},
        "analytics": {"density_model": {"interval_seconds": 20}, "counting": {"density_map_max_age_seconds": 30}},
        "cameras": [{"id": "street", "source": str(clip), "zones": [{"id": "walkway", "area_m2": 3,
            "polygon": [[0, 180], [330, 195], [560, 140], [768, 120], [768, 490], [600, 420], [360, 310], [0, 265]]}]}],
    }))
    events, recording = tmp_path / "events.jsonl", tmp_path / "detections.jsonl"
    assert main(["replay", "--config", str(config), "--camera", "street", str(clip), "--events", str(events),
                 "--record-detections", str(recording)]) == 0
    assert "the footage runs at 2 fps, below camera street's 5: replayed at the footage's rate" in (
        capsys.readouterr().err)
    recorded = [Detections.model_validate_json(line) for line in recording.read_text().splitlines()]
    assert len(recorded) == 80
    mapped = [detections.captured_at - recorded[0].captured_at for detections in recorded
              if detections.density_map is not None]
    assert mapped == pytest.approx([0, 20])  # from the first frame, every interval_seconds of video
    reasons = [Event.model_validate_json(line).reason for line in events.read_text().splitlines()]
    assert any("p/m²" in reason for reason in reasons), reasons  # the zone's level follows the measured density
    assert not any("no density map" in reason or "expected frames" in reason for reason in reasons), reasons

    again = tmp_path / "again.jsonl"  # the recording carries the maps and its rate: the analyzers alone agree
    assert main(["replay", "--config", str(config), "--camera", "street", "--detections", str(recording),
                 "--events", str(again)]) == 0
    assert again.read_text() == events.read_text()


def site_whose_density_model_is_missing(path):
    """A crowd camera `street` on the sample clip, its density model's weights not there."""
    path.write_text(yaml.safe_dump({
        "site": "replay-crowd", "model": {"offline_weights": str(OFFLINE_MODEL)},
        "analytics": {"density_model": {"weights": "missing.npz"}},
        "cameras": [{"id": "street", "source": str(VTEST), "zones": [
            {"id": "walkway", "area_m2": 30, "polygon": [[0, 0], [100, 0], [100, 100]]}]}],
    }))
    return path


def test_a_crowd_camera_whose_density_model_cannot_be_loaded_is_a_clear_error(tmp_path, capsys):
    config = site_whose_density_model_is_missing(tmp_path / "site.yaml")
    assert main(["replay", "--config", str(config), "--camera", "street", str(VTEST)]) == 1
    error = capsys.readouterr().err
    assert "the density model for camera street's zones cannot be loaded" in error and "missing.npz" in error


def test_replay_needs_exactly_one_input_of_a_known_camera(tmp_path, capsys):
    """Each mistake is one line naming it, status 2."""
    config = site(tmp_path)

    def refused(*args: str) -> str:
        assert main(["replay", "--config", str(config), *args]) == 2
        error = capsys.readouterr().err
        assert error.startswith("cityguard: error: ") and error.count("\n") == 1, error
        return error

    assert "give either a CLIP or --detections" in refused("--camera", "lot")
    assert "camera 'nope' is not in the site configuration (cameras: lot)" in refused("--camera", "nope", str(LOT_CLIP))
    assert f"no such clip: {tmp_path / 'missing.mp4'}" in refused("--camera", "lot", str(tmp_path / "missing.mp4"))
    assert "unknown asset 'nope.mp4'" in refused("--camera", "lot", "asset:nope.mp4")
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video")
    assert f"{not_video} is not a video this decoder reads" in refused("--camera", "lot", str(not_video))
    recording = tmp_path / "other.jsonl"
    recording.write_text(Detections(camera_id="gate", seq=0, captured_at=1.0, image_width=64, image_height=48,
                                    model="m", inference_ms=0.0).model_dump_json() + "\n")
    assert f"{recording} holds no Detections of camera lot" in refused("--camera", "lot", "--detections",
                                                                       str(recording))
    assert "--start-time is for a clip" in refused("--camera", "lot", "--detections", str(recording),
                                                   "--start-time", "1700000000")
    assert f"{LOT_CLIP}: not a Detections recording" in refused("--camera", "lot", "--detections", str(LOT_CLIP))
    recording.write_text('{"camera_id": "lot"}\n')
    assert f"{recording}:1: not a Detections message: seq: Field required (and " in refused(
        "--camera", "lot", "--detections", str(recording))


def test_a_replay_refused_at_its_start_leaves_the_files_an_earlier_one_wrote(tmp_path, capsys):
    """Footage that is no video, or a model that cannot be loaded, is refused before an output file is opened."""
    outputs = {option: tmp_path / f"earlier{option.replace('-', '_')}" for option in
               ("--events", "--line-counts", "--frame-scores", "--record-detections")}
    for path in outputs.values():
        path.write_text("written by an earlier replay\n")
    given = [part for option, path in outputs.items() for part in (option, str(path))]
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video")
    assert main(["replay", "--config", str(site(tmp_path)), "--camera", "lot", str(not_video), *given]) == 2
    crowd = site_whose_density_model_is_missing(tmp_path / "crowd.yaml")
    assert main(["replay", "--config", str(crowd), "--camera", "street", str(VTEST), *given]) == 1
    assert "cannot be loaded" in capsys.readouterr().err
    assert all(path.read_text() == "written by an earlier replay\n" for path in outputs.values())


def test_a_replay_of_a_recording_refused_at_its_start_leaves_the_files_an_earlier_one_wrote(tmp_path, capsys):
    """An ignore filter file that cannot be read, or an output in a folder that is not there, is refused before any
    output file is opened."""
    dev = REPO / "tests" / "devsets" / "traffic"
    outputs = {option: tmp_path / f"earlier{option.replace('-', '_')}" for option in
               ("--events", "--line-counts", "--frame-scores", "--record-detections")}
    for path in outputs.values():
        path.write_text("written by an earlier replay\n")
    given = [part for option, path in outputs.items() for part in (option, str(path))]
    broken = yaml.safe_load((dev / "site.yaml").read_text())
    (tmp_path / "filters.json").write_text("{not json")
    broken.setdefault("analytics", {})["ignore_filters"] = str(tmp_path / "filters.json")
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(broken, allow_unicode=True))
    recording = dev / "detections" / "albert-crash.jsonl.gz"
    replay = ["replay", "--config", str(tmp_path / "site.yaml"), "--camera", "albert-crash", "--detections",
              str(recording)]
    assert main([*replay, *given]) == 2
    assert "filters.json" in capsys.readouterr().err
    replay[2] = str(dev / "site.yaml")
    assert main([*replay, *given[:6], "--record-detections", str(tmp_path / "no-such-folder" / "d.jsonl")]) == 2
    assert "no-such-folder" in capsys.readouterr().err
    assert all(path.read_text() == "written by an earlier replay\n" for path in outputs.values())


@pytest.mark.slow
def test_a_camera_that_capture_scales_down_reports_its_boxes_in_its_own_pixels(tmp_path):
    # Operators draw zones and lanes on the camera's own picture; frames wider than max_width are scaled down for
    # the detector. The boxes come back in the camera's pixels, where that geometry is.
    clip = tmp_path / "street.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(VTEST), "-t", "10", "-r", "2", "-an",
                    "-c:v", "libx264", "-preset", "ultrafast", str(clip)], check=True, timeout=60)
    recorded = {}
    for max_width in (768, 384):
        config = tmp_path / f"site-{max_width}.yaml"
        config.write_text(yaml.safe_dump({
            "site": "replay-scaled", "model": {"offline_weights": str(OFFLINE_MODEL)},
            "cameras": [{"id": "street", "source": str(clip), "fps": 2, "max_width": max_width}]}))
        recording = tmp_path / f"detections-{max_width}.jsonl{'.gz' if max_width == 384 else ''}"  # as named
        assert main(["replay", "--config", str(config), "--camera", "street", str(clip),
                     "--record-detections", str(recording)]) == 0
        recorded[max_width] = list(recorded_detections(recording, "street"))
    full, scaled = recorded[768], recorded[384]
    assert len(full) == len(scaled) == 20
    assert {(d.image_width, d.image_height) for d in scaled} == {(768, 576)}
    assert max(box[2] for d in scaled for box in d.xyxy) > 500, "boxes on the right half, beyond 384 px"
    overlaps = np.concatenate([
        box_iou(small.boxes()[people], wide.boxes()).max(axis=1) for small, wide in zip(scaled, full, strict=True)
        if len(wide) and (people := np.array(small.class_name) == "person").any()])
    assert len(overlaps) >= 20 and np.median(overlaps) > 0.6, "the same people in the same place"


@pytest.mark.slow
def test_frozen_footage_is_marked_as_the_producer_marks_it_live(tmp_path):
    """A recorded outage where the camera's encoder repeated its last picture: the frames from `frozen_after_s` into
    it carry the producer's verdict, so the zones read unknown and the traffic rules skip them, as they would live."""
    clip = tmp_path / "freezes.mp4"  # 4 s of street, then its last picture for 14 s
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-t", "4", "-i", str(VTEST), "-vf",
                    "tpad=stop_mode=clone:stop_duration=14", "-r", "2", "-an", "-c:v", "libx264", "-preset",
                    "ultrafast", str(clip)], check=True, timeout=60)
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump({
        "site": "replay-frozen", "model": {"offline_weights": str(OFFLINE_MODEL)},
        "producer": {"frozen_after_s": 5}, "cameras": [{"id": "street", "source": str(clip), "fps": 2}]}))
    recording = tmp_path / "detections.jsonl"
    assert main(["replay", "--config", str(config), "--camera", "street", str(clip),
                 "--record-detections", str(recording)]) == 0
    recorded = list(recorded_detections(recording, "street"))
    start = recorded[0].captured_at
    faults = {round(d.captured_at - start, 1): d.picture_fault for d in recorded}
    assert max(faults) >= 17
    marked = [t for t, fault in faults.items() if fault is not None]
    assert {faults[t] for t in marked} == {PictureFault.FROZEN}
    # From 5 s after the last change of picture (about 4 s in, as the encoder ends the clip) to the end.
    assert 9.0 <= marked[0] <= 10.5 and marked == [t for t in faults if t >= marked[0]]


@pytest.mark.slow
def test_replay_reports_the_counting_lines_crossings_up_to_the_end_of_the_footage(tmp_path, capsys):
    # The example site's aisle line on car-detection.mp4: two cars cross it each way (counted by eye; see
    # tests/traffic/test_real_clip.py). Windows are aligned to the clock, so the first one is cut to the clip's start
    # (20 s of it); the clip ends 10 s into the second, whose crossing counts too.
    windows = tmp_path / "line-counts.jsonl"
    assert main(["replay", "--config", str(REPO / "configs" / "intersection-example.yaml"), "--camera",
                 "parking-aisle", str(CAR_CLIP), "--line-counts", str(windows)]) == 0
    printed = capsys.readouterr().out
    assert "line mid-aisle: 4 crossings" in printed
    counted = [window for line in windows.read_text().splitlines()
               if (window := LineCounts.model_validate_json(line)).line_id == "mid-aisle"]
    assert counted[0].window_start == 0 and counted[-1].window_end == pytest.approx(30.24, abs=0.2)
    assert all(a.window_end == b.window_start for a, b in zip(counted, counted[1:], strict=False))
    by_direction = {}
    for window in counted:
        for direction, count in zip(window.direction, window.count, strict=True):
            by_direction[direction] = by_direction.get(direction, 0) + count
    assert by_direction == {"northbound": 2, "southbound": 2} and counted[-1].total() >= 1


def test_a_recordings_line_counts_are_printed_and_written_in_clip_time(tmp_path, capsys):
    # A car crosses the line down, recorded at 5 fps from the replay's internal origin: no model needed.
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump({"site": "lines", "cameras": [{"id": "c", "source": "c.mp4", "scene": {
        "counting_lines": [{"id": "l", "start": [0, 400], "end": [1280, 400], "forward": "down",
                            "backward": "up"}]}}]}))
    recording = tmp_path / "detections.jsonl"
    recording.write_text("".join(Detections(
        camera_id="c", seq=seq, captured_at=CLIP_ORIGIN_S + seq * 0.2, image_width=1280, image_height=720,
        model="t", inference_ms=0, xyxy=[(460.0, y - 40, 540.0, y)], confidence=[0.9], class_id=[2],
        class_name=["car"], track_id=[1]).model_dump_json() + "\n"
        for seq, y in enumerate((360, 380, 410, 430, 450, 470))))
    windows = tmp_path / "line-counts.jsonl"
    assert main(["replay", "--config", str(config), "--camera", "c", "--detections", str(recording),
                 "--line-counts", str(windows)]) == 0
    assert "line l: 1 crossing (car down 1)" in capsys.readouterr().out
    [window] = [LineCounts.model_validate_json(line) for line in windows.read_text().splitlines()]
    assert (window.window_start, window.window_end) == (0, pytest.approx(1.2)) and window.total() == 1


def test_a_replay_sums_up_each_crowd_zone():
    def window(zone: str, start: float, people: int, level: RiskLevel) -> ZoneMetrics:
        return ZoneMetrics(camera_id="cam", zone_id=zone, window_start=start, window_end=start + 10, frames=50,
                           area_m2=20, people_mean=people, people_max=people, density_mean_per_m2=people / 20,
                           density_max_per_m2=people / 20, risk_level=level, risk_reason="-", last_seq=int(start))

    windows = [window("plaza", 0, 5, RiskLevel.UNKNOWN), window("plaza", 10, 60, RiskLevel.CAUTION),
               window("plaza", 20, 90, RiskLevel.WARNING), window("gate", 0, 0, RiskLevel.UNKNOWN)]
    assert zone_summaries(windows, ["plaza", "gate", "exit"], footage_end=37.5) == [
        "zone exit: no window closed (the footage is shorter than the analytics window)",
        "zone gate: 1 window, never judged, 1 unknown; the last 27.5 s of footage not judged",
        "zone plaza: 3 windows, people up to 90, density up to 4.50 p/m², highest level warning, 1 unknown; "
        "the last 7.5 s of footage not judged"]
    assert zone_summaries(windows[1:3], ["plaza"], footage_end=30.0)[0].endswith("highest level warning")


def test_a_recording_replays_in_its_own_times():
    """Made from a clip without a start time: seconds from the clip's start; with unix capture times: as they are."""
    def recording(first: float) -> list[Detections]:
        return [Detections(camera_id="lot", seq=0, captured_at=first, image_width=64, image_height=48, model="m",
                           inference_ms=0.0)]

    assert recording_offset(recording(CLIP_ORIGIN_S)) == CLIP_ORIGIN_S
    assert recording_offset(recording(1_764_000_000.0)) == 0.0

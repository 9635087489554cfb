"""The live status line `cityguard up` prints: a zone whose windows stopped reads unknown there too, never the level
its last window had."""
import time
from collections import defaultdict
from types import SimpleNamespace

from cityguard.up import CameraStatusLine, absorb, status_block
from schemas import CameraState, CameraStatus, RiskLevel, ZoneMetrics, encode
from schemas.settings.config import Config

WALKWAY = {"id": "walkway", "polygon": [[0, 0], [100, 0], [100, 100]], "area_m2": 260}


def window(end: float) -> ZoneMetrics:
    return ZoneMetrics(camera_id="campus", zone_id="walkway", window_start=end - 10, window_end=end, frames=50,
                       area_m2=260, people_mean=6.8, people_max=8, density_mean_per_m2=0.026,
                       density_max_per_m2=0.031, risk_level=RiskLevel.NORMAL, risk_reason="", last_seq=1)


def test_a_zone_whose_windows_stopped_reads_unknown_not_its_last_level():
    line = CameraStatusLine(people=6, zones={"walkway": window(1000.0)})
    assert line.render("campus", 1010.0, stale_after_s=30).endswith(
        "zone walkway: 6.8 people, 0.026 p/m², risk normal")
    assert line.render("campus", 1045.0, stale_after_s=30).endswith(
        "zone walkway: no window for 45 s, risk unknown")


def test_an_unreliable_count_is_not_printed_as_the_zones_crowd():
    """A frozen picture counts no one, and the zone holds danger through it: "0.0 people, 0.000 p/m², risk danger" read
    as a calm zone. Without a fresh density map the detector's count is a floor."""
    frozen = window(1000.0).model_copy(update={"people_mean": 0.0, "density_mean_per_m2": 0.0, "count_reliable": False,
                                               "risk_level": RiskLevel.DANGER})
    assert CameraStatusLine(zones={"walkway": frozen}).render("campus", 1005.0, stale_after_s=30).endswith(
        "zone walkway: count unreliable, risk danger")
    floor = window(1000.0).model_copy(update={"count_reliable": False, "risk_level": RiskLevel.UNKNOWN})
    assert CameraStatusLine(zones={"walkway": floor}).render("campus", 1005.0, stale_after_s=30).endswith(
        "zone walkway: at least 6.8 people (count unreliable), risk unknown")


def test_a_camera_without_zones_says_so():
    assert CameraStatusLine().render("gate", 0.0, stale_after_s=30, zoned=False).endswith("| no zones")
    assert CameraStatusLine().render("campus", 0.0, stale_after_s=30).endswith("zones: waiting for the first window")


def test_a_starting_camera_says_what_it_waits_for_rather_than_a_row_of_zeros():
    line = CameraStatusLine()
    assert line.render("campus", 0.0, stale_after_s=30) == (
        "[campus] no report from its producer yet | zones: waiting for the first window")
    line.camera = CameraStatus(camera_id="campus", state=CameraState.UP, fps=5, reconnects=0, dropped_frames=0, at=0.0)
    assert line.render("campus", 1.0, stale_after_s=30) == (
        "[campus] frames sent, no detections yet | zones: waiting for the first window")
    line.seen_at.append(1.0)
    assert line.render("campus", 1.0, stale_after_s=30).startswith("[campus]  0.2 fps |  0 people in frame")


def test_a_stale_zone_does_not_hide_a_fresh_worse_one():
    critical = window(1000.0).model_copy(update={"zone_id": "gate", "risk_level": RiskLevel.CRITICAL,
                                                 "density_mean_per_m2": 6.1, "people_mean": 410})
    line = CameraStatusLine(zones={"gate": critical, "walkway": window(900.0)})
    assert line.render("campus", 1005.0, stale_after_s=30).endswith(
        "zone gate: 410.0 people, 6.100 p/m², risk critical | zone walkway: no window for 105 s, risk unknown")


def test_a_window_dated_ahead_of_the_clock_holds_the_line_neither_against_a_real_window_nor_once_windows_stop():
    config = Config(cameras=[{"id": "campus", "source": "a.mp4", "zones": [WALKWAY]}])
    lines = {"campus": CameraStatusLine()}

    def arrives(metrics: ZoneMetrics) -> None:
        absorb(SimpleNamespace(topic=config.broker.topics.zone_metrics, value=encode(metrics)), config, lines)

    arrives(window(4_102_444_800.0))  # the year 2100: a camera whose clock runs far ahead
    now = time.time()
    assert lines["campus"].render("campus", now + 45, stale_after_s=30).endswith("risk unknown")
    arrives(window(now + 1).model_copy(update={"risk_level": RiskLevel.CRITICAL}))
    assert lines["campus"].render("campus", now + 2, stale_after_s=30).endswith("risk critical")


def test_a_message_naming_a_camera_the_site_does_not_have_adds_no_line():
    config = Config(cameras=[{"id": "campus", "source": "a.mp4", "zones": [WALKWAY]}])
    lines: dict[str, CameraStatusLine] = defaultdict(CameraStatusLine)
    absorb(SimpleNamespace(topic=config.broker.topics.zone_metrics,
                           value=encode(window(1000.0).model_copy(update={"camera_id": "ghost"}))), config, lines)
    absorb(SimpleNamespace(topic=config.broker.topics.zone_metrics,
                           value=encode(window(1000.0).model_copy(update={"zone_id": "\x1b[2Jghost"}))), config, lines)
    assert list(lines) == []  # nor a zone the camera does not have
    absorb(SimpleNamespace(topic=config.broker.topics.zone_metrics, value=encode(window(1000.0))), config, lines)
    assert list(lines) == ["campus"]


def test_a_camera_its_producer_reports_down_says_so_with_the_reason():
    config = Config(cameras=[{"id": "gate", "source": "missing.mp4"}])
    lines: dict[str, CameraStatusLine] = defaultdict(CameraStatusLine)
    status = CameraStatus(camera_id="gate", state=CameraState.DOWN, reason="no such file: missing.mp4", fps=0,
                          reconnects=3, dropped_frames=0, at=1000.0)
    absorb(SimpleNamespace(topic=config.broker.topics.camera_status, value=encode(status)), config, lines)
    assert lines["gate"].render("gate", 1001.0, stale_after_s=30, zoned=False) == (
        "[gate] down: no such file: missing.mp4 |  0.0 fps |  0 people in frame | no zones")
    up = status.model_copy(update={"state": CameraState.UP, "reason": ""})
    absorb(SimpleNamespace(topic=config.broker.topics.camera_status, value=encode(up)), config, lines)
    assert lines["gate"].render("gate", 1001.0, stale_after_s=30, zoned=False) == (
        "[gate] frames sent, no detections yet | no zones")


def test_a_camera_whose_producer_stopped_reporting_reads_down_not_its_last_state():
    # A producer that hangs, or is away between a crash and its restart, leaves "up" as its last report; the console
    # reads such a camera down after the same silence.
    config = Config(cameras=[{"id": "gate", "source": "a.mp4"}])
    silence_s = config.producer.report_silence_s()
    lines: dict[str, CameraStatusLine] = defaultdict(CameraStatusLine)
    status = CameraStatus(camera_id="gate", state=CameraState.UP, reason="", fps=5, reconnects=0, dropped_frames=0,
                          at=1000.0)
    absorb(SimpleNamespace(topic=config.broker.topics.camera_status, value=encode(status)), config, lines)
    assert lines["gate"].render("gate", 1000.0 + silence_s, 30, False, silence_s).startswith("[gate] frames sent")
    assert lines["gate"].render("gate", 1075.0 + silence_s, 30, False, silence_s).startswith(
        f"[gate] down: no report from the producer for {silence_s + 75:.0f} s |  0.0 fps")


def test_a_site_of_many_cameras_gets_a_summary_and_the_cameras_that_need_attention_worst_first():
    # A line per camera every two seconds would scroll a city's worth past unread.
    now = 1005.0
    lines = {f"cam{n:02d}": CameraStatusLine(zones={"walkway": window(1000.0)}) for n in range(12)}
    lines["cam03"].zones["walkway"] = window(1000.0).model_copy(update={"risk_level": RiskLevel.CRITICAL})
    lines["cam07"].camera = CameraStatus(camera_id="cam07", state=CameraState.DOWN, reason="connection refused",
                                         fps=0, reconnects=2, dropped_frames=0, at=1004.0)
    lines["cam09"].zones["walkway"] = window(900.0)  # its windows stopped: unknown
    for n in range(4):  # their producer reported them up; the others not yet, and cam12 is not heard of at all
        lines[f"cam{n:02d}"].camera = CameraStatus(camera_id=f"cam{n:02d}", state=CameraState.UP, fps=5, reconnects=0,
                                                   dropped_frames=0, at=1004.0)
    cameras = [*lines, "cam12"]
    block = status_block(cameras, lines, now, stale_after_s=30, zoned=set(lines), report_silence_s=60)
    assert block[0] == ("[13 cameras] 4 up, 1 not up, 8 not reported yet | 0.0 fps in all | zones: 1 critical, "
                        "10 normal, 1 unknown | 3 need attention")
    assert [line.split("]")[0] for line in block[1:]] == ["[cam03", "[cam07", "[cam09"]
    assert "down: connection refused" in block[2]
    for n in range(12):  # every one needs attention now: ten shown, the rest counted
        lines[f"cam{n:02d}"].zones["walkway"] = window(900.0)
    block = status_block(cameras, lines, now, stale_after_s=30, zoned=set(lines), report_silence_s=60)
    assert len(block) == 12 and block[-1] == "... and 2 more needing attention (the console shows every camera)"


def test_a_small_site_gets_a_line_per_camera_and_a_large_one_its_summary_before_most_have_reported():
    lines = {f"cam{n}": CameraStatusLine(zones={"walkway": window(1000.0)}) for n in range(3)}
    block = status_block(list(lines), lines, 1005.0, stale_after_s=30, zoned=set(lines), report_silence_s=60)
    assert [line.split("]")[0] for line in block] == ["[cam0", "[cam1", "[cam2"]
    site = [f"cam{n}" for n in range(40)]
    block = status_block(site, lines, 1005.0, stale_after_s=30, zoned=set(lines), report_silence_s=60)
    assert block == ["[40 cameras] 0 up, 0 not up, 40 not reported yet | 0.0 fps in all | zones: 3 normal | "
                     "0 need attention"]

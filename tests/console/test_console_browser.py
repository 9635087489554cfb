"""The operator console in a real browser (Debian chromium driven by Playwright) against the real broker.

Messages are published on the topics the way the stages publish them; the console runs as its own process
(`python -m cityguard console`), exactly as `cityguard up` starts it.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from infra.kafka import make_producer
from schemas import (
    CameraState,
    CameraStatus,
    DensityForecast,
    Detections,
    Event,
    EventState,
    Frame,
    FrameRef,
    LineCounts,
    RiskLevel,
    Severity,
    ZoneMetrics,
    encode,
)
from schemas.settings.crowd import RiskThresholds
from sinks.console.server import COOKIE, hard_negative_stem, session_cookie
from sinks.console.state import LIVE_MAX_DETECTOR_LAG_S
from tests.conftest import REPO, VTEST, video_frames
from tests.pipeline_helpers import StageProcess

pytestmark = pytest.mark.broker

CHROMIUM = Path("/usr/bin/chromium")
# The README's images are rewritten only when asked (CITYGUARD_SCREENSHOTS=docs/screenshots), so a test run leaves the
# working tree as it was; otherwise the screenshots go to the test's own temporary folder.
SCREENSHOTS_ENV = "CITYGUARD_SCREENSHOTS"
TOKEN = "test-console-token-5d1f"
SQUARE = [[60, 300], [700, 300], [700, 560], [60, 560]]  # the "square" zone, in the 768x576 frames

SITE_YAML = """\
# Console test site. This comment must survive a save from the scene editor.
site: {site}
broker:
  bootstrap_servers: {bootstrap}
  partitions: 2
  topics:
{topics}
analytics:
  window_seconds: 2
alerting:
  store_url: sqlite:///{store}
  timezone: Asia/Seoul
console:
  port: 0
  hard_negatives_dir: {hard_negatives}
cameras:
  - id: station
    name: Station concourse
    source: {video}
    zones:
      - id: concourse
        polygon: [[40, 260], [740, 260], [740, 570], [40, 570]]
        area_m2: 60
      - id: stairs
        polygon: [[440, 100], [760, 100], [760, 240], [440, 240]]
        area_m2: 25
  - id: plaza
    name: Plaza walkway
    source: {video}
    zones:
      # The square in front of the station; measured on the city plan.
      - id: square
        polygon: [{square}]
        area_m2: 40   # from the survey
  - id: junction
    name: Junction north
    source: {video}
    scene:
      lanes:
        - id: northbound
          polygon: [[420, 40], [560, 40], [700, 560], [470, 560]]
          direction: [0, -1]
      crosswalks:
        - id: north-crossing
          polygon: [[80, 150], [700, 150], [700, 200], [80, 200]]
      counting_lines:
        - id: stop-count
          start: [420, 330]
          end: [740, 330]
          forward: southbound
          backward: northbound
"""


def frame_jpeg(index: int) -> bytes:
    frames = video_frames(VTEST, index + 1)
    ok, jpeg = cv2.imencode(".jpg", frames[index], [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok
    return jpeg.tobytes()


class Site:
    """The console's site configuration, its running console process and a producer onto its topics."""

    def __init__(self, root: Path, bootstrap: str, name: str):
        self.root = root
        self.name = name
        self.topics = {topic: f"{name}.{topic}" for topic in
                       ("frames", "detections", "zone_metrics", "events", "line_counts", "alerts", "camera_status",
                        "dead_letter")}
        self.config_path = root / "site.yaml"
        self.store_path = root / "incidents.sqlite"
        self.hard_negatives = root / "hard-negatives"
        self.config_path.write_text(SITE_YAML.format(
            site=name, bootstrap=bootstrap, store=self.store_path, hard_negatives=self.hard_negatives, video=VTEST,
            square=", ".join(f"[{x}, {y}]" for x, y in SQUARE),
            topics="\n".join(f"    {key}: {value}" for key, value in self.topics.items())))
        self.producer = make_producer(bootstrap)
        self.seq = 0

    def publish(self, topic: str, camera_id: str, message) -> None:
        self.producer.send(self.topics[topic], key=camera_id.encode(), value=encode(message))
        self.producer.flush()

    def frame(self, camera_id: str, jpeg: bytes, people: int = 3, density_map: bool = False,
              scaled_to: tuple[int, int] | None = None, detected: bool = True) -> int:
        """scaled_to: the JPEG's size when capture scaled the camera's 768x576 picture down (max_width); detected:
        whether the frame's detections are published too."""
        self.seq += 1
        now = time.time()
        size = {"width": 768, "height": 576}
        if scaled_to is not None:
            picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
            jpeg = cv2.imencode(".jpg", cv2.resize(picture, scaled_to, interpolation=cv2.INTER_AREA))[1].tobytes()
            size = {"width": scaled_to[0], "height": scaled_to[1], "source_width": 768, "source_height": 576}
        self.publish("frames", camera_id, Frame(camera_id=camera_id, seq=self.seq, captured_at=now, jpeg=jpeg,
                                                **size))
        if not detected:
            return self.seq
        boxes = [(100.0 + 90 * i, 330.0, 140.0 + 90 * i, 430.0) for i in range(people)]
        extra = {}
        if density_map:
            grid = np.zeros((72, 96), dtype=np.float32)
            grid[40:60, 10:60] = np.linspace(0.02, 0.3, 50, dtype=np.float32)
            extra = {"density_map": grid.tobytes(), "density_map_shape": (72, 96)}
        self.publish("detections", camera_id, Detections(
            camera_id=camera_id, seq=self.seq, captured_at=now, image_width=768, image_height=576, model="test",
            inference_ms=5.0, xyxy=boxes, confidence=[0.9] * people, class_id=[0] * people,
            class_name=["person"] * people, track_id=list(range(7, 7 + people)), **extra))
        return self.seq

    def zone_window(self, level: RiskLevel, density: float, end: float, forecast: bool = False,
                    camera_id: str = "plaza", zone_id: str = "square", area_m2: float = 40,
                    seconds: float = 2, danger_in_s: float | None = 240.0, reliable: bool = True) -> None:
        """forecast: with a forecast, a line that reaches danger (5 p/m²) in `danger_in_s` (None: not within its
        horizon), as the analytics draw it; reliable: the window's count_reliable."""
        rise = (RiskThresholds().danger - density) / danger_in_s if danger_in_s else 0.0
        points = [DensityForecast(horizon_s=h, density_per_m2=density + rise * h, lower_per_m2=density + rise * h / 2,
                                  upper_per_m2=density + rise * h * 1.5 + 0.1) for h in (60, 180, 300)] \
            if forecast else []
        self.publish("zone_metrics", camera_id, ZoneMetrics(
            camera_id=camera_id, zone_id=zone_id, window_start=end - seconds, window_end=end, frames=20,
            area_m2=area_m2, people_mean=density * area_m2, people_max=int(density * area_m2 * 1.1),
            density_mean_per_m2=density, density_max_per_m2=density * 1.1, risk_level=level,
            risk_reason=f"density {density:.2f} p/m²" + (", danger expected in 4 min" if forecast else ""),
            last_seq=self.seq, inflow=12, outflow=7, net_accumulation_per_minute=150.0, forecast=points,
            count_reliable=reliable,
            seconds_to_threshold={"danger": danger_in_s} if forecast and danger_in_s is not None else {},
            rise_over_s=300.0 if forecast else None))

    def event(self, event_id: str, evidence_seq: int, camera_id: str = "plaza", zone_id: str = "square",
              severity: Severity = Severity.CRITICAL,
              reason: str = "density 5.4 p/m² above the danger threshold 5.0") -> Event:
        now = time.time()
        event = Event(event_id=event_id, type="risk_level_changed", state=EventState.OPENED, severity=severity,
                      camera_id=camera_id, zone_id=zone_id, started_at=now, updated_at=now, confidence=0.9,
                      evidence=FrameRef(camera_id=camera_id, seq=evidence_seq), reason=reason)
        self.publish("events", camera_id, event)
        return event

    def store(self):
        from sinks.alerts.store import IncidentStore

        return IncidentStore(f"sqlite:///{self.store_path}")

    def close(self) -> None:
        self.producer.close()


def start_console(config_path: Path, log_dir: Path, bootstrap: str, *extra: str) -> tuple[StageProcess, str]:
    console = StageProcess("console", config_path, bootstrap, log_dir, *extra)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = re.search(r"console: (http://[0-9.]+:\d+/)", console.log())
        if match:
            return console, match.group(1).replace("0.0.0.0", "127.0.0.1")
        assert console.alive(), console.log_tail()
        time.sleep(0.2)
    raise AssertionError(f"the console printed no URL:\n{console.log_tail()}")


@pytest.fixture(scope="module")
def site(kafka_bootstrap, tmp_path_factory):
    root = tmp_path_factory.mktemp("console")
    site = Site(root, kafka_bootstrap, f"console-{os.getpid()}-{int(time.time())}")
    os.environ["CITYGUARD_CONSOLE_TOKEN"] = TOKEN
    try:
        site.console, site.url = start_console(site.config_path, root, kafka_bootstrap)
    finally:
        del os.environ["CITYGUARD_CONSOLE_TOKEN"]
    yield site
    site.console.stop()
    site.close()


def site_with_cameras(site: Site, path: Path, camera_ids: list[str], port: int = 0) -> Path:
    """A copy of the site's configuration at `path` (same topics and store) with only these cameras, without zones or
    scenes, served on `port`."""
    config = yaml.safe_load(site.config_path.read_text())
    config["console"]["port"] = port
    config["cameras"] = [{"id": camera_id, "name": camera_id, "source": str(VTEST)} for camera_id in camera_ids]
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def playwright_driver():
    if not CHROMIUM.exists():
        pytest.fail("Debian chromium is needed for the console tests: apt-get install chromium (infra/setup.sh)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        yield playwright


def launch_chromium(playwright, *args: str):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", *args])


@pytest.fixture(scope="module")
def browser(playwright_driver):
    browser = launch_chromium(playwright_driver)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def audible_browser(playwright_driver):
    """Chromium that lets a page play sound before any click, as one whose operator allowed the console's sound."""
    browser = launch_chromium(playwright_driver, "--autoplay-policy=no-user-gesture-required")
    yield browser
    browser.close()


def fresh_page(browser, bypass_csp: bool):
    """A fresh browser page; any uncaught JavaScript error in it, or anything its Content-Security-Policy refused,
    fails the test."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000}, bypass_csp=bypass_csp)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text)
            if message.type == "error" and "Content Security Policy" in message.text else None)
    yield page
    context.close()
    assert not errors, f"JavaScript errors: {errors}"


@pytest.fixture
def page(browser):
    # Playwright's wait_for_function evaluates strings, which the console's policy forbids: most tests bypass it,
    # test_every_page_works_under_the_consoles_content_security_policy does not.
    yield from fresh_page(browser, bypass_csp=True)


@pytest.fixture
def strict_page(browser):
    yield from fresh_page(browser, bypass_csp=False)


@pytest.fixture
def audible_page(audible_browser):
    yield from fresh_page(audible_browser, bypass_csp=True)


def operator(page, site: Site, hash_path: str):
    """Opens the console as an operator (with the token), on the given page of the app."""
    page.goto(f"{site.url}?token={TOKEN}")
    page.goto(f"{site.url}#{hash_path}")
    page.wait_for_function("window.consoleProbe !== undefined")


def sign_in(page, token: str) -> None:
    """Sends a token with the sign-in form under the header."""
    page.fill("#sign-in-token", token)
    page.click("#sign-in button[type=submit]")


def sign_in_after_a_wrong_token(page) -> None:
    """A wrong token is refused by the sign-in form, then the right one is sent."""
    sign_in(page, "not the token")
    page.wait_for_selector("#sign-in-error:has-text('wrong console token')", timeout=5_000)
    sign_in(page, TOKEN)


def wait_for_pixel(page, selector: str, point: tuple[int, int], condition: str) -> None:
    """Waits until the canvas pixel at `point` satisfies the JavaScript `condition` on r, g, b."""
    x, y = point
    page.wait_for_function(f"""() => {{
        const [r, g, b] = document.querySelector('{selector}').getContext('2d').getImageData({x}, {y}, 1, 1).data;
        return {condition};
    }}""", timeout=10_000)


def test_the_camera_image_updates_in_the_live_view(site, page):
    page.goto(site.url + "#/live")
    first = site.frame("plaza", frame_jpeg(0))
    page.wait_for_selector(f"canvas[data-camera=plaza][data-seq='{first}']", timeout=15_000)
    before = page.eval_on_selector("canvas[data-camera=plaza]", "c => c.toDataURL()")
    second = site.frame("plaza", frame_jpeg(40))
    page.wait_for_selector(f"canvas[data-camera=plaza][data-seq='{second}']", timeout=15_000)
    after = page.eval_on_selector("canvas[data-camera=plaza]", "c => c.toDataURL()")
    assert before != after
    assert page.text_content("section.tile[data-camera=plaza] .tile-head").count("frame age") == 1
    site.publish("camera_status", "plaza", CameraStatus(
        camera_id="plaza", state=CameraState.RECONNECTING, reason="rtsp: connection refused", fps=0.0, reconnects=3,
        dropped_frames=0, at=time.time()))
    health = page.wait_for_selector("section.tile[data-camera=plaza] [data-health=reconnecting]", timeout=10_000)
    assert health.text_content() == "reconnecting: rtsp: connection refused"


def test_a_danger_window_turns_its_zone_red(site, page):
    # Capture scaled the frames to half size: the zone, drawn in the camera's own pixels, is still where it was drawn.
    site.frame("plaza", frame_jpeg(0), people=0, scaled_to=(384, 288))
    page.goto(site.url + "#/camera/plaza")
    page.wait_for_function("document.querySelector('canvas.view')?.width === 768")
    site.zone_window(RiskLevel.NORMAL, 0.8, time.time())
    page.wait_for_selector(".zone-row[data-zone=square][data-level=normal]", timeout=15_000)
    inside = (380, 500)  # inside the square, away from its label
    wait_for_pixel(page, "canvas.view", inside, "g > r")  # normal: drawn green
    site.zone_window(RiskLevel.DANGER, 5.4, time.time() + 2)
    page.wait_for_selector(".zone-row[data-zone=square][data-level=danger]", timeout=15_000)
    wait_for_pixel(page, "canvas.view", inside, "r > g + 40 && r > b + 40")  # danger: drawn red


def test_an_unreliable_count_shows_as_unreliable_not_as_a_calm_crowd(site, page):
    """A frozen picture counts no one while the zone holds danger: "0 people, 0.00 p/m²" beside it read as calm."""
    site.frame("plaza", frame_jpeg(0), people=0)
    site.zone_window(RiskLevel.DANGER, 0.0, time.time() + 60, reliable=False)  # newer than any window before
    page.goto(site.url + "#/camera/plaza")
    row = ".zone-row[data-zone=square][data-level=danger] .age"
    page.wait_for_selector(row, timeout=15_000)
    assert page.text_content(row).startswith("count unreliable · in 12 / out 7")
    page.goto(site.url + "#/zones")
    figure = "section.card[data-zone=square] .figure[data-figure='{}'] .value"
    page.wait_for_function(f"document.querySelector(\"{figure.format('density')}\")?.textContent === 'unreliable'",
                           timeout=10_000)
    assert page.text_content(figure.format("people")) == "unreliable"


def test_acknowledging_and_marking_a_false_alarm_reach_the_incident_store(site, page):
    from sinks.alerts.notice import notice_from_event
    from sinks.alerts.store import ACKNOWLEDGED, FALSE_ALARM

    store = site.store()
    try:
        for event_id in ("plaza/square/risk-ack", "plaza/square/risk-false"):
            seq = site.frame("plaza", frame_jpeg(10), people=4, scaled_to=(384, 288))
            event = site.event(event_id, seq)
            store.record_notice(notice_from_event(event), time.time())  # what the alert dispatcher records
        operator(page, site, "/incidents")
        for event_id, button, verdict in (("plaza/square/risk-ack", "#ack", ACKNOWLEDGED),
                                          ("plaza/square/risk-false", "#false-alarm", FALSE_ALARM)):
            page.click(f".incident-item[data-incident='{event_id}']")
            shown = f"section[data-incident='{event_id}'] {button}"
            page.wait_for_selector(f"{shown}:not([disabled])")
            page.click(shown)
            page.wait_for_selector(f"section[data-incident='{event_id}'] .timeline li[data-verdict={verdict}]",
                                   timeout=10_000)
            reviews = store.reviews([event_id])[event_id]
            assert [review.verdict for review in reviews] == [verdict]
    finally:
        store.close()
    hard_negative = site.hard_negatives / "plaza" / f"{hard_negative_stem('plaza/square/risk-false')}.jpg"
    assert hard_negative.read_bytes()[:2] == b"\xff\xd8", "the false alarm's evidence frame is kept as a JPEG"
    described = json.loads(hard_negative.with_suffix(".json").read_text())
    assert described["event_id"] == "plaza/square/risk-false" and len(described["detections"]["boxes"]) == 4
    # The kept JPEG is the half-size frame: the blamed boxes are in its pixels, the detections in the camera's.
    assert described["wrong"][0] == {"class": "person", "xyxy": [50.0, 165.0, 70.0, 215.0]}
    assert described["detections"]["boxes"][0] == [100.0, 330.0, 140.0, 430.0]
    # What `cityguard dataset build` reads: the event names no tracks, so every person in the frame is blamed.
    from cityguard.training.dataset import read_false_alarms

    [record] = read_false_alarms(site.hard_negatives, {0: "person"})
    assert record.camera == "plaza" and record.image == hard_negative and len(record.wrong.xyxy) == 4


def test_the_incident_detail_follows_the_store_and_keeps_the_answer_to_a_verdict(site, page):
    from sinks.alerts.notice import notice_from_event

    store = site.store()
    try:
        event = site.event("plaza/square/risk-no-frame", 10**15)  # a frame the console never receives
        store.record_notice(notice_from_event(event), time.time())
        operator(page, site, "/incidents")
        shown = "section[data-incident='plaza/square/risk-no-frame']"
        page.click(".incident-item[data-incident='plaza/square/risk-no-frame']")
        page.click(f"{shown} #false-alarm:not([disabled])")
        page.wait_for_selector(f"{shown} .timeline li[data-verdict=false_alarm]", timeout=10_000)
        page.wait_for_timeout(2500)  # the list and the open detail refresh every 2 s
        assert "no hard negative was kept" in page.text_content(shown)
        verdicts = f"document.querySelectorAll(\"{shown} .timeline li[data-verdict=false_alarm]\").length"
        page.click(f"{shown} #false-alarm:not([disabled])")  # once answered, a click is a verdict of its own
        page.wait_for_function(f"{verdicts} === 2", timeout=10_000)

        def answer_lost(route):  # the server records the verdict, its answer never reaches the page
            route.fetch()
            route.abort()

        page.route("**/false-alarm", answer_lost)
        page.click(f"{shown} #false-alarm:not([disabled])")
        page.wait_for_selector(f"{shown} .notice.error:has-text('cannot be reached')", timeout=10_000)
        page.unroute("**/false-alarm")
        page.click(f"{shown} #false-alarm:not([disabled])")  # clicked again: the same request, not a new verdict
        page.wait_for_selector(f"{shown} .notice.ok:has-text('false alarm was already recorded')", timeout=10_000)
        page.wait_for_timeout(2500)
        assert page.evaluate(verdicts) == 3
        page.route("**/false-alarm", answer_lost)
        page.click(f"{shown} #false-alarm:not([disabled])")
        page.wait_for_selector(f"{shown} .notice.error:has-text('cannot be reached')", timeout=10_000)
        page.unroute("**/false-alarm")
        page.fill(f"{shown} .actions input[placeholder^=note]", "crowd cleared")  # typed before clicking again
        page.click(f"{shown} #false-alarm:not([disabled])")  # not the request recorded: the page says so
        page.wait_for_selector(f"{shown} .notice.error:has-text('click again to record it')", timeout=10_000)
        page.wait_for_function(f"{verdicts} === 4", timeout=10_000)
        page.click(f"{shown} #false-alarm:not([disabled])")  # a verdict of its own, with the note
        page.wait_for_selector(f"{shown} .timeline li[data-verdict=false_alarm]:has-text('crowd cleared')",
                               timeout=10_000)
        assert page.evaluate(verdicts) == 5
        ended = time.time()
        store.record_notice(notice_from_event(event.model_copy(update={
            "state": EventState.RESOLVED, "updated_at": ended, "ended_at": ended})), ended)
        page.wait_for_selector(f"{shown} .card-head [data-state=resolved]", timeout=10_000)
    finally:
        store.close()
    page.route("**/api/incidents", lambda route: route.fulfill(status=503, body="incident store unavailable"))
    page.wait_for_selector("#incident-list.stale #incidents-stale", timeout=10_000)
    assert "incident store unavailable" in page.text_content("#incidents-stale")
    page.unroute("**/api/incidents")
    page.wait_for_selector("#incident-list:not(.stale)", timeout=10_000)


def test_the_health_poll_leaves_the_verdict_buttons_disabled_while_a_verdict_is_under_way(site, page):
    event = site.event("plaza/square/risk-slow-verdict", site.frame("plaza", frame_jpeg(12)))
    record(site, event)
    operator(page, site, "/incidents/" + urllib.parse.quote(event.event_id, safe=""))
    shown = f"section[data-incident='{event.event_id}']"
    under_way = []

    def hold(route) -> None:  # the server has not answered yet
        under_way.append(route)

    page.route("**/ack", hold)
    with page.expect_request("**/ack", timeout=10_000):
        page.click(f"{shown} #ack:not([disabled])")
    page.evaluate("checkHealth()")  # the poll that runs every 5 s, saying the page may act
    assert page.text_content("#auth-state") == "operator"
    assert page.is_disabled(f"{shown} #ack") and page.is_disabled(f"{shown} #false-alarm")
    assert len(under_way) == 1
    under_way[0].continue_()
    page.wait_for_selector(f"{shown} .notice.ok:has-text('acknowledgement recorded')", timeout=10_000)
    assert page.is_enabled(f"{shown} #ack") and page.is_enabled(f"{shown} #false-alarm")
    page.unroute("**/ack")


def test_a_lagging_detector_shows_its_newest_frame_with_boxes_and_a_stopped_one_the_newest_without(site, page):
    with_boxes = site.frame("junction", frame_jpeg(3), people=2)
    page.goto(site.url + "#/camera/junction")
    page.wait_for_function("document.querySelector('.tile-head')?.textContent.includes('2 objects')", timeout=15_000)
    time.sleep(1.5)  # the next frame's detections are more than a second late
    site.frame("junction", frame_jpeg(4), detected=False)
    page.wait_for_selector(".tile-head [data-detections=behind]", timeout=15_000)
    page.wait_for_selector(f"canvas.view[data-seq='{with_boxes}']", timeout=15_000)
    assert "2 objects" in page.text_content(".tile-head")
    time.sleep(LIVE_MAX_DETECTOR_LAG_S)  # none come: the detector stopped
    newest = site.frame("junction", frame_jpeg(5), detected=False)
    page.wait_for_selector(".tile-head [data-detections=none]", timeout=15_000)
    page.wait_for_selector(f"canvas.view[data-seq='{newest}']", timeout=15_000)


def test_a_cancelled_direction_redraw_keeps_the_lane(site, page):
    site.frame("junction", frame_jpeg(5))
    before = site.config_path.read_text()
    operator(page, site, "/editor/junction")
    page.wait_for_selector(".items li[data-id=northbound]")
    for cancel in (lambda: page.keyboard.press("Escape"), lambda: page.click("button[data-tool=crosswalk]")):
        page.click(".items li[data-id=northbound]")
        page.click("text=Redraw direction")
        cancel()
    page.keyboard.press("Escape")  # and no crosswalk either
    page.click("#save-scene")
    page.wait_for_selector("#editor-message .notice.ok", timeout=10_000)
    assert page.text_content("#editor-message") == "no change"
    assert site.config_path.read_text() == before


def test_a_zone_drawn_in_the_editor_is_saved_to_the_yaml_and_reloads_identically(site, page):
    # Capture scaled this camera's frames to half size: the editor still draws and saves in the camera's own
    # pixels, where the analytics put the boxes.
    site.frame("plaza", frame_jpeg(5), scaled_to=(384, 288))
    operator(page, site, "/editor/plaza")
    page.wait_for_function("document.querySelector('.editor-canvas')?.width === 768")
    page.click("button[data-tool=zone]")
    box = page.locator(".editor-canvas").bounding_box()
    scale = box["width"] / 768
    corners = [(100, 60), (300, 70), (320, 200), (90, 190)]
    for x, y in [*corners, corners[0]]:  # clicking the first corner again closes the outline
        page.mouse.click(box["x"] + x * scale, box["y"] + y * scale)
    page.fill("input[name=item-id]", "kiosk")
    page.fill("input[name=area]", "55")
    page.click("button[data-tool=entrance]")  # a line across the kiosk's entrance, for its inflow and outflow
    for x, y in [(150, 40), (150, 110)]:
        page.mouse.click(box["x"] + x * scale, box["y"] + y * scale)
    page.click("#save-scene")
    page.wait_for_selector("#editor-message .notice.ok", timeout=10_000)
    assert "restart analyze" in page.text_content("#editor-message")

    text = site.config_path.read_text()
    assert "This comment must survive" in text and "# from the survey" in text
    plaza = next(camera for camera in yaml.safe_load(text)["cameras"] if camera["id"] == "plaza")
    zones = {zone["id"]: zone for zone in plaza["zones"]}
    saved = zones["kiosk"]["polygon"]
    assert zones["kiosk"]["area_m2"] == 55 and zones["square"]["polygon"] == SQUARE
    entrance = zones["kiosk"]["entrances"][0]
    assert entrance["id"] == "kiosk-entrance-1"
    assert abs(entrance["start"][1] - 40) <= 1 and abs(entrance["end"][1] - 110) <= 1
    assert all(abs(sx - x) <= 1 and abs(sy - y) <= 1 for (sx, sy), (x, y) in zip(saved, corners, strict=True))

    page.reload()
    page.wait_for_selector(".items li[data-id=kiosk]")
    reloaded = page.evaluate("window.consoleEditor.geometry()")
    assert {zone["id"]: zone for zone in reloaded["zones"]}["kiosk"] == zones["kiosk"]


def test_a_scene_saved_meanwhile_by_someone_else_is_not_overwritten_by_the_editor(site, page):
    operator(page, site, "/editor/station")
    page.wait_for_selector(".items li[data-id=stairs]")
    # Another operator saves the station's scene after this editor loaded it.
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    with urllib.request.urlopen(urllib.request.Request(f"{site.url}api/scene/station", headers=headers),
                                timeout=10) as answer:
        scene = json.loads(answer.read())
    zones = [{**zone, "area_m2": 26} if zone["id"] == "stairs" else zone for zone in scene["geometry"]["zones"]]
    saved = urllib.request.Request(f"{site.url}api/scene/station", method="POST", headers=headers, data=json.dumps(
        {**scene["geometry"], "zones": zones, "version": scene["version"]}).encode())
    with urllib.request.urlopen(saved, timeout=10) as answer:
        assert json.loads(answer.read())["saved"]

    page.click("#save-scene")
    page.wait_for_selector("#editor-message .notice.error", timeout=10_000)
    assert "saved by someone else" in page.text_content("#editor-message")
    page.click("#reload-scene")
    page.wait_for_function("window.consoleEditor.geometry().zones.find((zone) => zone.id === 'stairs').area_m2 === 26")
    assert yaml.safe_load(site.config_path.read_text())["cameras"][0]["zones"][1]["area_m2"] == 26


def test_the_health_poll_leaves_save_disabled_while_a_save_is_under_way(site, page):
    operator(page, site, "/editor/junction")
    page.wait_for_selector(".items li[data-id=northbound]")
    under_way = []

    def hold(route) -> None:  # the server has not answered the save yet; the scene is read as ever
        if route.request.method == "POST":
            under_way.append(route)
        else:
            route.continue_()

    page.route("**/api/scene/junction", hold)
    with page.expect_request(lambda request: request.method == "POST", timeout=10_000):
        page.click("#save-scene:not([disabled])")
    page.evaluate("checkHealth()")  # the poll that runs every 5 s, saying the page may act
    assert page.text_content("#auth-state") == "operator"
    assert page.is_disabled("#save-scene")
    assert len(under_way) == 1
    under_way[0].continue_()
    page.wait_for_selector("#editor-message .notice.ok", timeout=10_000)
    page.wait_for_selector("#save-scene:not([disabled])", timeout=10_000)  # once the saved scene is loaded back
    assert page.text_content("#editor-message") == "no change"
    page.unroute("**/api/scene/junction")


def test_every_page_works_under_the_consoles_content_security_policy(site, strict_page):
    """Every page drawn and used as an operator would, with nothing refused by the policy (the fixture checks)."""
    page = strict_page
    event = site.event("plaza/square/risk-csp", site.frame("plaza", frame_jpeg(30), people=2))
    store = site.store()
    try:
        from sinks.alerts.notice import notice_from_event

        store.record_notice(notice_from_event(event), time.time())
    finally:
        store.close()
    page.goto(f"{site.url}?token={TOKEN}")
    page.wait_for_selector("canvas[data-camera=plaza][data-seq]:not([data-seq=''])", timeout=15_000)
    page.wait_for_selector("#feed-health[data-feed=up][hidden]", state="attached")  # the topics are being read
    page.goto(f"{site.url}#/camera/plaza")
    page.wait_for_selector(".zone-row[data-zone=square]")
    page.goto(f"{site.url}#/zones")
    page.wait_for_selector("section.card[data-zone=square]")
    page.goto(f"{site.url}#/incidents")
    page.click(".incident-item[data-incident='plaza/square/risk-csp']")
    page.wait_for_selector("section[data-incident='plaza/square/risk-csp'] .timeline")
    page.goto(f"{site.url}#/editor/plaza")
    page.wait_for_selector(".items li[data-id=square]")
    page.wait_for_selector(".editor-canvas[width='768']")


def record(site: Site, event: Event) -> None:
    """As the alert dispatcher records the event's incident."""
    from sinks.alerts.notice import notice_from_event

    store = site.store()
    try:
        store.record_notice(notice_from_event(event), time.time())
    finally:
        store.close()


def api_answer(site: Site, path: str, data: bytes | None = None):
    request = urllib.request.Request(f"{site.url}{path}", data=data, headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def acknowledge_every_open_incident(site: Site) -> None:
    """Acknowledges the incidents earlier tests left unacknowledged."""
    for incident in api_answer(site, "api/incidents")["incidents"]:
        if incident["acknowledged"] is False:
            api_answer(site, f"api/incidents/{urllib.parse.quote(incident['id'], safe='')}/ack", b"{}")


def test_an_unacknowledged_incident_shows_on_every_page_and_a_critical_one_in_red_and_in_the_title(site, page):
    acknowledge_every_open_incident(site)
    page.goto(site.url + "#/live")
    title = f"cityguard {site.name}"
    badge = "document.querySelector('#open-count')"
    page.wait_for_function(f"{badge}.textContent === '' && document.title === '{title}'", timeout=10_000)
    seq = site.frame("plaza", frame_jpeg(12))
    record(site, site.event("plaza/square/risk-badge-info", seq, severity=Severity.INFO))  # caution: no one's to ack
    record(site, site.event("plaza/square/risk-badge-warning", seq, severity=Severity.WARNING))
    page.wait_for_function(f"{badge}.textContent === '1'", timeout=10_000)
    assert not page.eval_on_selector("#open-count", "badge => badge.classList.contains('critical')")
    assert page.title() == f"(1) {title}"
    page.goto(site.url + "#/zones")
    record(site, site.event("plaza/square/risk-badge-critical", seq, severity=Severity.CRITICAL))
    page.wait_for_function(f"{badge}.textContent === '2' && {badge}.classList.contains('critical')",
                           timeout=10_000)
    assert page.evaluate("getComputedStyle(document.querySelector('#open-count')).backgroundColor") == \
        "rgb(224, 49, 49)"
    page.wait_for_function(f"document.title === '(2) {title}'", timeout=5_000)
    page.wait_for_function("document.title === '(2) CRITICAL incident'", timeout=5_000)  # it flashes
    api_answer(site, "api/incidents/plaza%2Fsquare%2Frisk-badge-critical/ack", b"{}")
    page.wait_for_function(f"{badge}.textContent === '1' && !{badge}.classList.contains('critical')",
                           timeout=10_000)
    page.wait_for_function(f"document.title === '(1) {title}'", timeout=5_000)


def test_without_web_audio_or_storage_the_console_still_shows_criticals(site, page):
    # A locked-down kiosk: no Web Audio, and the page's storage refused.
    page.add_init_script("delete window.AudioContext; Object.defineProperty(window, 'localStorage', "
                         "{get() { throw new DOMException('denied', 'SecurityError'); }});")
    acknowledge_every_open_incident(site)
    page.goto(site.url + "#/live")
    page.wait_for_selector("#sound[data-sound=unavailable]:has-text('no sound in this browser')", timeout=10_000)
    record(site, site.event("plaza/square/risk-kiosk-critical", site.frame("plaza", frame_jpeg(13))))
    page.wait_for_function("document.querySelector('#open-count').textContent === '1'", timeout=10_000)
    page.wait_for_function("document.querySelector('#clock').textContent !== ''", timeout=5_000)
    api_answer(site, "api/incidents/plaza%2Fsquare%2Frisk-kiosk-critical/ack", b"{}")


def test_sound_is_asked_for_until_a_click_allows_it_and_turned_off_stays_off(site, page):
    # Playwright evaluates every script it runs in the page (each wait's too) as a user gesture, which lets an audio
    # context made after it play without the click. The page makes its context as it loads: one made once the console
    # has answered would play here, where the answer comes after such a script.
    held = []
    page.route("**/api/session", lambda route: held.append(route))
    page.goto(site.url + "#/live")
    for _ in range(250):  # the route's call may be handled after goto returns; waiting this way runs no script there
        if held:
            break
        page.wait_for_timeout(20)
    page.evaluate("1")
    held[0].continue_()
    page.unroute("**/api/session")
    page.wait_for_selector("#sound[data-sound=blocked][aria-pressed=false]:has-text('click to enable sound')",
                           timeout=30_000)
    page.click("#sound")  # the click the browser waits for before it plays sound
    page.wait_for_selector("#sound[data-sound=on][aria-pressed=true]:has-text('sound on')", timeout=5_000)
    page.click("#sound")
    page.wait_for_selector("#sound[data-sound=off][aria-pressed=false]:has-text('sound off')", timeout=5_000)
    page.reload()
    page.wait_for_selector("#sound[data-sound=off]:has-text('sound off')", timeout=10_000)


def test_an_unacknowledged_critical_incident_sounds_until_acknowledged_or_silenced(site, audible_page):
    page = audible_page
    acknowledge_every_open_incident(site)
    page.goto(site.url + "#/live")
    sounding = "#sound[data-sound=sounding][aria-pressed=true]:has-text('alarm sounding')"
    quiet = "#sound[data-sound=on]:has-text('sound on')"
    page.wait_for_selector(quiet, timeout=10_000)
    assert page.is_hidden("#silence")
    seq = site.frame("plaza", frame_jpeg(16))
    record(site, site.event("plaza/square/risk-alarm-warning", seq, severity=Severity.WARNING))
    record(site, site.event("plaza/square/risk-alarm-acknowledged", seq))
    page.wait_for_selector(sounding, timeout=10_000)
    page.wait_for_selector("#silence:visible:has-text('silence alarm (1 critical)')")
    api_answer(site, "api/incidents/plaza%2Fsquare%2Frisk-alarm-acknowledged/ack", b"{}")
    page.wait_for_selector(quiet, timeout=10_000)  # the warning, still unacknowledged, does not sound
    assert page.is_hidden("#silence")

    record(site, site.event("plaza/square/risk-alarm-silenced", seq))
    page.wait_for_selector(sounding, timeout=10_000)
    for _ in range(20):  # the header's controls are reached with the keyboard
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "silence":
            break
    else:
        raise AssertionError("Tab never reaches the silence button")
    page.keyboard.press("Enter")
    page.wait_for_selector(quiet, timeout=5_000)
    assert page.is_hidden("#silence")
    record(site, site.event("plaza/square/risk-alarm-new", seq))  # a new one sounds again
    page.wait_for_selector(sounding, timeout=10_000)
    page.click("#silence")
    page.wait_for_selector(quiet, timeout=5_000)

    page.reload()  # neither the acknowledged incident nor the silenced ones sound again
    page.wait_for_function("document.querySelector('#open-count').textContent === '3'", timeout=10_000)
    assert page.get_attribute("#sound", "data-sound") == "on"
    assert page.is_hidden("#silence")
    for incident_id in ("plaza/square/risk-alarm-silenced", "plaza/square/risk-alarm-new"):
        api_answer(site, f"api/incidents/{urllib.parse.quote(incident_id, safe='')}/ack", b"{}")


def test_a_page_whose_server_cannot_be_reached_is_greyed_out_and_says_since_when(site, page):
    site.frame("plaza", frame_jpeg(2))
    page.goto(site.url + "#/camera/plaza")
    page.wait_for_selector(".tile-head [data-captured-at]", timeout=15_000)
    page.route("**/api/**", lambda route: route.abort())
    page.wait_for_selector("body.offline #connection:not([hidden])", timeout=10_000)
    assert page.evaluate("getComputedStyle(document.querySelector('main')).filter") == "grayscale(1)"

    def shown() -> tuple[float, int]:
        connection = page.text_content("#connection")
        assert re.fullmatch(r"offline · last update \d\d:\d\d:\d\d \(\d+ s ago\)", connection), connection
        age = re.search(r"frame age ([0-9.]+) s", page.text_content(".tile-head")).group(1)
        return float(age), int(re.search(r"\((\d+) s ago", connection).group(1))

    age, silent = shown()
    page.wait_for_timeout(2100)
    later_age, later_silent = shown()
    assert later_age >= age + 1.5 and later_silent >= silent + 1  # counted on in the browser
    page.unroute("**/api/**")
    page.wait_for_selector("body:not(.offline) #connection[hidden]", state="attached", timeout=10_000)


def test_a_page_opened_while_the_console_cannot_be_reached_comes_up_once_it_answers(site, page):
    page.route("**/api/**", lambda route: route.abort())  # the console restarting as the page is (re)loaded
    page.goto(site.url + "#/live")
    page.wait_for_selector("#start-error:has-text('the console server cannot be reached; trying again')",
                           timeout=10_000)
    page.unroute("**/api/**")
    page.wait_for_selector("section.tile[data-camera=plaza]", timeout=15_000)
    assert page.text_content("#site-name") == site.name
    assert page.is_hidden("#start-error")


def test_the_live_grid_and_the_zones_page_show_the_most_urgent_first(site, page):
    def windows(levels: dict[tuple[str, str], RiskLevel]) -> None:
        end = time.time()
        for (camera_id, zone_id), level in levels.items():
            site.zone_window(level, 1.0, end, camera_id=camera_id, zone_id=zone_id)

    def first(selector: str, attribute: str, expected: str) -> None:
        page.wait_for_function(f"document.querySelector('{selector}')?.dataset.{attribute} === '{expected}'",
                               timeout=15_000)

    page.goto(site.url + "#/live")
    page.wait_for_selector("section.tile[data-camera=junction]", timeout=15_000)
    windows({("station", "concourse"): RiskLevel.NORMAL, ("station", "stairs"): RiskLevel.NORMAL,
             ("plaza", "square"): RiskLevel.CRITICAL})
    first(".grid > section.tile", "camera", "plaza")  # listed after station in the site file
    page.wait_for_selector("#live-summary:has-text('3 cameras, the most urgent first: 1 zone critical')",
                           timeout=10_000)
    page.goto(site.url + "#/zones")
    first(".zones-grid > section.card", "zone", "square")
    windows({("station", "stairs"): RiskLevel.DANGER, ("plaza", "square"): RiskLevel.NORMAL})
    first(".zones-grid > section.card", "zone", "stairs")
    page.goto(site.url + "#/live")
    first(".grid > section.tile", "camera", "station")


def test_incidents_are_links_that_the_keyboard_reaches_and_selects_and_a_reload_keeps(site, page):
    first, second = "plaza/square/risk-keys-1", "plaza/square/risk-keys-2"
    seq = site.frame("plaza", frame_jpeg(14))
    for incident_id in (first, second):
        record(site, site.event(incident_id, seq, severity=Severity.INFO))
    page.goto(site.url + "#/incidents")
    page.wait_for_selector(f".incident-item[data-incident='{second}']", timeout=10_000)
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('incident-item')"):
            break
    else:
        raise AssertionError("Tab never reaches an incident")
    page.focus(f".incident-item[data-incident='{first}']")
    page.keyboard.press("Enter")
    page.wait_for_selector(f"section[data-incident='{first}'] .timeline", timeout=10_000)
    assert page.evaluate("location.hash") == "#/incidents/" + urllib.parse.quote(first, safe="")
    page.focus(f".incident-item[data-incident='{second}']")
    page.keyboard.press(" ")
    page.wait_for_selector(f"section[data-incident='{second}'] .timeline", timeout=10_000)
    page.wait_for_timeout(2500)  # the list is drawn anew every 2 s: the keyboard stays where it was
    assert page.evaluate("document.activeElement.dataset.incident") == second
    page.reload()
    page.wait_for_selector(f"section[data-incident='{second}'] .timeline", timeout=10_000)
    page.wait_for_selector(f".incident-item.selected[data-incident='{second}'][aria-current=true]")

    def more_open_than_listed(route):
        response = route.fetch()
        body = response.json()
        body["summary"]["open"]["total"] += 30
        route.fulfill(response=response, json=body)

    page.route("**/api/incidents", more_open_than_listed)
    shown = page.wait_for_selector("#open-shown", timeout=10_000)
    listed = len(page.query_selector_all(".incident-item:has-text('open ·')"))
    assert shown.text_content() == f"showing {listed} of {listed + 30} open, the most urgent first"
    page.unroute("**/api/incidents")


def test_time_to_danger_is_now_at_danger_and_said_unknown_without_a_level_or_a_forecast(site, page):
    page.goto(site.url + "#/zones")
    figure = "section.card[data-zone=stairs] .figure[data-figure='time to danger'] .value"
    for level, forecast, danger_in_s, shown in ((RiskLevel.NORMAL, False, None, "no forecast yet"),
                                                 (RiskLevel.CAUTION, True, None, "not expected within 5 min"),
                                                 (RiskLevel.WARNING, True, 240.0, "4 min"),
                                                 (RiskLevel.DANGER, True, None, "now"),
                                                 (RiskLevel.UNKNOWN, False, None, "unknown")):
        site.zone_window(level, 2.0, time.time(), forecast=forecast, danger_in_s=danger_in_s, camera_id="station",
                         zone_id="stairs", area_m2=25)
        page.wait_for_function(f"document.querySelector(\"{figure}\")?.textContent === '{shown}'", timeout=10_000)


def test_the_forecast_line_crosses_danger_where_the_chart_marks_the_time_to_danger_the_figure_gives(site, page):
    page.goto(site.url + "#/zones")
    card = "section.card[data-zone=stairs]"
    site.zone_window(RiskLevel.WARNING, 4.0, time.time(), forecast=True, danger_in_s=240.0, camera_id="station",
                     zone_id="stairs", area_m2=25)
    marker = page.wait_for_selector(f"{card} .threshold-crossing[data-level=danger]", timeout=10_000)
    figure = page.query_selector(f"{card} .figure[data-figure='time to danger'] .value").text_content()
    assert figure == "4 min" and marker.text_content() == f"danger {figure}"
    assert page.query_selector(f"{card} .forecast-label").text_content() == "at the rise of the last 5 min"
    # The dashed line passes through the marker: no other crossing of danger for the eye to read.
    crossing = page.evaluate("""([card]) => {
        const chart = document.querySelector(`${card} svg.chart`);
        const circle = chart.querySelector(".threshold-crossing[data-level=danger] circle");
        const [cx, cy] = ["cx", "cy"].map((name) => Number(circle.getAttribute(name)));
        const corners = chart.querySelector(".forecast-line").getAttribute("d").slice(1).split("L")
            .map((corner) => corner.split(",").map(Number));
        for (const [[x1, y1], [x2, y2]] of corners.slice(1).map((corner, i) => [corners[i], corner])) {
            if (cx >= x1 && cx <= x2) return Math.abs(y1 + (y2 - y1) * (cx - x1) / (x2 - x1) - cy);
        }
        return null;
    }""", [card])
    assert crossing is not None and crossing < 0.5


def test_times_of_another_day_show_their_date_and_every_time_is_in_the_sites_zone(site, page):
    from zoneinfo import ZoneInfo

    then = time.time() - 3 * 86400
    event = site.event("plaza/square/risk-days-ago", site.frame("plaza", frame_jpeg(16)), severity=Severity.INFO)
    record(site, event.model_copy(update={"started_at": then, "updated_at": then}))
    opened = datetime.fromtimestamp(then, ZoneInfo("Asia/Seoul"))
    day = f"{opened:%b} {opened.day}, {opened.year}"
    page.goto(site.url + "#/incidents/" + urllib.parse.quote(event.event_id, safe=""))
    page.wait_for_function("/^\\d\\d:\\d\\d:\\d\\d GMT\\+9$/.test(document.querySelector('#clock').textContent)")
    item = page.wait_for_selector(f".incident-item[data-incident='{event.event_id}']", timeout=10_000)
    assert f"opened {day} {opened:%H:%M:%S}" in item.text_content()
    facts = page.wait_for_selector(f"section[data-incident='{event.event_id}'] .kv", timeout=10_000)
    assert f"{day} {opened:%H:%M:%S} GMT+9" in facts.text_content()


def test_long_text_stays_inside_its_card_and_track_labels_are_short(site, page):
    from sinks.alerts.notice import Notice

    store = site.store()
    try:
        store.record_notice(Notice(
            incident_id="plaza/square/long-title", source="events", type="risk_level_changed",
            state=EventState.OPENED, severity=Severity.INFO, camera_id="plaza", zone_id="square",
            title="unbroken-" + "x" * 300, message="m", at=time.time()), time.time())
    finally:
        store.close()
    page.goto(site.url + "#/incidents/plaza%2Fsquare%2Flong-title")
    page.wait_for_selector("section[data-incident='plaza/square/long-title'] .card-head b")
    for card in ("#incident-list", "section[data-incident='plaza/square/long-title']"):
        assert page.eval_on_selector(card, "card => card.scrollWidth <= card.clientWidth"), card
    assert page.evaluate("shortTrackId(1714567890123456)") == "3456"


def test_a_link_with_a_malformed_escape_shows_the_page_and_says_it_names_no_incident(site, page):
    listed = site.event("plaza/square/risk-listed", site.frame("plaza", frame_jpeg(17)), severity=Severity.INFO)
    record(site, listed)
    page.goto(site.url + "#/incidents/%E0%A4%A")  # an uncaught error would fail the test (the page fixture)
    page.wait_for_selector(f".incident-item[data-incident='{listed.event_id}']", timeout=10_000)
    error = page.wait_for_selector("section .notice.error", timeout=10_000)
    assert "no incident '%E0%A4%A'" in error.text_content()


def test_the_live_grid_fetches_pictures_only_for_tiles_on_screen_while_the_page_shows(site, page, kafka_bootstrap,
                                                                                      tmp_path):
    cameras = ["wall-1", "wall-2", "wall-3", "wall-4"]
    console, url = start_console(site_with_cameras(site, tmp_path / "wall.yaml", cameras), tmp_path, kafka_bootstrap)
    top, bottom = cameras[0], cameras[-1]
    fetched = dict.fromkeys(cameras, 0)  # picture requests per camera

    def count(request) -> None:
        picture = re.search(r"/api/cameras/([^/]+)/frame\.jpg", request.url)
        if picture:
            fetched[picture.group(1)] += 1

    def hide(hidden: bool) -> None:  # as the browser does for a tab in the background
        page.evaluate("""(hidden) => {
            if (hidden) Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
            else delete document.hidden;
            document.dispatchEvent(new Event('visibilitychange'));
        }""", hidden)

    try:
        # One column of tiles, each about as tall as the window: the last is several screens down.
        page.set_viewport_size({"width": 800, "height": 600})
        page.on("request", count)
        seqs = {camera: site.frame(camera, frame_jpeg(0)) for camera in cameras}
        page.goto(url + "#/live")
        page.wait_for_selector(f"section.tile[data-camera={bottom}]", timeout=15_000)
        assert page.locator(f"section.tile[data-camera={bottom}]").bounding_box()["y"] > 2 * 600
        for index in (1, 2, 3):
            seq = site.frame(top, frame_jpeg(index))
            page.wait_for_selector(f"canvas[data-camera={top}][data-seq='{seq}']", timeout=15_000)
        # The page knows of the bottom tile's frame, yet asked for none of its pictures.
        page.wait_for_selector(f"section.tile[data-camera={bottom}] [data-captured-at]", timeout=10_000)
        assert fetched[top] >= 3 and fetched[bottom] == 0, fetched

        page.locator(f"section.tile[data-camera={bottom}]").scroll_into_view_if_needed()
        page.wait_for_selector(f"canvas[data-camera={bottom}][data-seq='{seqs[bottom]}']", timeout=10_000)
        assert fetched[bottom] == 1

        hide(True)
        shown = fetched.copy()
        captured = f"document.querySelector('section.tile[data-camera={bottom}] [data-captured-at]').dataset.capturedAt"
        before = page.evaluate(captured)
        seq = site.frame(bottom, frame_jpeg(4))
        page.wait_for_function(f"{captured} !== '{before}'", timeout=15_000)  # the page knows of the new frame
        assert fetched[bottom] == shown[bottom]
        assert page.get_attribute(f"canvas[data-camera={bottom}]", "data-seq") != str(seq)
        hide(False)
        page.wait_for_selector(f"canvas[data-camera={bottom}][data-seq='{seq}']", timeout=10_000)
        assert fetched[bottom] == shown[bottom] + 1
    finally:
        console.stop()


def test_a_session_that_ends_shows_signed_out_at_once_and_signing_in_again_keeps_the_acknowledgement(site, page):
    event = site.event("plaza/square/risk-session-ended", site.frame("plaza", frame_jpeg(18)))
    record(site, event)
    operator(page, site, "/incidents/" + urllib.parse.quote(event.event_id, safe=""))
    shown = f"section[data-incident='{event.event_id}']"
    page.wait_for_selector(f"{shown} #ack:not([disabled])", timeout=10_000)
    assert page.text_content("#auth-state") == "operator" and page.is_hidden("#sign-in")

    # The session ends between two of the page's health polls: the acknowledgement is the first request refused.
    health = api_answer(site, "api/health")
    page.route("**/api/health", lambda route: route.fulfill(json=health))
    ended = session_cookie(TOKEN, int(time.time()) - 13 * 3600)  # console.session_hours is 12
    page.context.add_cookies([{"name": COOKIE, "value": ended, "url": site.url}])
    page.fill(f"{shown} .actions input[placeholder^=note]", "stewards sent")
    page.click(f"{shown} #ack")
    page.wait_for_selector("#auth-state[data-auth=signed-out]:has-text('signed out')", timeout=5_000)
    page.wait_for_selector("#sign-in:visible", timeout=5_000)
    assert "acknowledgement not recorded: signed out" in page.text_content(f"{shown} .notice.error")
    assert page.is_disabled(f"{shown} #ack") and page.is_disabled(f"{shown} #false-alarm")
    assert page.input_value(f"{shown} .actions input[placeholder^=note]") == "stewards sent"
    page.unroute("**/api/health")

    sign_in_after_a_wrong_token(page)
    page.wait_for_selector("#auth-state[data-auth=operator]:has-text('operator')", timeout=5_000)
    assert page.is_hidden("#sign-in") and page.input_value("#sign-in-token") == ""
    page.click(f"{shown} #ack:not([disabled])")  # the acknowledgement typed before, as it was
    page.wait_for_selector(f"{shown} .timeline li[data-verdict=acknowledged]:has-text('stewards sent')",
                           timeout=10_000)
    assert TOKEN not in page.context.cookies(site.url)[0]["value"]

    # Ended with nothing sent: the health poll says so.
    page.context.add_cookies([{"name": COOKIE, "value": ended, "url": site.url}])
    page.wait_for_selector("#auth-state[data-auth=signed-out]", timeout=10_000)
    assert page.is_disabled(f"{shown} #ack")


def test_a_page_reloaded_after_its_session_ended_comes_up_signed_out_and_signs_in_where_reads_need_the_token(
        site, page, kafka_bootstrap, tmp_path):
    config = tmp_path / "site.yaml"
    config.write_text(site.config_path.read_text().replace("console:\n",
                                                           "console:\n  require_token_for_reads: true\n"))
    os.environ["CITYGUARD_CONSOLE_TOKEN"] = TOKEN
    try:
        console, url = start_console(config, tmp_path, kafka_bootstrap)
    finally:
        del os.environ["CITYGUARD_CONSOLE_TOKEN"]
    try:
        page.goto(f"{url}?token={TOKEN}")
        page.goto(f"{url}#/live")
        page.wait_for_selector("section.tile[data-camera=plaza]", timeout=10_000)

        ended = session_cookie(TOKEN, int(time.time()) - 13 * 3600)  # console.session_hours is 12
        page.context.add_cookies([{"name": COOKIE, "value": ended, "url": url}])
        page.goto("about:blank")  # what the page asked before it was reloaded is not counted below
        answered = []
        page.on("response", lambda response: answered.append((urllib.parse.urlsplit(response.url).path,
                                                              response.status)))
        assert page.goto(f"{url}#/live").status == 200
        page.wait_for_selector("#auth-state[data-auth=signed-out]:has-text('signed out')", timeout=10_000)
        page.wait_for_selector("#no-session:visible", timeout=5_000)
        assert page.is_hidden("#session-ended") and page.locator("section.tile").count() == 0
        assert [status for path, status in answered if path.startswith("/api/")] == [401], answered
        for path in ("api/cameras", "api/live", "api/cameras/plaza/frame.jpg", "api/incidents"):
            assert page.request.get(url + path).status == 401, path

        sign_in_after_a_wrong_token(page)
        page.wait_for_selector("section.tile[data-camera=plaza]", timeout=10_000)
        page.wait_for_selector("#auth-state[data-auth=operator]", timeout=5_000)
        assert page.is_hidden("#sign-in") and urllib.parse.urlsplit(page.url).fragment == "/live"

        # Ended again while the page is open: the page stays, read-only, and says so.
        page.context.add_cookies([{"name": COOKIE, "value": ended, "url": url}])
        page.wait_for_selector("#session-ended:visible", timeout=10_000)
        assert page.is_hidden("#no-session") and page.locator("section.tile").count() == 3

        # Behind a reverse proxy that forwards its own Authorization header, every request offers a wrong token: the
        # page and its scripts check none, so it comes up signed out at every reload, the wrong-token wait included
        # (each reload's session request counts), and the token still signs in.
        page.context.clear_cookies()
        page.set_extra_http_headers({"Authorization": "Bearer the-proxys-own"})
        for _ in range(7):
            assert page.reload().status == 200
            page.wait_for_selector("#sign-in:visible", timeout=10_000)
        page.wait_for_selector("#sign-in-error:has-text('too many wrong console tokens')", timeout=5_000)
        assert page.is_hidden("#no-session")  # the 429's own words say what is wrong
        assert page.locator("#start-error").count() == 0
        sign_in(page, TOKEN)
        page.wait_for_selector("section.tile[data-camera=plaza]", timeout=10_000)
    finally:
        console.stop()


def test_an_open_page_follows_the_cameras_of_a_restarted_console(site, page, kafka_bootstrap, tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    config = tmp_path / "site.yaml"
    console, url = start_console(site_with_cameras(site, config, ["gate-1", "gate-2"], port), tmp_path,
                                 kafka_bootstrap)
    try:
        page.goto(url + "#/live")
        page.wait_for_selector("section.tile[data-camera=gate-2]", timeout=15_000)
        page.evaluate("window.sameDocument = true")
        console.stop()
        site_with_cameras(site, config, ["gate-1", "gate-3"], port)  # one camera added, one removed
        console, url = start_console(config, tmp_path, kafka_bootstrap)
        page.wait_for_selector("section.tile[data-camera=gate-3]", timeout=15_000)
        assert page.locator("section.tile").evaluate_all("tiles => tiles.map((tile) => tile.dataset.camera)") == \
            ["gate-1", "gate-3"]
        assert page.evaluate("window.sameDocument") is True, "picked up without reloading the page"
    finally:
        console.stop()


def test_changes_need_the_token(site):
    request = urllib.request.Request(f"{site.url}api/incidents/plaza%2Fsquare%2Frisk-ack/ack", method="POST",
                                     data=b"{}", headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401


@pytest.mark.parametrize("sender", [{"Origin": "http://127.0.0.1:3000"},  # another port of this host
                                    {"Origin": "http://wiki.city.local"},
                                    {"Sec-Fetch-Site": "same-site"}])
def test_changes_sent_by_another_sites_page_are_refused_even_with_the_cookie(site, sender):
    cookie = session_cookie(TOKEN, int(time.time()))
    request = urllib.request.Request(
        f"{site.url}api/incidents/plaza%2Fsquare%2Frisk-ack/ack", method="POST", data=b"{}",
        headers={"Content-Type": "text/plain", "Cookie": f"{COOKIE}={cookie}", **sender})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403


def test_a_loopback_console_answers_to_loopback_names_only(site):
    # A page whose DNS name was rebound to 127.0.0.1 sends its own name as the Host.
    request = urllib.request.Request(f"{site.url}api/live", headers={"Host": "evil.example"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403
    port = urllib.parse.urlsplit(site.url).port
    with urllib.request.urlopen(f"http://localhost:{port}/api/live", timeout=10) as answer:
        assert answer.status == 200


def test_a_console_on_another_address_refuses_without_the_token(site, page, kafka_bootstrap, tmp_path):
    started = subprocess.run([sys.executable, "-m", "cityguard", "console", "--config", str(site.config_path),
                              "--host", "0.0.0.0"], cwd=REPO, capture_output=True, text=True, timeout=60,
                             env={key: value for key, value in os.environ.items()
                                  if key != "CITYGUARD_CONSOLE_TOKEN"})
    assert started.returncode == 2
    assert started.stderr.strip().splitlines() == ["cityguard: error: console.host 0.0.0.0 is not a loopback "
                                                   "address: set CITYGUARD_CONSOLE_TOKEN (the console needs a token "
                                                   "there)"]

    os.environ["CITYGUARD_CONSOLE_TOKEN"] = TOKEN
    try:
        console, url = start_console(site.config_path, tmp_path, kafka_bootstrap, "--host", "0.0.0.0")
    finally:
        del os.environ["CITYGUARD_CONSOLE_TOKEN"]
    try:
        assert TOKEN not in console.log(), "a configured token is never printed"
        assert page.goto(url).status == 200  # the page alone, which offers sign-in
        page.wait_for_selector("#no-session:visible", timeout=10_000)
        assert page.goto(f"{url}api/live").status == 401
        assert page.goto(f"{url}?token=wrong").status == 401
        assert page.goto(f"{url}?token={TOKEN}").status == 200
        page.wait_for_function("document.querySelector('#auth-state').textContent === 'operator'")
    finally:
        console.stop()


@pytest.fixture(scope="module")
def named_browser(playwright_driver):
    """Chromium that finds every *.test name on this machine, as it would find a console's address on the network:
    unlike loopback names, those are no secure context over plain http."""
    browser = launch_chromium(playwright_driver, "--host-resolver-rules=MAP *.test 127.0.0.1")
    yield browser
    browser.close()


def test_over_plain_http_a_console_published_over_https_signs_in_where_listed_and_elsewhere_says_why_not(
        site, named_browser, kafka_bootstrap, tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    config = tmp_path / "site.yaml"
    config.write_text(site.config_path.read_text().replace("console:\n  port: 0\n", (
        f"console:\n  port: {port}\n  require_token_for_reads: true\n"
        f"  public_origins: [https://console.city.example, 'http://console.test:{port}']\n")))
    os.environ["CITYGUARD_CONSOLE_TOKEN"] = TOKEN
    try:
        console = StageProcess("console", config, kafka_bootstrap, tmp_path)
    finally:
        del os.environ["CITYGUARD_CONSOLE_TOKEN"]
    # Playwright's wait_for_function evaluates a string, which the console's policy forbids.
    listed, unlisted = named_browser.new_context(bypass_csp=True), named_browser.new_context()
    try:
        started = time.monotonic()
        while "console: http://" not in console.log():
            assert console.alive() and time.monotonic() - started < 60, console.log_tail()
            time.sleep(0.2)
        page = listed.new_page()
        page.goto(f"http://console.test:{port}/?token={TOKEN}")
        page.wait_for_function("document.querySelector('#auth-state').textContent === 'operator'")
        page = unlisted.new_page()
        assert page.goto(f"http://lan.test:{port}/?token={TOKEN}").status == 403
        assert page.text_content("body").startswith(f"cannot sign in at http://lan.test:{port}: the session cookie "
                                                    "is Secure, as console.public_origins lists "
                                                    "https://console.city.example")
    finally:
        listed.close()
        unlisted.close()
        console.stop()


def test_a_loopback_console_without_a_token_makes_one_and_prints_it_in_its_url(site, page, kafka_bootstrap,
                                                                                tmp_path):
    console, _ = start_console(site.config_path, tmp_path, kafka_bootstrap)
    try:
        [url] = re.findall(r"console: (http://127\.0\.0\.1:\d+/\?token=\S+)", console.log())
        page.goto(url)
        page.wait_for_function("document.querySelector('#auth-state').textContent === 'operator'")
        assert "token=" not in page.url, "the token leaves the address bar"
    finally:
        console.stop()


def test_screenshots_for_the_readme(site, page, tmp_path):
    """A busy station (a crowd building up towards danger, a caution zone, heat, an incident) beside the other
    cameras, saved as the README's images."""
    from sinks.alerts.notice import notice_from_event

    screenshots = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path / "screenshots")
    if not screenshots.is_absolute():
        screenshots = REPO / screenshots
    screenshots.mkdir(parents=True, exist_ok=True)
    now = time.time()
    thresholds = [(4.0, RiskLevel.WARNING), (2.0, RiskLevel.CAUTION), (0.0, RiskLevel.NORMAL)]
    for index in range(30):  # five minutes of 10 s windows, the concourse filling up
        end = now - 10 * (29 - index)
        density = 1.0 + 3.3 * (index / 29) ** 1.6 + 0.15 * np.sin(index)
        level = next(level for bound, level in thresholds if density >= bound)
        site.zone_window(level, density, end, forecast=index == 29, camera_id="station", zone_id="concourse",
                         area_m2=60, seconds=10)
        stairs = 2.3 + 0.2 * np.cos(index / 3)
        site.zone_window(RiskLevel.CAUTION, stairs, end, camera_id="station", zone_id="stairs", area_m2=25,
                         seconds=10)
    for camera in ("station", "plaza", "junction"):
        site.publish("camera_status", camera, CameraStatus(camera_id=camera, state=CameraState.UP, fps=10.0,
                                                           reconnects=0, dropped_frames=0, at=time.time()))
    site.publish("line_counts", "junction", LineCounts(
        camera_id="junction", line_id="stop-count", window_start=now - 60, window_end=now,
        class_name=["car", "car"], direction=["southbound", "northbound"], count=[14, 9]))
    site.frame("junction", frame_jpeg(60), people=5)
    site.frame("plaza", frame_jpeg(20), people=4)
    seq = site.frame("station", frame_jpeg(80), people=6, density_map=True)
    event = site.event("station/concourse/risk-warning", seq, camera_id="station", zone_id="concourse",
                       severity=Severity.WARNING,
                       reason="density 4.31 p/m² above the warning threshold 4.0; danger expected in 4 min")
    store = site.store()
    try:
        store.record_notice(notice_from_event(event), time.time())
    finally:
        store.close()
    operator(page, site, "/live")
    page.wait_for_selector("canvas[data-camera=station][data-seq]:not([data-seq=''])", timeout=15_000)
    page.wait_for_selector("canvas[data-camera=junction][data-seq]:not([data-seq=''])", timeout=15_000)
    page.wait_for_timeout(800)  # the next refresh, so every tile shows its health and levels
    page.screenshot(path=str(screenshots / "console-live.png"))
    page.goto(f"{site.url}#/camera/station")
    page.wait_for_selector(".zone-row[data-zone=concourse][data-level=warning]", timeout=15_000)
    page.wait_for_timeout(800)
    page.screenshot(path=str(screenshots / "console-camera.png"))
    page.goto(f"{site.url}#/zones")
    page.wait_for_selector("section.card[data-zone=concourse] svg path")
    page.screenshot(path=str(screenshots / "console-zones.png"))
    page.goto(f"{site.url}#/incidents")
    page.click(".incident-item[data-incident='station/concourse/risk-warning']")
    page.wait_for_selector("section[data-incident='station/concourse/risk-warning'] #ack")
    page.wait_for_timeout(500)  # the evidence image draws after it loads
    page.screenshot(path=str(screenshots / "console-incidents.png"))
    page.goto(f"{site.url}#/editor/junction")
    page.wait_for_function("document.querySelector('.editor-canvas')?.width === 768")
    page.click(".items li[data-id=northbound]")
    page.screenshot(path=str(screenshots / "console-editor.png"))
    for name in ("live", "camera", "zones", "incidents", "editor"):
        assert (screenshots / f"console-{name}.png").stat().st_size > 10_000

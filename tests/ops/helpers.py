"""Builders shared by the ops tests: an alerting config around local fakes, a dispatcher with settable clocks."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from schemas import Alert, Event, EventState, Severity
from schemas.settings.config import Config, parse_config
from sinks.alerts.channels import Message, build_channels
from sinks.alerts.dispatcher import AlertDispatcher, DeliveryTries, longest_try_s, to_message
from sinks.alerts.notice import Notice, notice_from_event
from sinks.alerts.store import IncidentStore

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "test-token-not-a-secret"
FROM_NUMBER = "+15005550006"
DUTY_PHONE = "+821011112222"
CHIEF_PHONE = "+821033334444"
OPS1_PHONE, OPS2_PHONE = "+821077770001", "+821077770002"  # a city operations desk's, on a route of its own
TWILIO_ENV = {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_FROM_NUMBER": FROM_NUMBER}


def alerting_section(twilio_url: str, webhook_url: str, store_url: str, **overrides) -> dict:
    fast_retry = {"max_attempts": 3, "backoff_initial_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 5}
    section = {
        "store_url": store_url,
        "cooldown_s": 600,
        "contacts": [{"id": "duty", "name": "Duty officer", "phone": DUTY_PHONE},
                     {"id": "chief", "name": "Shift chief", "phone": CHIEF_PHONE}],
        "channels": [
            {"kind": "sms", "id": "sms", "api_base_url": twilio_url, "messages_per_second": 100, "max_segments": 2,
             "template": "[{severity}] {title}: {message} — 확인: cityguard alerts ack {ref}", "retry": fast_retry},
            {"kind": "webhook", "id": "ops", "url": webhook_url, "retry": fast_retry},
        ],
        "routes": [{"id": "crowd", "match": {"severities": ["critical"]}, "channels": ["sms", "ops"],
                    "escalation": ["duty", "chief"], "escalate_after_s": 60}],
    }
    section.update(overrides)
    return section


def make_config(tmp_path: Path, section: dict, **top) -> Config:
    return parse_config({"site": "test", "alerting": section, **top}, tmp_path)


class Clock:
    """A clock the test sets. The wall clock starts at the real time: Twilio's date_created (real) is compared with the
    delivery's start when reconciling. The monotonic one, which times how long the dispatcher has known a claim,
    starts at 0, and wall clock steps never move it."""

    def __init__(self, now: float | None = None):
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    dispatcher: AlertDispatcher
    store: IncidentStore
    clock: Clock
    monotonic: Clock = field(default_factory=lambda: Clock(0.0))
    published: list[Alert] = field(default_factory=list)

    def retry_after(self, seconds: float) -> None:
        """Lets `seconds` pass and makes the retries then due."""
        self.clock.now += seconds
        self.dispatcher.retry_due()

    def let_every_try_end(self) -> None:
        """The dispatcher looks at the deliveries `sending` (as every tick does), then the longest try of any channel
        passes: a delivery still `sending` under the claim it saw is one no dispatcher works on."""
        self.dispatcher.resume_pending()
        longest_s = max(longest_try_s(channel.retry) for channel in self.dispatcher.channels.values()) + 1
        self.clock.now += longest_s
        self.monotonic.now += longest_s


def make_dispatcher(config: Config, publish: Callable[[Alert], None] | None = None,
                    tries: DeliveryTries | None = None, host: Clock | None = None,
                    host_name: str = "host") -> Harness:
    """A dispatcher whose alerts are published to `harness.published`, or by `publish`; its tries run in the caller
    unless `tries` says otherwise, so a test sees each one's outcome as the call that made it returns. `host`: a
    monotonic clock other dispatchers of the test read too, as processes on one host read its clock, named
    `host_name` (by default each has its own, which no other reads)."""
    store = IncidentStore(config.alerting.store_url)
    clock = Clock()
    harness = Harness(None, store, clock) if host is None else Harness(None, store, clock, host)
    harness.dispatcher = AlertDispatcher(config.alerting, config.site, store,
                                         build_channels(config.alerting.channels, config.resolve_path),
                                         publish or harness.published.append, clock=clock,
                                         tries=DeliveryTries(0) if tries is None else tries,
                                         monotonic=harness.monotonic,
                                         monotonic_clock=None if host is None else host_name)
    return harness


def danger_event(event_id: str = "plaza/north/risk-1", severity: Severity = Severity.CRITICAL,
                 state: EventState = EventState.OPENED, at: float = 1_800_000_000.0, zone: str = "north") -> Event:
    return Event(event_id=event_id, type="risk_level_changed", state=state, severity=severity, camera_id="plaza",
                 zone_id=zone, started_at=at, updated_at=at, ended_at=at if state == EventState.RESOLVED else None,
                 confidence=0.9, reason="밀도 5.6명/m² — 위험 단계 (danger)", details={"density_per_m2": 5.6})


def left_sending_by_a_crash(harness: Harness) -> tuple[Notice, Message, str]:
    """What a process killed right after recording a delivery as `sending` leaves behind: (notice, message, body)."""
    dispatcher = harness.dispatcher
    notice = notice_from_event(danger_event())
    harness.store.record_notice(notice, harness.clock())
    alert = dispatcher.decide(notice, "plaza/north/risk-1:critical", harness.clock())
    key = "plaza/north/risk-1:critical|sms|duty"
    message = Message(to_message(alert), alert.id, "test", dispatcher.contacts["duty"], key)
    body = dispatcher.channels["sms"].render(message)
    harness.store.begin_delivery(key, alert.id, "sms", "duty", body, harness.clock(), dispatcher.claim_watch.mark())
    return notice, message, body

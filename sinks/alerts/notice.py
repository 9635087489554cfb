"""The one shape the dispatcher decides on: an incident's state change, from an event or from Alertmanager."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

from schemas import Event, EventState, Severity
from schemas.base import ID_MAX_CHARS
from schemas.event import CLOSED_BY_RESET, EVENT_ID_MAX_CHARS

# An alert's text is cut to these: an Alertmanager description is as long as its request allows, and an alert too
# large to publish would be retried for ever. An SMS shows far less, a webhook's reader no more.
TITLE_MAX_CHARS = 300
MESSAGE_MAX_CHARS = 4_000
EVENTS = "events"
ALERTMANAGER = "alertmanager"
ABSOLUTE_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# What an HTTP header carries: an incident's id travels as one (a webhook's Idempotency-Key), as event ids do.
HEADER_TEXT = re.compile(r"[ -~]*")


def clipped(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[:max_chars - 1] + "…"


@dataclass(frozen=True)
class Notice:
    incident_id: str
    source: str  # EVENTS or ALERTMANAGER
    type: str
    state: EventState
    severity: Severity
    camera_id: str | None
    zone_id: str | None
    title: str
    message: str
    at: float  # unix seconds of this state change
    closed_by_reset: bool = False  # resolved because the analyzer lost its state, not because it ended
    labels_digest: str = ""  # an Alertmanager alert's label set, which camera and zone alone do not tell apart

    @property
    def dedupe_key(self) -> str:
        """Same key for a redelivered or re-notified state change, different for every real change."""
        return f"{self.incident_id}|{self.state.value}|{self.severity.value}|{self.at:.3f}"

    @property
    def subject(self) -> tuple[str, ...]:
        """What the cooldown is keyed on: the same kind of trouble at the same place (for an Alertmanager alert,
        with the same labels: one stage going down does not hold back another's page)."""
        place = self.type, self.camera_id or "", self.zone_id or ""
        return (*place, self.labels_digest) if self.labels_digest else place


def notice_from_event(event: Event) -> Notice:
    """The event as the dispatcher takes it. Its message is the event's reason alone, written for the operator: the
    details are readings for programs (a window's start as a unix time, seconds to six digits), which the events topic
    carries, and in an SMS they would take the segments the reason needs."""
    place = event.camera_id + (f"/{event.zone_id}" if event.zone_id else "")
    return Notice(
        incident_id=event.event_id, source=EVENTS, type=event.type, state=event.state, severity=event.severity,
        camera_id=event.camera_id, zone_id=event.zone_id,
        title=clipped(f"{event.type.replace('_', ' ')} at {place}", TITLE_MAX_CHARS),
        message=clipped(event.reason, MESSAGE_MAX_CHARS),
        at=event.ended_at if event.state == EventState.RESOLVED and event.ended_at else event.updated_at,
        closed_by_reset=event.state == EventState.RESOLVED and event.details.get("closed_by") == CLOSED_BY_RESET,
    )


def _timestamp(value: object, where: str) -> float | None:
    if value is None or value == "" or (isinstance(value, str) and value.startswith("0001-")):
        return None  # Alertmanager's zero time for "not ended"
    if not isinstance(value, str):
        raise ValueError(f"{where} is not a time string")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ValueError(f"{where} is not an RFC 3339 time: {value[:40]!r}") from None


def _text_map(value: object, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(item, str) for item in value.values()):
        raise ValueError(f"{where} is not a map of strings")
    return value


def _bounded(value: str | None, max_chars: int, where: str) -> str | None:
    """The value, unless longer than the incident store's column for it: such a request is refused, not retried."""
    if value is not None and len(value) > max_chars:
        raise ValueError(f"{where} is longer than {max_chars} characters")
    return value


def notices_from_alertmanager(payload: object, runbook_base_url: str | None = None) -> list[Notice]:
    """Alertmanager webhook JSON (version 4): one notice per alert, keyed by its fingerprint (a hash of its labels,
    the same every time it fires: the incident opens again when it fires after it resolved, and is alerted anew).

    A relative runbook_url is sent under runbook_base_url when one is given. Raises ValueError naming the first field
    that does not fit the format, so the sender gets a 400 with the reason.
    """
    if not isinstance(payload, dict) or str(payload.get("version")) != "4" or not isinstance(payload.get("alerts"),
                                                                                              list):
        raise ValueError("not an Alertmanager webhook payload (version 4 with an alerts list)")
    notices = []
    for index, alert in enumerate(payload["alerts"]):
        where = f"alerts[{index}]"
        if not isinstance(alert, dict):
            raise ValueError(f"{where} is not an object")
        labels = _text_map(alert.get("labels", {}), f"{where}.labels")
        annotations = _text_map(alert.get("annotations", {}), f"{where}.annotations")
        if alert.get("status") not in ("firing", "resolved"):
            raise ValueError(f"{where}.status is neither firing nor resolved")
        fingerprint = alert.get("fingerprint")
        if fingerprint is not None and not isinstance(fingerprint, str):
            raise ValueError(f"{where}.fingerprint is not a string")
        name = labels.get("alertname", "alert")
        resolved = alert["status"] == "resolved"
        try:
            severity = Severity(labels.get("severity", "warning"))
        except ValueError:
            severity = Severity.WARNING
        started = _timestamp(alert.get("startsAt"), f"{where}.startsAt") or 0.0
        ended = _timestamp(alert.get("endsAt"), f"{where}.endsAt") if resolved else None
        fingerprint = fingerprint or "-".join(f"{k}={v}" for k, v in sorted(labels.items()))
        runbook = annotations.get("runbook_url")
        if runbook and runbook_base_url and not ABSOLUTE_URL.match(runbook):
            runbook = f"{runbook_base_url.rstrip('/')}/{runbook.lstrip('/')}"
        # Without a description the labels say where it fires (an SMS would otherwise end "frames stale: ").
        description = annotations.get("description") or ", ".join(
            f"{key}={value}" for key, value in sorted(labels.items()) if key not in ("alertname", "severity"))
        digest = hashlib.blake2b(fingerprint.encode(), digest_size=8).hexdigest()
        # Labels a header cannot carry (Korean, without Alertmanager's own fingerprint) are named by their digest.
        incident = fingerprint if HEADER_TEXT.fullmatch(fingerprint) else digest
        notices.append(Notice(
            incident_id=_bounded(f"am-{incident}", EVENT_ID_MAX_CHARS, f"{where}.fingerprint"),
            source=ALERTMANAGER, type=_bounded(name, ID_MAX_CHARS, f"{where}.labels.alertname"),
            state=EventState.RESOLVED if resolved else EventState.OPENED, severity=severity,
            camera_id=_bounded(labels.get("camera"), ID_MAX_CHARS, f"{where}.labels.camera"),
            zone_id=_bounded(labels.get("zone"), ID_MAX_CHARS, f"{where}.labels.zone"),
            title=clipped(annotations.get("summary", name), TITLE_MAX_CHARS),
            message=(clipped(description, MESSAGE_MAX_CHARS - 300)  # room for the runbook
                     + (f" Runbook: {clipped(runbook, 280)}" if runbook else "")).strip(),
            at=ended or started,
            labels_digest=digest,
        ))
    return notices

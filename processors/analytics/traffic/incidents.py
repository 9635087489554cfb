"""Event life cycle: conditions that hold now become one event each (opened, updated on a level change, resolved).

A condition is identified by a key (rule and subject, e.g. "wrong_way:17"); while it keeps holding, the same event
continues. It is resolved once the condition has been gone for `resolve_seconds` (hysteresis against flicker), and
for a condition about its tracks' own behaviour not while one of them is followed but unseen. The event id hashes
camera, key and the sequence number of the opening frame, so reprocessing the same stream yields the same ids and a
consumer can drop duplicates.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from processors.analytics.traffic.state import OpenIncident, TrafficState
from schemas import Event, EventState, FrameRef, Severity


@dataclass
class Condition:
    key: str
    type: str
    severity: Severity
    reason: str
    confidence: float
    zone_id: str | None = None
    track_ids: list[int] = field(default_factory=list)
    level: int = 0  # a change of level (e.g. congestion heavy -> jammed) updates the event
    details: dict[str, float | int | str] = field(default_factory=dict)
    # About its tracks' own behaviour (wrong-way driving, a person on the roadway): while one of them is still
    # followed but unseen (hidden behind a passing vehicle), the event stays open, so one offender is one event.
    track_bound: bool = False


def event_id(camera_id: str, key: str, opening_seq: int) -> str:
    return hashlib.sha256(f"{camera_id}|{key}|{opening_seq}".encode()).hexdigest()[:24]


def reconcile(state: TrafficState, camera_id: str, conditions: list[Condition], now: float, seq: int,
              resolve_seconds: float, hidden: set[int]) -> list[Event]:
    """`hidden`: the track ids still followed but not seen in this frame."""
    events: list[Event] = []
    holding = {condition.key: condition for condition in conditions}
    for key, condition in holding.items():
        incident = state.incidents.get(key)
        if incident is None:
            incident = state.incidents[key] = OpenIncident(
                event_id=event_id(camera_id, key, seq), key=key, type=condition.type,
                severity=condition.severity.value, zone_id=condition.zone_id, track_ids=sorted(condition.track_ids),
                started_at=now, last_true_at=now, level=condition.level, confidence=condition.confidence,
                reason=condition.reason, details=condition.details, evidence_seq=seq,
                track_bound=condition.track_bound)
            events.append(_event(incident, camera_id, EventState.OPENED, now))
            continue
        incident.last_true_at = now
        # What it says now (how long a vehicle has stood, how far it went), also in the event that resolves it.
        incident.reason, incident.details = condition.reason, condition.details
        incident.confidence = max(incident.confidence, condition.confidence)
        joined = set(condition.track_ids) - set(incident.track_ids)
        if condition.level != incident.level or condition.severity.value != incident.severity or joined:
            # The same incident seen for what it is (a stopped vehicle found to have crashed), or with more parties
            # (the other vehicle of a crash coming to rest): updated, not new.
            incident.level, incident.severity = condition.level, condition.severity.value
            incident.reason, incident.type = condition.reason, condition.type
            incident.track_ids = sorted(set(incident.track_ids) | joined)
            incident.evidence_seq = seq
            events.append(_event(incident, camera_id, EventState.UPDATED, now))
    for key in [key for key, incident in state.incidents.items()
                if key not in holding and now - incident.last_true_at >= resolve_seconds
                and not (incident.track_bound and hidden.intersection(incident.track_ids))]:
        incident = state.incidents.pop(key)
        events.append(_event(incident, camera_id, EventState.RESOLVED, now, ended_at=incident.last_true_at))
    return events


def resolve_all(state: TrafficState, camera_id: str, now: float, reason: str) -> list[Event]:
    """Every open incident resolved at `now`, ending when its condition last held, with `reason` added."""
    events = []
    for incident in state.incidents.values():
        incident.reason = f"{incident.reason}; {reason}"
        events.append(_event(incident, camera_id, EventState.RESOLVED, now, ended_at=incident.last_true_at))
    state.incidents.clear()
    return events


def _event(incident: OpenIncident, camera_id: str, state: EventState, now: float,
           ended_at: float | None = None) -> Event:
    return Event(
        event_id=incident.event_id, type=incident.type, state=state, severity=Severity(incident.severity),
        camera_id=camera_id, zone_id=incident.zone_id, track_ids=incident.track_ids, started_at=incident.started_at,
        updated_at=now, ended_at=ended_at, confidence=round(incident.confidence, 3),
        evidence=FrameRef(camera_id=camera_id, seq=incident.evidence_seq), reason=incident.reason,
        details=incident.details,
    )

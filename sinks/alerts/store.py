"""Incident store (SQLAlchemy): every notice, alert, delivery, delivery attempt, acknowledgement and operator review.

SQLite by default, any SQLAlchemy URL by configuration. Unique keys make recording idempotent: a redelivered event
finds its row, an alert id is decided once, and a delivery key (alert, channel, contact) exists once, which is what
makes "one SMS per incident level and recipient" hold across restarts (see dispatcher.py).
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    event,
    false,
    func,
    inspect,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Dialect, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, OperationalError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from infra.backoff import backoff_delay
from infra.redaction import shown
from schemas.base import ID_MAX_CHARS
from schemas.event import EVENT_ID_MAX_CHARS, SEVERITY_RANK, Severity
from schemas.settings.alerting import AlertingConfig
from schemas.settings.base import ConfigError, env_value
from sinks.alerts.notice import Notice

OPEN, RESOLVED = "open", "resolved"
ACKNOWLEDGED, FALSE_ALARM = "acknowledged", "false_alarm"
NOTIFYING, SUPPRESSED = "notifying", "suppressed"
SENDING, RETRYING, SENT, FAILED = "sending", "retrying", "sent", "failed"
# The largest alert number a lookup may name: SQLite's integers (and Postgres' bigint) end there, and a larger one
# is refused by the driver rather than found missing.
ALERT_NUMBER_MAX = 2**63 - 1
ALERT_NUMBER = re.compile(r"[1-9][0-9]*")  # as alerts are numbered in texts: no sign, no leading zero
CLOCK_ROW = 1  # the id of the clock table's one row


def alert_key(incident_id: str, severity: Severity, episode: int) -> str:
    """One alert per incident, level and time it opened: an incident opened again after it resolved (an
    Alertmanager alert firing again) is alerted anew (AlertRow.episode reads it back)."""
    return f"{incident_id}:{severity.value}" + (f"#{episode}" if episode else "")


class Base(DeclarativeBase):
    pass


class IncidentRow(Base):
    __tablename__ = "incidents"
    id: Mapped[str] = mapped_column(String(EVENT_ID_MAX_CHARS), primary_key=True)
    source: Mapped[str] = mapped_column(String(20))
    type: Mapped[str] = mapped_column(String(ID_MAX_CHARS), index=True)
    camera_id: Mapped[str | None] = mapped_column(String(ID_MAX_CHARS))
    zone_id: Mapped[str | None] = mapped_column(String(ID_MAX_CHARS))
    severity: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(20), index=True)
    title: Mapped[str] = mapped_column(Text)
    opened_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    resolved_at: Mapped[float | None] = mapped_column(Float)
    # Resolved because its analyzer was reset: it may go on under a new id, whose alert no cooldown may hold back.
    closed_by_reset: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    # Times it opened again after it resolved (an Alertmanager alert whose labels fire again): each time is alerted
    # anew.
    reopened: Mapped[int] = mapped_column(Integer, default=0, nullable=False)


class EventRow(Base):
    """One state change as received (from the events topic or Alertmanager)."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(300), unique=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"), index=True)
    state: Mapped[str] = mapped_column(String(20))
    severity: Mapped[str] = mapped_column(String(20))
    at: Mapped[float] = mapped_column(Float)
    received_at: Mapped[float] = mapped_column(Float)
    message: Mapped[str] = mapped_column(Text)


def escalation_columns(steps: dict[str, tuple[int, float]]) -> dict:
    """An alert's escalation columns for each route's (step, when reached): route_steps, and the furthest step and the
    latest time any route reached one."""
    return {"route_steps": {route: list(reached) for route, reached in steps.items()},
            "escalation_step": max((step for step, _ in steps.values()), default=0),
            "escalated_at": max((at for _, at in steps.values()), default=None)}


class AlertRow(Base):
    """A decision to notify (or not, with the reason) for one incident at one severity; id is the short ack ref."""

    __tablename__ = "alerts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[str] = mapped_column(String(250), unique=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"), index=True)
    severity: Mapped[str] = mapped_column(String(20))
    camera_id: Mapped[str | None] = mapped_column(String(ID_MAX_CHARS))
    zone_id: Mapped[str | None] = mapped_column(String(ID_MAX_CHARS))
    subject: Mapped[str] = mapped_column(String(300), index=True)
    routes: Mapped[list] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text, default="")
    title: Mapped[str] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    # The furthest step any of its routes reached, as `incidents show` prints it; each route's own is in route_steps.
    escalation_step: Mapped[int] = mapped_column(Integer, default=0)
    # When the next route's step falls due (the earliest of them); None once no route has a contact left, or the
    # alert was acknowledged or its incident resolved.
    next_escalation_at: Mapped[float | None] = mapped_column(Float, index=True)
    # When a route last reached a step (the first page, or the latest escalation); None in stores from before it
    # was kept, where created_at stands for it.
    escalated_at: Mapped[float | None] = mapped_column(Float)
    # Each route's escalation, {route id: [step, when it reached it]}: routes escalate each after its own
    # escalate_after_s. None in stores from before routes escalated apart (route_escalation reads those).
    route_steps: Mapped[dict | None] = mapped_column(JSON)
    # The alert id of the first alert of the same trouble, for an alert that continues it: an incident that ended and
    # came back within the cooldown. Its deliveries are keyed under that id, so nobody paged already is paged again,
    # and acknowledging any alert of the chain acknowledges them all.
    continues: Mapped[str | None] = mapped_column(String(250), index=True)
    acked_at: Mapped[float | None] = mapped_column(Float)
    published_at: Mapped[float | None] = mapped_column(Float)

    def route_escalation(self) -> dict[str, tuple[int, float]]:
        """Each of its routes' step and when the route reached it; an alert stored before routes escalated apart has
        its one step, reached at escalated_at, on every route."""
        if self.route_steps is not None:
            return {route: (step, at) for route, (step, at) in self.route_steps.items()}
        reached = self.escalated_at or self.created_at
        return {route: (self.escalation_step or 0, reached) for route in self.routes}

    @property
    def episode(self) -> int:
        """The opening of its incident it was raised in (alert_key's `#n`); 0 for an id not made by alert_key."""
        opened_again = self.alert_id.removeprefix(f"{self.incident_id}:{self.severity}#")
        return int(opened_again) if opened_again != self.alert_id and opened_again.isdecimal() else 0


# SQLite's wait for another writer's lock: the longest a claim's write may wait after the claim was marked.
BUSY_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ClaimMark:
    """When a claim was made on the claiming process's monotonic clock, and which clock that is: one every process of
    a host shares until it reboots (None: a clock no other process reads, whose times mean nothing to another)."""

    clock: str | None
    at_s: float

    def columns(self, claim) -> dict:
        """The row's columns for a claim, the claim's count (`claim`: a number or the column expression that makes
        it) with them: a dispatcher of the version before raises the count without marking its claim."""
        return {"claim_clock": self.clock, "claim_clock_s": self.at_s if self.clock else None, "claim_clock_of": claim}


class DeliveryRow(Base):
    """One message to one recipient over one channel; `key` is its idempotency key.

    `sending` while a try may be in flight (committed before the request), `retrying` while waiting for
    `next_attempt_at` after a retryable failure, then `sent` or `failed`. `claims` counts the claims and tries since
    it was recorded, and `claimed_at` is the wall time of the latest (recorded, claimed, try begun): a claim is made
    against the count read with the row, which a clock stepped back never moves, as it moves `claimed_at`, and a try is
    begun only against the count its claim left, so that a dispatcher which took the row over since makes the try
    instead. The count tells one claim from the next; how old a claim is no stored time says, since two hosts'
    clocks, or one stepped forward, disagree about it: a dispatcher times the claims it knows itself
    (dispatcher.ClaimWatch), and those made on its own host by the host's monotonic clock (`claim_clock`,
    `claim_clock_s` of the claim counted `claim_clock_of`: ClaimMark). A dispatcher of the version before the count
    judges by `claimed_at`, which is kept for it.
    """

    __tablename__ = "deliveries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(400), unique=True)
    alert_ref: Mapped[int] = mapped_column(ForeignKey("alerts.id"), index=True)
    channel_id: Mapped[str] = mapped_column(String(100))
    contact_id: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), index=True)
    body: Mapped[str] = mapped_column(Text)
    provider_id: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float | None] = mapped_column(Float, index=True)
    tried_at: Mapped[float | None] = mapped_column(Float)  # when the latest try began
    claimed_at: Mapped[float | None] = mapped_column(Float)
    # The database's default too: a dispatcher of the version before, sharing the store during an upgrade, records
    # deliveries without it.
    claims: Mapped[int] = mapped_column(Integer, default=0, server_default="0", nullable=False)
    # The latest claim's time on the claiming host's monotonic clock, and which clock that is (ClaimMark).
    claim_clock: Mapped[str | None] = mapped_column(String(100))
    claim_clock_s: Mapped[float | None] = mapped_column(Float)
    claim_clock_of: Mapped[int | None] = mapped_column(Integer)  # the count of the claim marked
    reconcile_first: Mapped[bool] = mapped_column(Boolean, default=False)  # the last try may have gone out


class AttemptRow(Base):
    __tablename__ = "delivery_attempts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id"), index=True)
    at: Mapped[float] = mapped_column(Float)
    status_code: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(20))  # sent, retry, failed, reconciled
    error: Mapped[str | None] = mapped_column(Text)


class AcknowledgementRow(Base):
    __tablename__ = "acknowledgements"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_ref: Mapped[int] = mapped_column(ForeignKey("alerts.id"), index=True)
    at: Mapped[float] = mapped_column(Float)
    by: Mapped[str] = mapped_column(String(100))
    note: Mapped[str] = mapped_column(Text, default="")


class ReviewRow(Base):
    """An operator's verdict on an incident: acknowledged, or a false alarm (its evidence kept as a hard negative)."""

    __tablename__ = "incident_reviews"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"), index=True)
    verdict: Mapped[str] = mapped_column(String(20))  # ACKNOWLEDGED or FALSE_ALARM
    at: Mapped[float] = mapped_column(Float)
    by: Mapped[str] = mapped_column(String(100))
    note: Mapped[str] = mapped_column(Text, default="")
    evidence_path: Mapped[str | None] = mapped_column(Text)


class ClockRow(Base):
    """The dispatchers' wall clock as the store last saw it (one row): a clock reading earlier than `latest_at` by
    more than a margin has been stepped back, and the stored due times are moved back with it (rebase_clock)."""

    __tablename__ = "dispatcher_clock"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    latest_at: Mapped[float] = mapped_column(Float)
    # How many steps back the due times were moved for: of dispatchers that notice one step, only the first moves them.
    steps_back: Mapped[int] = mapped_column(Integer, default=0, nullable=False)


@dataclass(frozen=True)
class ClockMark:
    """A dispatcher's view of the clock row: the latest time it has read, and the steps back moved for so far."""
    latest_at: float
    steps_back: int


@dataclass(frozen=True)
class IncidentDetail:
    incident: IncidentRow
    events: list[EventRow]
    alerts: list[AlertRow]
    deliveries: list[DeliveryRow]
    attempts: list[AttemptRow]
    acknowledgements: list[AcknowledgementRow]
    reviews: list[ReviewRow]


def checked_store_url(alerting: AlertingConfig) -> tuple[str, str]:
    """The incident store's URL (its variable's value, else alerting.store_url) and where it comes from, for errors
    (which show the URL without its password); ConfigError, in one line, for a URL that no installed database
    dialect and driver can open. Nothing is connected to."""
    from_env = env_value(alerting.store_url_env, "alerting.store_url_env")
    url = from_env or alerting.store_url
    where = f"incident store ({'$' + alerting.store_url_env if from_env else 'alerting.store_url'})"
    try:
        make_url(url).get_dialect().import_dbapi()
    except (NoSuchModuleError, ArgumentError, ValueError):  # ValueError: a port that is no number
        raise ConfigError(f"{where}: not a database URL this installation knows: {shown(url)}") from None
    except ModuleNotFoundError as exc:
        raise ConfigError(f"{where}: the driver for {shown(url)} is not installed ({exc.name})") from None
    return url, where


def resolve_store_url(url: str, base_dir: Path) -> str:
    """Relative SQLite paths are relative to the configuration file; their folder is created."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return url
    path = Path(parsed.database)
    if not path.is_absolute():
        path = (base_dir / path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return parsed.set(database=str(path)).render_as_string(hide_password=False)


class IncidentStore:
    def __init__(self, url: str):
        self.engine = create_engine(url)
        if self.engine.dialect.name == "sqlite":
            # The dispatcher and `cityguard alerts ack` write the same file: wait for a lock, don't fail.
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._create_tables()
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def _create_tables(self, attempts: int = 5) -> None:
        # The dispatcher and the console start together: both may find a table or column missing and one CREATE or
        # ALTER then fails because the other's went first. Looking again finds it.
        for attempt in range(attempts):
            try:
                Base.metadata.create_all(self.engine)
                _add_missing_columns(self.engine)
                return
            except (OperationalError, ProgrammingError):
                if attempt == attempts - 1:
                    raise
                time.sleep(backoff_delay(attempt + 1, 0.2, 1.0))

    def close(self) -> None:
        self.engine.dispose()

    # -- notices and incidents ---------------------------------------------------------------------------------

    def record_notice(self, notice: Notice, now: float) -> bool:
        """Records the state change; False when it was recorded before (a redelivery)."""
        with self.sessions.begin() as session:
            if session.scalar(select(EventRow.id).where(EventRow.dedupe_key == notice.dedupe_key)) is not None:
                return False
            incident = session.get(IncidentRow, notice.incident_id)
            if incident is not None and incident.state == RESOLVED and notice.closed_by_reset:
                # A reset closes what its analyzer last stored as open; an incident that really ended since stays
                # as it ended (with its cooldown), and its history holds its own end only.
                return False
            if incident is None:
                incident = IncidentRow(id=notice.incident_id, source=notice.source, type=notice.type,
                                       camera_id=notice.camera_id, zone_id=notice.zone_id,
                                       severity=notice.severity.value, state=OPEN, title=notice.title,
                                       opened_at=notice.at, updated_at=notice.at, resolved_at=None)
                session.add(incident)
                session.flush()  # before the event row that references it (no ORM relationships to order them)
            if notice.at >= incident.updated_at:
                incident.severity, incident.title, incident.updated_at = notice.severity.value, notice.title, notice.at
            if notice.state.value == "resolved":
                incident.state, incident.resolved_at = RESOLVED, notice.at
                incident.closed_by_reset = notice.closed_by_reset
            elif incident.state == RESOLVED and notice.at > (incident.resolved_at or 0):
                incident.state, incident.resolved_at, incident.closed_by_reset = OPEN, None, False
                incident.reopened = (incident.reopened or 0) + 1
            session.add(EventRow(dedupe_key=notice.dedupe_key, incident_id=notice.incident_id,
                                 state=notice.state.value, severity=notice.severity.value, at=notice.at,
                                 received_at=now, message=notice.message))
            if notice.state.value == "resolved":
                session.execute(AlertRow.__table__.update()
                                .where(AlertRow.incident_id == notice.incident_id)
                                .values(next_escalation_at=None))
        return True

    def open_episode(self, incident_id: str) -> int | None:
        """How many times the incident opened again after it resolved (0: never); None when it is not open."""
        with self.sessions() as session:
            incident = session.get(IncidentRow, incident_id)
            return incident.reopened or 0 if incident is not None and incident.state == OPEN else None

    # -- alerts -------------------------------------------------------------------------------------------------

    def get_alert(self, alert_id: str) -> AlertRow | None:
        with self.sessions() as session:
            return session.scalar(select(AlertRow).where(AlertRow.alert_id == alert_id))

    def alert_by_ref(self, alert_ref: int) -> AlertRow | None:
        with self.sessions() as session:
            return session.get(AlertRow, alert_ref)

    def last_notifying_alert(self, subject: str, since: float) -> AlertRow | None:
        with self.sessions() as session:
            return session.scalar(select(AlertRow)
                                  .join(IncidentRow, IncidentRow.id == AlertRow.incident_id)
                                  .where(AlertRow.subject == subject, AlertRow.status == NOTIFYING,
                                         AlertRow.created_at >= since, IncidentRow.closed_by_reset.is_(False))
                                  .order_by(AlertRow.created_at.desc()).limit(1))

    def create_alert(self, row: AlertRow) -> AlertRow:
        """Inserts the decision; if the same alert id was decided meanwhile, that one is returned."""
        try:
            with self.sessions.begin() as session:
                session.add(row)
            return row
        except IntegrityError:
            existing = self.get_alert(row.alert_id)
            assert existing is not None
            return existing

    def mark_published(self, alert_ref: int, now: float) -> None:
        with self.sessions.begin() as session:
            session.get(AlertRow, alert_ref).published_at = now

    def due_escalations(self, now: float) -> list[AlertRow]:
        with self.sessions() as session:
            return list(session.scalars(select(AlertRow).where(
                AlertRow.status == NOTIFYING, AlertRow.acked_at.is_(None), AlertRow.next_escalation_at <= now)))

    def set_escalation(self, alert_ref: int, due_at: float, steps: dict[str, tuple[int, float]],
                       next_at: float | None) -> bool:
        """Moves an escalation that fell due at `due_at` on to each route's `steps` (step, when reached), the next
        due at `next_at`; False when another dispatcher moved it first (it is due at another time now) or it was
        acknowledged or resolved meanwhile (it is due at none)."""
        with self.sessions.begin() as session:
            moved = session.execute(update(AlertRow).where(
                AlertRow.id == alert_ref, AlertRow.next_escalation_at == due_at).values(
                next_escalation_at=next_at, **escalation_columns(steps)))
            return moved.rowcount == 1

    def acknowledge(self, ref: str, by: str, note: str, now: float) -> list[AlertRow] | None:
        """Acknowledges what `cityguard alerts ack` names: an alert by its number or id (_acknowledge_alert), or else
        an incident by its id, as a verdict does (_acknowledge_incident); None when the ref names neither.

        A number names an alert only as alerts are numbered (no leading zero) and when that alert exists: an incident
        id may be digits alone (a traffic incident's, one in about 79,000), never mistaken for a number it is not."""
        with self.sessions.begin() as session:
            alert = None
            if ALERT_NUMBER.fullmatch(ref) and int(ref) <= ALERT_NUMBER_MAX:
                alert = session.get(AlertRow, int(ref))
            alert = alert or session.scalar(select(AlertRow).where(AlertRow.alert_id == ref))
            if alert is not None:
                return _acknowledge_alert(session, alert, by, note, now)
            if session.get(IncidentRow, ref) is not None:
                return _acknowledge_incident(session, ref, by, note, now)
            return None

    def review_incident(self, incident_id: str, verdict: str, by: str, note: str, now: float,
                        evidence_path: str | None = None) -> bool:
        """Records the operator's verdict and acknowledges the incident's alerts (escalation stops either way);
        False when the incident is unknown."""
        if verdict not in (ACKNOWLEDGED, FALSE_ALARM):
            raise ValueError(f"verdict must be {ACKNOWLEDGED} or {FALSE_ALARM}, not {verdict!r}")
        with self.sessions.begin() as session:
            if session.get(IncidentRow, incident_id) is None:
                return False
            session.add(ReviewRow(incident_id=incident_id, verdict=verdict, at=now, by=by, note=note,
                                  evidence_path=evidence_path))
            _acknowledge_incident(session, incident_id, by, note, now)
        return True

    def reviews(self, incident_ids: list[str]) -> dict[str, list[ReviewRow]]:
        with self.sessions() as session:
            rows = session.scalars(select(ReviewRow).where(ReviewRow.incident_id.in_(incident_ids))
                                   .order_by(ReviewRow.id))
            reviews: dict[str, list[ReviewRow]] = {}
            for row in rows:
                reviews.setdefault(row.incident_id, []).append(row)
            return reviews

    def open_unacknowledged(self) -> dict[str, int]:
        """The unanswered alerts (`unanswered_alerts`) counted by severity."""
        with self.sessions() as session:
            rows = session.execute(_unanswered(select(AlertRow.severity, func.count())).group_by(AlertRow.severity))
            return {severity: count for severity, count in rows}

    def unanswered_alerts(self) -> list[AlertRow]:
        """The alerts that wait for an acknowledgement: notifying, not acknowledged, their incident open."""
        with self.sessions() as session:
            return list(session.scalars(_unanswered(select(AlertRow))))

    def open_incidents(self) -> list[tuple[IncidentRow, bool]]:
        """Every open incident, and whether it is acknowledged: an operator gave a verdict, or someone acknowledged
        its alerts (an SMS reply), and none of its alerts waits for an acknowledgement (as `open_unacknowledged`
        counts them: one raised since, when the incident rose to a higher severity or opened again). A verdict
        acknowledges every alert of the incident, so this needs no comparison of different machines' clocks."""
        with self.sessions() as session:
            rows = list(session.scalars(select(IncidentRow).where(IncidentRow.state == OPEN)))
            alerts = session.execute(select(AlertRow.incident_id, AlertRow.status, AlertRow.acked_at)
                                     .join(IncidentRow, IncidentRow.id == AlertRow.incident_id)
                                     .where(IncidentRow.state == OPEN)).all()
            reviewed = set(session.scalars(select(ReviewRow.incident_id)
                                           .join(IncidentRow, IncidentRow.id == ReviewRow.incident_id)
                                           .where(IncidentRow.state == OPEN)))
        acknowledged = reviewed | {incident_id for incident_id, _, acked_at in alerts if acked_at is not None}
        waiting = {incident_id for incident_id, status, acked_at in alerts if status == NOTIFYING and acked_at is None}
        return [(row, row.id in acknowledged and row.id not in waiting) for row in rows]

    # -- deliveries ---------------------------------------------------------------------------------------------

    def begin_delivery(self, key: str, alert_ref: int, channel_id: str, contact_id: str | None, body: str,
                       now: float, mark: ClaimMark) -> tuple[DeliveryRow, bool]:
        """The delivery under this key: (row, True) when recorded now as sending, (existing row, False) otherwise.
        Looked up first: most calls find it (every tick notifies the unanswered alerts again), and a refused insert
        is an error in the database's own log."""
        with self.sessions() as session:
            existing = session.scalar(select(DeliveryRow).where(DeliveryRow.key == key))
        if existing is not None:
            return existing, False
        row = DeliveryRow(key=key, alert_ref=alert_ref, channel_id=channel_id, contact_id=contact_id,
                          status=SENDING, body=body, started_at=now, claimed_at=now, claims=0, attempt_count=0,
                          reconcile_first=False, **mark.columns(0))
        try:
            with self.sessions.begin() as session:
                session.add(row)
            return row, True
        except IntegrityError:
            with self.sessions() as session:
                return session.scalar(select(DeliveryRow).where(DeliveryRow.key == key)), False

    def start_attempt(self, claimed: DeliveryRow, now: float, mark: ClaimMark) -> DeliveryRow | None:
        """Marks the delivery `sending` and counts the try, committed before the request goes out; None, counting
        nothing, when a dispatcher claimed it since it was read as `claimed`: the try is that dispatcher's to make."""
        with self.sessions.begin() as session:
            started = session.execute(update(DeliveryRow).where(
                DeliveryRow.id == claimed.id, DeliveryRow.claims == claimed.claims,
            ).values(status=SENDING, next_attempt_at=None, tried_at=now, claimed_at=now, claims=DeliveryRow.claims + 1,
                     attempt_count=DeliveryRow.attempt_count + 1, **mark.columns(DeliveryRow.claims + 1)))
            return session.get(DeliveryRow, claimed.id) if started.rowcount == 1 else None

    def schedule_retry(self, delivery_id: int, next_attempt_at: float, reconcile_first: bool) -> None:
        with self.sessions.begin() as session:
            row = session.get(DeliveryRow, delivery_id)
            row.status, row.next_attempt_at, row.reconcile_first = RETRYING, next_attempt_at, reconcile_first

    def due_retries(self, now: float) -> list[DeliveryRow]:
        with self.sessions() as session:
            return list(session.scalars(select(DeliveryRow).where(
                DeliveryRow.status == RETRYING, DeliveryRow.next_attempt_at <= now).order_by(DeliveryRow.id)))

    def claim_retry(self, delivery_id: int, now: float, mark: ClaimMark) -> DeliveryRow | None:
        """Takes a due retry for this process by marking it `sending`; None when another dispatcher on the same
        store took it first."""
        with self.sessions.begin() as session:
            claimed = session.execute(update(DeliveryRow).where(
                DeliveryRow.id == delivery_id, DeliveryRow.status == RETRYING, DeliveryRow.next_attempt_at <= now,
            ).values(status=SENDING, next_attempt_at=None, claimed_at=now, claims=DeliveryRow.claims + 1,
                     **mark.columns(DeliveryRow.claims + 1)))
            return session.get(DeliveryRow, delivery_id) if claimed.rowcount == 1 else None

    def claim_sending(self, seen: DeliveryRow, now: float, mark: ClaimMark) -> DeliveryRow | None:
        """Takes a `sending` delivery for this process's try; None when a dispatcher claimed it since it was read as
        `seen`."""
        with self.sessions.begin() as session:
            claimed = session.execute(update(DeliveryRow).where(
                DeliveryRow.id == seen.id, DeliveryRow.status == SENDING, DeliveryRow.claims == seen.claims,
            ).values(claimed_at=now, claims=DeliveryRow.claims + 1, **mark.columns(DeliveryRow.claims + 1)))
            return session.get(DeliveryRow, seen.id) if claimed.rowcount == 1 else None

    def last_try_at(self, delivery_id: int) -> float:
        """When the delivery's latest try began, recorded as the try starts so that a crash during it leaves it; for
        a row without it (no try yet, or one from before tries were timed) its start or its latest recorded try's
        end, whichever is later."""
        with self.sessions() as session:
            row = session.get(DeliveryRow, delivery_id)
            if row.tried_at is not None:
                return row.tried_at
            last = session.scalar(select(func.max(AttemptRow.at)).where(AttemptRow.delivery_id == delivery_id))
            return max(row.started_at, last or row.started_at)

    def record_attempt(self, delivery_id: int, outcome: str, status_code: int | None, error: str | None,
                       now: float) -> None:
        with self.sessions.begin() as session:
            session.add(AttemptRow(delivery_id=delivery_id, at=now, status_code=status_code, outcome=outcome,
                                   error=error))

    def finish_delivery(self, delivery_id: int, status: str, provider_id: str | None, error: str | None,
                        now: float) -> None:
        with self.sessions.begin() as session:
            row = session.get(DeliveryRow, delivery_id)
            row.status, row.provider_id, row.error, row.finished_at = status, provider_id, error, now
            row.next_attempt_at = None

    def deliveries(self, alert_ref: int | None = None, status: str | None = None) -> list[DeliveryRow]:
        with self.sessions() as session:
            query = select(DeliveryRow).order_by(DeliveryRow.id)
            if alert_ref is not None:
                query = query.where(DeliveryRow.alert_ref == alert_ref)
            if status is not None:
                query = query.where(DeliveryRow.status == status)
            return list(session.scalars(query))

    # -- the clock ---------------------------------------------------------------------------------------------

    def clock_mark(self, now: float) -> ClockMark:
        """The clock row, recorded with `now` if the store has none yet."""
        with self.sessions() as session:
            row = session.get(ClockRow, CLOCK_ROW)
        if row is None:
            try:
                with self.sessions.begin() as session:
                    session.add(ClockRow(id=CLOCK_ROW, latest_at=now, steps_back=0))
                return ClockMark(now, 0)
            except IntegrityError:  # another dispatcher recorded it first
                with self.sessions() as session:
                    row = session.get(ClockRow, CLOCK_ROW)
        return ClockMark(row.latest_at, row.steps_back)

    def note_clock(self, now: float) -> int:
        """Keeps `now` as the latest time seen if it is later than the one kept, so that a clock stepped back while
        no dispatcher ran is noticed at the next start; the steps back moved for so far."""
        with self.sessions.begin() as session:
            session.execute(update(ClockRow).where(ClockRow.id == CLOCK_ROW, ClockRow.latest_at < now)
                            .values(latest_at=now))
            return session.get(ClockRow, CLOCK_ROW).steps_back

    def rebase_clock(self, seen: ClockMark, now: float, recent_s: float) -> bool:
        """Moves every time the dispatchers wait from back by the step from `seen.latest_at` to `now`: the
        escalations of alerts still escalating, and the time of each alert raised within `recent_s` of the step
        (a cooldown, or an escalation to continue, starts from it), and the tries of deliveries still `sending` or
        `retrying`. False, moving nothing, when another dispatcher moved them since `seen` was read: it noticed the
        same step."""
        step = seen.latest_at - now
        with self.sessions.begin() as session:
            moved = session.execute(update(ClockRow).where(
                ClockRow.id == CLOCK_ROW, ClockRow.steps_back == seen.steps_back,
            ).values(latest_at=now, steps_back=seen.steps_back + 1))
            if moved.rowcount != 1:
                return False
            for alert in session.scalars(select(AlertRow).where(
                    AlertRow.next_escalation_at.is_not(None) | (AlertRow.created_at >= seen.latest_at - recent_s))):
                alert.created_at -= step
                alert.next_escalation_at = earlier(alert.next_escalation_at, step)
                alert.escalated_at = earlier(alert.escalated_at, step)
                if alert.route_steps is not None:
                    alert.route_steps = {route: [reached, at - step]
                                         for route, (reached, at) in alert.route_steps.items()}
            session.execute(update(DeliveryRow).where(DeliveryRow.status.in_((SENDING, RETRYING))).values(
                started_at=DeliveryRow.started_at - step, tried_at=DeliveryRow.tried_at - step,
                claimed_at=DeliveryRow.claimed_at - step, next_attempt_at=DeliveryRow.next_attempt_at - step))
        return True

    # -- queries for the CLI ------------------------------------------------------------------------------------

    def list_incidents(self, only_open: bool = False, limit: int = 50) -> list[IncidentRow]:
        with self.sessions() as session:
            query = select(IncidentRow).order_by(IncidentRow.updated_at.desc()).limit(limit)
            if only_open:
                query = query.where(IncidentRow.state == OPEN)
            return list(session.scalars(query))

    def incident_detail(self, incident_id: str) -> IncidentDetail | None:
        with self.sessions() as session:
            incident = session.get(IncidentRow, incident_id)
            if incident is None:
                return None
            alerts = list(session.scalars(select(AlertRow).where(AlertRow.incident_id == incident_id)
                                          .order_by(AlertRow.id)))
            refs = [alert.id for alert in alerts]
            deliveries = list(session.scalars(select(DeliveryRow).where(DeliveryRow.alert_ref.in_(refs))
                                              .order_by(DeliveryRow.id)))
            return IncidentDetail(
                incident=incident,
                events=list(session.scalars(select(EventRow).where(EventRow.incident_id == incident_id)
                                            .order_by(EventRow.id))),
                alerts=alerts, deliveries=deliveries,
                attempts=list(session.scalars(select(AttemptRow).where(
                    AttemptRow.delivery_id.in_([delivery.id for delivery in deliveries])).order_by(AttemptRow.id))),
                acknowledgements=list(session.scalars(select(AcknowledgementRow).where(
                    AcknowledgementRow.alert_ref.in_(refs)).order_by(AcknowledgementRow.id))),
                reviews=list(session.scalars(select(ReviewRow).where(ReviewRow.incident_id == incident_id)
                                             .order_by(ReviewRow.id))),
            )


def earlier(at: float | None, by: float) -> float | None:
    """`at` moved `by` seconds back; None stays None."""
    return None if at is None else at - by


def _unanswered(query):
    """`query` over the alerts limited to those that wait for an acknowledgement."""
    return query.join(IncidentRow, IncidentRow.id == AlertRow.incident_id).where(
        AlertRow.status == NOTIFYING, AlertRow.acked_at.is_(None), IncidentRow.state == OPEN)


def _acknowledge_alert(session, alert: AlertRow, by: str, note: str, now: float) -> list[AlertRow]:
    """An alert named by its number or id (an SMS reply) was paged for its whole chain: all of it is acknowledged.
    So are the other alerts of its incident raised in the same opening or an earlier one at the same or a lower
    severity, as far as their chains go up to them: whoever answers the critical page of an incident has seen its
    warning, but whoever answers the warning has not seen the critical page, which escalates on, nor an alert of a
    later opening."""
    rank = SEVERITY_RANK[Severity(alert.severity)]
    incident_alerts = session.scalars(select(AlertRow).where(AlertRow.incident_id == alert.incident_id,
                                                             AlertRow.status == NOTIFYING, AlertRow.id != alert.id))
    covered = [other for other in incident_alerts
               if other.episode <= alert.episode and SEVERITY_RANK[Severity(other.severity)] <= rank]
    return _acknowledge_chains(session, [alert], covered, by, note, now)


def _acknowledge_incident(session, incident_id: str, by: str, note: str, now: float) -> list[AlertRow]:
    """A verdict on an incident covers its alerts and those of the chains before them, never a later incident's alert
    that continues them, which nobody has seen."""
    named = session.scalars(select(AlertRow).where(AlertRow.incident_id == incident_id, AlertRow.status == NOTIFYING))
    return _acknowledge_chains(session, [], list(named), by, note, now)


def _acknowledge_chains(session, whole: list[AlertRow], up_to: list[AlertRow], by: str, note: str,
                        now: float) -> list[AlertRow]:
    """Acknowledges the chains of the `whole` alerts entirely, and those of the `up_to` alerts up to the newest of
    them in each chain."""
    newest: dict[str, int | None] = {}  # each chain up to its newest alert named; None: all of it
    for alert in up_to:
        chain = alert.continues or alert.alert_id
        newest[chain] = max(newest.get(chain, 0), alert.id)
    for alert in whole:
        newest[alert.continues or alert.alert_id] = None
    in_chains = []
    for chain, newest_id in newest.items():
        in_chain = (AlertRow.alert_id == chain) | (AlertRow.continues == chain)
        in_chains.append(in_chain if newest_id is None else in_chain & (AlertRow.id <= newest_id))
    alerts = list(session.scalars(select(AlertRow).where(AlertRow.status == NOTIFYING, or_(false(), *in_chains))
                                  .order_by(AlertRow.id)))
    for alert in alerts:
        session.add(AcknowledgementRow(alert_ref=alert.id, at=now, by=by, note=note))
        if alert.acked_at is None:
            alert.acked_at = now
        alert.next_escalation_at = None
    return alerts


def _add_missing_columns(engine: Engine) -> None:
    """Adds the columns a store created by an earlier version lacks."""
    inspector = inspect(engine)
    quote = engine.dialect.identifier_preparer.quote
    with engine.begin() as connection:
        for table in Base.metadata.sorted_tables:
            present = {column["name"] for column in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in present:
                    connection.execute(text(f"ALTER TABLE {quote(table.name)} ADD COLUMN "
                                            f"{_added_column_definition(column, engine.dialect)}"))


def _added_column_definition(column: Column, dialect: Dialect) -> str:
    """The column as ALTER TABLE ADD COLUMN takes it: the rows already there take its default, or NULL without one,
    so a NOT NULL column needs a default (SystemExit otherwise, before any row could break it)."""
    definition = f"{dialect.identifier_preparer.quote(column.name)} {column.type.compile(dialect)}"
    has_default = column.default is not None and column.default.is_scalar
    if has_default:
        value = literal(column.default.arg, column.type).compile(dialect=dialect,
                                                                 compile_kwargs={"literal_binds": True})
        definition += f" DEFAULT {value}"
    if not column.nullable:
        if not has_default:
            raise SystemExit(f"incident store: column {column.table.name}.{column.name} is missing and NOT NULL "
                             "without a default, so the rows already there would have no value: give it a scalar "
                             "default or make it nullable")
        definition += " NOT NULL"
    return definition


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000:.0f}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def subject_key(subject: tuple[str, ...]) -> str:
    # Unescaped: a label of 64 Korean characters (an Alertmanager zone) escaped as \uXXXX made the key six times its
    # length, past the width of alerts.subject, which a database enforcing it refuses.
    return json.dumps(list(subject), ensure_ascii=False)

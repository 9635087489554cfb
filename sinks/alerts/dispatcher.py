"""The dispatcher's decisions: record, dedupe, cool down, route, deliver, escalate.

Delivery guarantee ("one SMS per incident level and recipient"): every delivery has an idempotency key
(alert id, channel, contact) with a unique row in the store. The row is committed as `sending` *before* the HTTP
call and set to `sent`/`failed` after it. A crash between the two leaves `sending`; on every escalation tick such a
row, once no try of it can still be in flight (this dispatcher has known its latest claim, unchanged, for
`longest_try_s` by its own monotonic clock, or by its host's for a claim made there: ClaimWatch), is claimed by one
dispatcher and, unless its first try never began (then it is simply sent), reconciled with the provider instead of
being blindly re-sent: every SMS carries a tag unique to its delivery (channels.delivery_tag), the dispatcher lists
the recipient's recent messages at Twilio and, if one holds the tag (whatever Twilio put before it, such as a trial
account's prefix), marks the delivery sent with that SID. While the listing may still lag behind the try
(SmsChannelConfig.listing_lag_s) the delivery waits; only a tag still missing after that is sent again. A
listing that cannot be read at all counts as a failed try: the delivery is retried, asking first, and fails for good
after its tries. A duplicate needs a listing slower than listing_lag_s or one that cannot be read at all, and the
window for a loss is nil: we prefer a rare duplicate alarm to a silent one. Webhooks are re-sent with the same
Idempotency-Key header; sound is replayed.

No try is made on the dispatcher's loop: the loop records a delivery (`sending`, or `retrying` with its
`next_attempt_at` after a retryable failure: 429, 5xx, network, an error the channel did not foresee; doubling
back-off, or the longer wait a Retry-After asks for) and hands the try to DeliveryTries, a few threads per channel.
So one recipient's outage never holds up the other alerts, the Alertmanager webhook or the Kafka consumer, and a
channel whose receiver hangs holds up only its own tries. Once an alert's
deliveries are recorded, its event may be committed: a try that a crash cut short or never began is a `sending` row,
resumed from the store as above. Every try first claims its row in the store (a due retry from `retrying`, any other
from `sending` as last claimed when the try was queued): of dispatchers sharing a store, one makes it, and within one
dispatcher a delivery has at most one try queued or running. The request goes out only while that claim is the
latest: a dispatcher that took the delivery over meanwhile (the first asked the provider for longer than a try lasts)
makes the try, and the first does not. After an ambiguous try (the request may have reached the
provider) the retry reconciles first, as a restart does. A contact's next channel is a fallback: it is tried only
once the delivery on the channel before it has failed for good.

Alerts: one per incident, severity and opening (alert id `<incident>:<severity>`, with `#<n>` once the incident has
opened again), decided once and stored. A lower or equal severity on the same camera/zone/type within the cooldown is
recorded as suppressed, as is a downgrade of an incident already alerted higher, except when the alert within the
cooldown belongs to an incident (or opening) that has ended and nobody acknowledged it: the trouble came back before
anyone answered, so the new alert continues that one. It pages nobody that alert paged (its deliveries are keyed
under the first alert's id), and its escalation goes on from that alert's steps, each route's next contact due that
route's escalate_after_s after its step was reached (the first page, or its latest escalation), not after the
re-opening: a zone that flaps faster than escalate_after_s still escalates. An incident closed by an analyzer reset
starts no cooldown: what it was about may go on under a new incident. Escalation state (each route's step, when the
next falls due) lives in the store, so a restart continues it; two routes that take one alert escalate each on its own
time.

The times waited for (escalations, retries, a cooldown) are wall times, so that a restart keeps them; a clock stepped
back moves them back by the step (WatchedClock), so none waits for the step on top of its own. Whether a claim is
abandoned is the one judgement that compares what two processes did, and no wall clock takes part in it: it is
timed by the judging process alone, or by the monotonic clock of the host both ran on (ClaimWatch).
"""
from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator
from zoneinfo import ZoneInfo

from prometheus_client import Counter, Gauge

from infra.backoff import backoff_delay
from schemas import Alert, EventState, Severity
from schemas.event import SEVERITY_RANK
from schemas.settings.alerting import AlertingConfig, ContactConfig, RetryConfig, RouteConfig
from sinks.alerts.channels import Attempt, Channel, ListingLag, Message, ReconcileError
from sinks.alerts.notice import Notice
from sinks.alerts.redact import describe_error
from sinks.alerts.routing import select_routes
from sinks.alerts.store import (
    BUSY_TIMEOUT_S,
    FAILED,
    NOTIFYING,
    RETRYING,
    SENDING,
    SENT,
    SUPPRESSED,
    AlertRow,
    ClaimMark,
    ClockMark,
    DeliveryRow,
    IncidentStore,
    alert_key,
    escalation_columns,
    subject_key,
)

log = logging.getLogger(__name__)

NOTICES = Counter("cityguard_alert_notices_total", "Incident state changes received", ["source", "outcome"])
ALERTS = Counter("cityguard_alerts_total", "Alerts decided", ["severity", "status"])
DELIVERIES = Counter("cityguard_alert_deliveries_total", "Deliveries finished", ["channel", "status"])
RETRIES = Counter("cityguard_alert_delivery_retries_total", "Delivery attempts retried after 429/5xx/network errors",
                  ["channel"])
ESCALATIONS = Counter("cityguard_alert_escalations_total", "Alerts escalated to the next contact")
UNACKNOWLEDGED = Gauge("cityguard_alerts_unacknowledged", "Alerts of open incidents nobody acknowledged",
                       ["severity"])
# What a try spends besides waiting for the answer: connecting, a rate limiter slot, the store's lock (busy_timeout
# 10 s). A try slower still is taken for a crash's: a rare duplicate rather than a long silence after a crash.
TRY_OVERHEAD_S = 15.0
# The longest wait a receiver's Retry-After is granted (one asking for more waits this long): an alert held longer is
# hardly one. Each such wait spends a try, so a receiver that keeps asking holds the contact's next channel back for
# at most max_attempts - 1 of them.
RETRY_AFTER_MAX_S = 600.0
# How far the clock may read earlier than it did before without counting as stepped back: more than two hosts'
# synchronised clocks disagree by, or NTP slews; a smaller step holds what falls due for at most this long.
CLOCK_STEP_MARGIN_S = 5.0


UNREACHABLE = "unreachable"  # the metric's status of a delivery the channel cannot make to its contact (no phone)
# Tries of one channel at once: a burst of alerts is not sent one by one, and the store's connection pool (5 + 10
# overflow by default) stays ahead of the threads of a few channels and the loop.
TRIES_PER_CHANNEL = 3


class DeliveryTries:
    """Runs delivery tries off the dispatcher's loop: `threads_per_channel` daemon threads per channel, so a receiver
    that hangs holds up its own channel's tries only. A delivery has at most one try queued or running here. With
    0 threads a try runs in the caller, which lets tests step deliveries one by one.

    Threads are daemons: a try cut short by the process ending is a crash's leftover, which the store resumes."""

    def __init__(self, threads_per_channel: int = TRIES_PER_CHANNEL):
        self.threads_per_channel = threads_per_channel
        self.queues: dict[str, queue.SimpleQueue] = {}
        self.in_flight: set[int] = set()
        self.changed = threading.Condition()

    def submit(self, delivery: DeliveryRow, work: Callable[[], None]) -> None:
        """Queues a try of the delivery, unless one is queued or running already."""
        with self.changed:
            if delivery.id in self.in_flight:
                return
            self.in_flight.add(delivery.id)
            tries = self.queues.get(delivery.channel_id)
            if tries is None and self.threads_per_channel:
                tries = self.queues[delivery.channel_id] = queue.SimpleQueue()
                for number in range(self.threads_per_channel):
                    threading.Thread(target=self.serve, args=(tries,), daemon=True,
                                     name=f"deliveries-{delivery.channel_id}-{number}").start()
        if tries is None:
            self.run(delivery, work)
        else:
            tries.put((delivery, work))

    def serve(self, tries: queue.SimpleQueue) -> None:
        while True:
            self.run(*tries.get())

    def run(self, delivery: DeliveryRow, work: Callable[[], None]) -> None:
        try:
            with skipped_on_error(f"delivery {delivery.key}"):  # left `sending` or `retrying`: resumed from the store
                work()
        finally:
            with self.changed:
                self.in_flight.discard(delivery.id)
                self.changed.notify_all()

    def wait_until_idle(self, timeout_s: float) -> bool:
        """Whether every try queued or running has ended within `timeout_s`."""
        with self.changed:
            return self.changed.wait_for(lambda: not self.in_flight, timeout_s)


class WatchedClock:
    """The wall clock as the dispatcher reads it, noticing it stepped back (a host's clock corrected by NTP, a VM
    restored from a snapshot): due times are stored as wall times, so that a restart keeps them, and the first
    reading after a step moves them back by the step (IncidentStore.rebase_clock) before anything waits on them or
    stores a time of the new clock. An escalation then falls due after the wait intended, not that plus the step.
    The latest time read is kept in the store on every tick, so a step while no dispatcher ran is noticed at start, as
    far as it is larger than the time none ran: the clock's advance meanwhile hides as much of it.

    A step forward is not undone: what fell due within it is made at once, each escalation one step on and each try
    once, as after a dispatcher that was down that long."""

    def __init__(self, read: Callable[[], float], store: IncidentStore, recent_s: float):
        self.read, self.store, self.recent_s = read, store, recent_s
        self.lock = threading.Lock()  # read by the loop and the delivery threads alike
        self.seen: ClockMark | None = None

    def __call__(self) -> float:
        with self.lock:
            now = self.read()
            if self.seen is None:
                self.seen = self.store.clock_mark(now)
            step = step_back(self.seen.latest_at, now)
            if step is not None:
                if self.store.rebase_clock(self.seen, now, self.recent_s):
                    log.warning("the clock went back %.0f s: escalations, retries and pending deliveries moved back "
                                "with it", step)
                self.seen = self.store.clock_mark(now)
            self.seen = ClockMark(max(self.seen.latest_at, now), self.seen.steps_back)
            return now

    def keep(self) -> None:
        """Keeps the latest time read in the store, and learns of steps another dispatcher moved the store for."""
        self()  # a step since the last reading is moved for first
        with self.lock:
            self.seen = ClockMark(self.seen.latest_at, self.store.note_clock(self.seen.latest_at))


def host_monotonic_clock() -> str | None:
    """Which monotonic clock time.monotonic reads: on Linux the host's, shared by every process (and container) on
    it until it reboots, named by the boot's id, the time namespace (a container restored from a checkpoint may have
    its clock offset) and the wall time the clock started at, to the second (which tells apart machines cloned from one
    snapshot); None where that cannot be told. Processes whose names differ never compare their clocks."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/time")
    except OSError:
        return None
    return f"{boot}|{namespace}|{round(time.time() - time.monotonic())}"


class ClaimWatch:
    """When this process may take a `sending` delivery to be abandoned: once it has known the delivery's latest claim
    unchanged for longer than a try lasts, timed by its own monotonic clock from when it made the claim or first read
    it, or, for a claim made on the same clock (`clock`: the host's, a restarted process's too), from when it was
    made. A claim is told by the row's count of claims, which every claim raises and no clock step moves (a step back
    moves `claimed_at`); a dispatcher of the version before the count, which claims by `claimed_at` alone, is not seen.
    No wall clock and no other host's clock is compared with this one, so neither a wall clock stepped forward on
    either host nor two hosts' clocks disagreeing makes a try still under way look abandoned; a claim made on another
    host, already old when first read, waits a try's length all the same."""

    def __init__(self, monotonic: Callable[[], float], clock: str | None):
        self.monotonic = monotonic
        self.clock = clock  # which clock `monotonic` reads (host_monotonic_clock), None when no other process does
        self.lock = threading.Lock()  # used by the loop and the delivery threads alike
        self.known: dict[int, tuple[int, float]] = {}  # delivery id: (claim, known since)

    def mark(self) -> ClaimMark:
        """A claim about to be made, as the store records it."""
        return ClaimMark(self.clock, self.monotonic())

    def claim_known_longer_than(self, row: DeliveryRow, limit_s: float) -> bool:
        """Whether the row's claim is the one known for longer than `limit_s`; a claim not known yet is known now, or
        from when it was made where that was on this process's clock (a crash's leftover on its own host, after a
        restart, waits only what is left of its try's length)."""
        now = self.monotonic()
        with self.lock:
            known, since = self.known.get(row.id, (None, now))
            if known != row.claims:
                marked_here = (self.clock is not None and row.claim_clock == self.clock
                               and row.claim_clock_of == row.claims and row.claim_clock_s is not None
                               and math.isfinite(row.claim_clock_s))
                # The claim's write may have waited for the store's lock after it was marked, and its try began after
                # that: dated from the latest it can have been made.
                since = min(row.claim_clock_s + BUSY_TIMEOUT_S, now) if marked_here else now
                self.known[row.id] = (row.claims, since)
                if now - since > limit_s:
                    return True
                # An SRE reading the log after a restart learns why an SMS it left half-sent waits, and for how long.
                log.info("delivery %s is sending under a claim this dispatcher did not make (another dispatcher's try, "
                         "or one cut short by a crash): resumed here if the claim is unchanged in %.0f s", row.key,
                         limit_s - (now - since))
                return False
            return now - since > limit_s

    def know(self, row: DeliveryRow) -> None:
        """A claim this process has just made: known from now."""
        with self.lock:
            self.known[row.id] = (row.claims, self.monotonic())

    def keep_only(self, rows: list[DeliveryRow]) -> None:
        """Forgets the deliveries other than `rows` (those no longer `sending`)."""
        ids = {row.id for row in rows}
        with self.lock:
            self.known = {delivery_id: known for delivery_id, known in self.known.items() if delivery_id in ids}


def step_back(latest_at: float, now: float) -> float | None:
    """How far the clock went back, reading `now` after it had read `latest_at`; None within CLOCK_STEP_MARGIN_S."""
    return latest_at - now if latest_at - now > CLOCK_STEP_MARGIN_S else None


class AlertDispatcher:
    def __init__(self, config: AlertingConfig, site: str, store: IncidentStore, channels: dict[str, Channel],
                 publish: Callable[[Alert], None], clock: Callable[[], float] = time.time,
                 tries: DeliveryTries | None = None, monotonic: Callable[[], float] = time.monotonic,
                 monotonic_clock: str | None = None):
        self.config = config
        self.site = site
        self.store = store
        self.channels = channels
        for channel_id in channels:  # at 0 from the start, so the alert rule's increase() sees the first failure
            DELIVERIES.labels(channel_id, FAILED)
        self.publish = publish
        self.clock = WatchedClock(clock, store, config.cooldown_s)
        # `monotonic_clock` names a clock given as `monotonic` that other processes read too (tests).
        self.claim_watch = ClaimWatch(monotonic, host_monotonic_clock() if monotonic is time.monotonic
                                      else monotonic_clock)
        self.tries = DeliveryTries() if tries is None else tries
        self.timezone = ZoneInfo(config.timezone) if config.timezone else None
        self.routes = {route.id: route for route in config.routes}
        self.contacts = {contact.id: contact for contact in config.contacts}

    # -- notices --------------------------------------------------------------------------------------------------

    def handle(self, notice: Notice) -> AlertRow | None:
        """Records one state change and notifies as the routes say; safe to call again with the same notice.

        Returns the notice's alert, for publish_once; None for a resolved or closed incident.
        """
        now = self.clock()
        new = self.store.record_notice(notice, now)
        NOTICES.labels(notice.source, "new" if new else "duplicate").inc()
        # A duplicate still goes on: the run that recorded it may have died before its deliveries finished.
        episode = None if notice.state == EventState.RESOLVED else self.store.open_episode(notice.incident_id)
        if episode is None:
            return None
        alert_id = alert_key(notice.incident_id, notice.severity, episode)
        alert = self.store.get_alert(alert_id) or self.decide(notice, alert_id, now, episode)
        if alert.status == NOTIFYING:
            self.notify(alert)
        return alert

    def publish_once(self, alert: AlertRow) -> None:
        """Puts a notifying alert on the alerts topic unless the store says it is there already; raises when the
        broker did not confirm it, and its notice, redelivered, publishes it then.

        Called once every notice at hand has notified: a broker outage must not hold back an SMS.
        """
        stored = self.store.alert_by_ref(alert.id)  # `alert` may have been read before another notice published it
        if stored.status == NOTIFYING and stored.published_at is None:
            self.publish(to_message(stored))
            self.store.mark_published(stored.id, self.clock())

    def decide(self, notice: Notice, alert_id: str, now: float, episode: int = 0) -> AlertRow:
        local = datetime.fromtimestamp(now, self.timezone).time()
        routes = select_routes(self.config.routes, notice, local)
        status, reason, continues, carried_on = NOTIFYING, "", None, {}
        if not routes:
            status, reason = SUPPRESSED, "no route matches"
        else:
            higher = [severity for severity in Severity if SEVERITY_RANK[severity] > SEVERITY_RANK[notice.severity]]
            if any(self.store.get_alert(alert_key(notice.incident_id, severity, episode)) for severity in higher):
                status, reason = SUPPRESSED, "incident already alerted at a higher severity"
            else:
                last = self.store.last_notifying_alert(subject_key(notice.subject), now - self.config.cooldown_s)
                if last is not None and SEVERITY_RANK[Severity(last.severity)] >= SEVERITY_RANK[notice.severity]:
                    if last.acked_at is None and self.ended(last):
                        continues, carried_on = last.continues or last.alert_id, last.route_escalation()
                        reason = f"continues alert {last.id} ({last.alert_id}) within the cooldown"
                    else:
                        status, reason = SUPPRESSED, f"cooldown after alert {last.id} ({last.alert_id})"
        # A route that escalated the alert this one continues goes on from its step there; any other starts now.
        steps = {route.id: carried_on.get(route.id, (0, now)) for route in routes}
        alert = self.store.create_alert(AlertRow(
            alert_id=alert_id, incident_id=notice.incident_id, severity=notice.severity.value,
            camera_id=notice.camera_id, zone_id=notice.zone_id, subject=subject_key(notice.subject),
            routes=[route.id for route in routes], status=status, reason=reason,
            title=notice.title, message=notice.message, created_at=now, continues=continues,
            next_escalation_at=next_escalation(routes, steps) if status == NOTIFYING else None,
            **escalation_columns(steps),
        ))
        ALERTS.labels(alert.severity, alert.status).inc()
        log.info("alert %s (%s): %s%s", alert.id, alert.alert_id, alert.status, f", {reason}" if reason else "")
        return alert

    def ended(self, alert: AlertRow) -> bool:
        """Whether the incident opening the alert was about has ended (resolved, or opened again since)."""
        episode = self.store.open_episode(alert.incident_id)
        return episode is None or alert_key(alert.incident_id, Severity(alert.severity), episode) != alert.alert_id

    # -- deliveries -----------------------------------------------------------------------------------------------

    def alert_routes(self, alert: AlertRow) -> list[RouteConfig]:
        return [self.routes[route_id] for route_id in alert.routes if route_id in self.routes]

    def notify(self, alert: AlertRow) -> None:
        """Records a delivery to the broadcast channels once, then to every contact up to the current escalation step
        (each idempotent), and hands their tries to self.tries.

        A contact's next channel is recorded only when the one before has failed for good, not while it is retrying:
        the try that fails it for good notifies again.
        """
        message = to_message(alert)
        steps = alert.route_escalation()
        for route in self.alert_routes(alert):
            for channel_id in route.broadcast:
                self.deliver(alert, message, channel_id, None)
            step, _ = steps[route.id]
            for contact_id in route.escalation[:step + 1]:
                contact = self.contacts.get(contact_id)
                for channel_id in route.channels:
                    if contact is not None and self.deliver(alert, message, channel_id, contact) != FAILED:
                        break  # the next channel is only a fallback

    def deliver(self, alert: AlertRow, alert_message: Alert, channel_id: str, contact: ContactConfig | None) -> str:
        """The delivery's status once recorded; a new one, or one left behind, `sending` with its try handed on."""
        channel = self.channels[channel_id]
        key = f"{alert.continues or alert.alert_id}|{channel_id}|{contact.id if contact else '*'}"
        message = Message(alert_message, alert.id, self.site, contact, key)
        unreachable = channel.accepts(contact)
        body = channel.render(message) if unreachable is None else ""
        row, created = self.store.begin_delivery(key, alert.id, channel_id, contact.id if contact else None, body,
                                                 self.clock(), self.claim_watch.mark())
        if not created:
            if row.status == SENDING and self.left_behind(row):
                self.start(row, self.resume)
            return row.status
        if unreachable is not None:  # failed for the fallback, but no provider failed: counted apart from those
            return self.finish(row, FAILED, None, unreachable, counted_as=UNREACHABLE)
        self.start(row, self.attempt)
        return SENDING

    def start(self, seen: DeliveryRow, step: Callable[[DeliveryRow, Channel, Message], str]) -> None:
        """Hands a recorded delivery's next step (a try, a resume, a retry) to the delivery threads."""
        self.tries.submit(seen, lambda: self.carry_on(seen, step))

    def ask_provider(self, row: DeliveryRow, channel: Channel, message: Message) -> str | None:
        """channel.reconcile for the delivery's latest try; an error the channel did not foresee (a listing the
        client library cannot read) is an answer that cannot be read, as its own are (ReconcileError)."""
        sent_since = self.store.last_try_at(row.id)
        try:
            return channel.reconcile(message, row.body, sent_since, self.clock())
        except ReconcileError:
            raise
        except Exception as exc:
            raise ReconcileError(f"cannot ask the provider: {describe_error(exc)}") from exc

    def resume(self, row: DeliveryRow, channel: Channel, message: Message) -> str:
        """A delivery left `sending` by a crash: ask the provider before sending again. One whose first try never began
        (a try is counted, and committed, before its request goes out) cannot have gone out: it is sent at once, not
        held for the listing's lag."""
        if row.attempt_count == 0:
            return self.attempt(row, channel, message)
        try:
            provider_id = self.ask_provider(row, channel, message)
        except ListingLag as lag:
            log.warning("delivery %s stays pending: %s", row.key, lag)
            return SENDING
        except ReconcileError as exc:
            # The provider cannot say whether the try went out: it counts as a failed try, and the next one asks
            # again before sending, as after any ambiguous try.
            if row.attempt_count >= channel.retry.max_attempts:
                return self.fail(row, str(exc))
            log.warning("delivery %s: %s; asking again after the back-off", row.key, exc)
            return self.retry_later(row, channel, max(row.attempt_count, 1), reconcile_first=True)
        if provider_id is not None:
            self.store.record_attempt(row.id, "reconciled", None, None, self.clock())
            log.info("delivery %s had gone out before the restart (%s)", row.key, provider_id)
            return self.finish(row, SENT, provider_id, None)
        return self.attempt(row, channel, message)

    def attempt(self, row: DeliveryRow, channel: Channel, message: Message) -> str:
        """One try, under the claim `row` was read with; a retryable failure is scheduled for `retry_due` instead of
        waited for here."""
        now = self.clock()
        mark = self.claim_watch.mark()
        started = self.store.start_attempt(row, now, mark)
        if started is None:
            # Another dispatcher claimed the delivery since this one did (this one asked the provider for longer
            # than longest_try_s): the try is that dispatcher's, and a second one would send the message twice.
            log.debug("delivery %s: taken over by another dispatcher, which makes the try", row.key)
            return SENDING
        self.claim_watch.know(started)
        number = started.attempt_count
        try:
            result = channel.send(message, row.body)
        except Exception as exc:
            # A failure the channel did not foresee (a reply the client library cannot read): a failed try like any
            # other, or the delivery would stay `sending`, tried again without end, and the contact's next channel
            # never tried. It may have come after the request went out: the next try asks the provider first.
            result = Attempt(False, retryable=True, ambiguous=True, error=describe_error(exc))
        if result.delivered:
            self.store.record_attempt(row.id, SENT, result.status_code, None, self.clock())
            return self.finish(row, SENT, result.provider_id, None)
        final = not result.retryable or number >= channel.retry.max_attempts
        self.store.record_attempt(row.id, FAILED if final else "retry", result.status_code, result.error,
                                  self.clock())
        if final:
            return self.fail(row, result.error)
        return self.retry_later(row, channel, number, result.ambiguous, result.retry_after_s)

    def retry_later(self, row: DeliveryRow, channel: Channel, tries: int, reconcile_first: bool,
                    asked_wait_s: float | None = None) -> str:
        """Schedules the next try after the back-off, or after the wait the receiver asked for (Retry-After) when
        that is longer, up to RETRY_AFTER_MAX_S."""
        RETRIES.labels(channel.id).inc()
        delay = backoff_delay(tries, channel.retry.backoff_initial_s, channel.retry.backoff_max_s)
        if asked_wait_s is not None:
            delay = max(delay, min(asked_wait_s, RETRY_AFTER_MAX_S))
        self.store.schedule_retry(row.id, self.clock() + delay, reconcile_first)
        return RETRYING

    def retry(self, row: DeliveryRow, channel: Channel, message: Message) -> str:
        """The next try of a `retrying` delivery; after an ambiguous try, ask the provider before sending again."""
        if row.reconcile_first:
            try:
                provider_id = self.ask_provider(row, channel, message)
            except ListingLag as lag:
                self.store.schedule_retry(row.id, lag.ask_again_at, reconcile_first=True)
                return RETRYING
            except ReconcileError as exc:
                log.warning("delivery %s: %s; sending again", row.key, exc)
                provider_id = None
            if provider_id is not None:
                self.store.record_attempt(row.id, "reconciled", None, None, self.clock())
                return self.finish(row, SENT, provider_id, None)
        return self.attempt(row, channel, message)

    def fail(self, row: DeliveryRow, error: str) -> str:
        log.warning("delivery %s failed: %s", row.key, error)
        return self.finish(row, FAILED, None, error)

    def finish(self, row: DeliveryRow, status: str, provider_id: str | None, error: str | None,
               counted_as: str | None = None) -> str:
        self.store.finish_delivery(row.id, status, provider_id, error, self.clock())
        DELIVERIES.labels(row.channel_id, counted_as or status).inc()
        return status

    # -- periodic work --------------------------------------------------------------------------------------------

    def unreachable(self, row: DeliveryRow) -> str | None:
        """Why a delivery recorded earlier cannot be made with the configuration of now, or None."""
        channel = self.channels.get(row.channel_id)
        if channel is None:
            return f"channel {row.channel_id} is no longer configured"
        if row.contact_id is not None and row.contact_id not in self.contacts:
            return f"contact {row.contact_id} is no longer configured"
        return channel.accepts(self.contacts.get(row.contact_id))

    def claim(self, seen: DeliveryRow) -> DeliveryRow | None:
        """Takes the delivery, as it was read when its step was handed on, for this process's step; None when another
        dispatcher took it since (a `sending` one whose try was queued past longest_try_s may have been resumed)."""
        now, mark = self.clock(), self.claim_watch.mark()
        if seen.status == RETRYING:
            claimed = self.store.claim_retry(seen.id, now, mark)
        else:
            claimed = self.store.claim_sending(seen, now, mark)
        if claimed is not None:
            self.claim_watch.know(claimed)
        return claimed

    def carry_on(self, seen: DeliveryRow, step: Callable[[DeliveryRow, Channel, Message], str]) -> None:
        """Claims a recorded delivery and takes it one step on (try, resume or retry); one that fails for good moves
        its contact to the next channel."""
        row = self.claim(seen)
        if row is None:
            return
        alert = self.store.alert_by_ref(row.alert_ref)
        reason = self.unreachable(row)
        if reason is not None:
            status = self.fail(row, reason)
        else:
            contact = self.contacts.get(row.contact_id)
            status = step(row, self.channels[row.channel_id],
                          Message(to_message(alert), alert.id, self.site, contact, row.key))
        if status == FAILED:
            self.notify(alert)

    def left_behind(self, row: DeliveryRow) -> bool:
        """Whether no dispatcher can still be working on a `sending` delivery: this one has known its latest claim for
        longer than a try of its channel lasts. One whose channel is gone from the configuration cannot be made here:
        it is failed."""
        channel = self.channels.get(row.channel_id)
        return channel is None or self.claim_watch.claim_known_longer_than(row, longest_try_s(channel.retry))

    def resume_pending(self) -> None:
        """Deliveries left `sending` by a crash, or by a try that raised, each resumed by one dispatcher of those
        sharing the store."""
        pending = self.store.deliveries(status=SENDING)
        self.claim_watch.keep_only(pending)
        for row in pending:
            if self.left_behind(row):
                self.start(row, self.resume)

    def retry_due(self) -> None:
        """Retries whose back-off has passed, each made by one dispatcher of those sharing the store."""
        for row in self.store.due_retries(self.clock()):
            self.start(row, self.retry)

    def escalate_due(self) -> None:
        now = self.clock()
        for alert in self.store.due_escalations(now):
            with skipped_on_error(f"escalation of alert {alert.id}"):
                self.escalate(alert, now)

    def escalate(self, alert: AlertRow, now: float) -> None:
        """Moves each route whose contact has had its escalate_after_s on to its next contact, and pages them."""
        routes = self.alert_routes(alert)
        steps = alert.route_escalation()
        if self.store.open_episode(alert.incident_id) is None:
            self.store.set_escalation(alert.id, alert.next_escalation_at, steps, None)
            return
        escalated = []
        for route in routes:
            due_at = escalation_due_at(route, *steps[route.id])
            if due_at is not None and due_at <= now:
                steps[route.id] = (steps[route.id][0] + 1, now)
                escalated.append(route)
        if not self.store.set_escalation(alert.id, alert.next_escalation_at, steps, next_escalation(routes, steps)):
            return  # another dispatcher escalated it, or it was acknowledged meanwhile
        for route in escalated:
            ESCALATIONS.inc()
            log.info("alert %s not acknowledged: route %s escalating to step %d", alert.id, route.id,
                     steps[route.id][0])
        if escalated:
            self.notify(self.store.get_alert(alert.alert_id))

    def notify_unanswered(self) -> None:
        """Notifies every alert still waiting for an acknowledgement again, which records only the deliveries it
        lacks: a contact's fallback channel is recorded by the try that fails the channel before it for good, and an
        escalation's contacts after its step is stored; a crash between the two would leave the contact unreached."""
        for alert in self.store.unanswered_alerts():
            with skipped_on_error(f"alert {alert.alert_id}"):
                self.notify(alert)

    def tick(self) -> None:
        self.clock.keep()
        self.notify_unanswered()
        self.resume_pending()
        self.retry_due()
        self.escalate_due()
        for severity in Severity:
            UNACKNOWLEDGED.labels(severity.value).set(0)
        for severity, count in self.store.open_unacknowledged().items():
            UNACKNOWLEDGED.labels(severity).set(count)


def escalation_due_at(route: RouteConfig, step: int, reached_at: float) -> float | None:
    """When the route at `step` (reached at `reached_at`) moves on to its next contact; None when it has none left."""
    return reached_at + route.escalate_after_s if len(route.escalation) > step + 1 else None


def next_escalation(routes: list[RouteConfig], steps: dict[str, tuple[int, float]]) -> float | None:
    """When the first of the routes, each at its own step, moves on; None when none has a contact left."""
    return min((at for at in (escalation_due_at(route, *steps[route.id]) for route in routes) if at is not None),
               default=None)


def longest_try_s(retry: RetryConfig) -> float:
    """How long one try may hold its delivery `sending`: the wait for its answer, and what goes around it."""
    return retry.timeout_s + TRY_OVERHEAD_S


@contextmanager
def skipped_on_error(what: str) -> Iterator[None]:
    """Logs and skips one piece of periodic work that fails: the others still go out, and the process does not die
    on it, which it would again on every start."""
    try:
        yield
    except Exception as exc:
        # Redacted: exception texts can quote URLs with credentials; the traceback only at debug level.
        log.error("%s skipped: %s", what, describe_error(exc))
        log.debug("%s skipped", what, exc_info=True)


def to_message(alert: AlertRow) -> Alert:
    # Alertmanager (SRE) alerts may have no camera; schemas.Alert requires one, so they carry an empty id.
    return Alert(alert_id=alert.alert_id, event_id=alert.incident_id, severity=Severity(alert.severity),
                 camera_id=alert.camera_id, zone_id=alert.zone_id, title=alert.title,
                 message=alert.message, created_at=alert.created_at)

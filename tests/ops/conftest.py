"""The dispatcher's surroundings for the ops tests: a fake Twilio and webhook on loopback, and a dispatcher on a fresh
SQLite store routing to them."""
import ssl
import subprocess

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
def https_webhook(tmp_path_factory, monkeypatch):
    """A fake webhook served over https, with a certificate for 127.0.0.1 that requests trusts (REQUESTS_CA_BUNDLE)."""
    folder = tmp_path_factory.mktemp("tls")
    certificate, key = folder / "certificate.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(certificate)],
                   check=True, capture_output=True, timeout=60)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    fake = FakeWebhook()
    server = fake.serve()
    server.server.socket = context.wrap_socket(server.server.socket, server_side=True)
    with server:
        fake.url = f"https://127.0.0.1:{server.server.server_port}/hook"
        yield fake


@pytest.fixture
def harness(tmp_path, twilio, webhook):
    config = make_config(tmp_path, alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db"))
    built = make_dispatcher(config)
    yield built
    built.store.close()

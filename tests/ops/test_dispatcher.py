"""The dispatcher against a local fake Twilio and webhook, with a real SQLite incident store."""
import logging
import signal
import subprocess
import sys
import threading
import time
from email.utils import formatdate
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from infra.backoff import backoff_delay
from infra.broker import free_port
from schemas import EventState, Severity
from schemas.base import ID_MAX_CHARS
from schemas.event import CLOSED_BY_RESET
from schemas.settings.base import ConfigError
from sinks.alerts import channels
from sinks.alerts.channels import RateLimiter, delivery_tag
from sinks.alerts.dispatcher import DeliveryTries
from sinks.alerts.notice import notice_from_event, notices_from_alertmanager
from sinks.alerts.redact import describe_error, redact
from sinks.alerts.sms_text import count_segments
from sinks.alerts.store import FAILED, NOTIFYING, RETRYING, SENDING, SENT, SUPPRESSED, AlertRow, DeliveryRow
from sinks.alerts.store import subject_key as cooldown_key
from tests.ops.fakes import Scripted
from tests.ops.helpers import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    CHIEF_PHONE,
    DUTY_PHONE,
    FROM_NUMBER,
    OPS1_PHONE,
    OPS2_PHONE,
    alerting_section,
    danger_event,
    left_sending_by_a_crash,
    make_config,
    make_dispatcher,
)
from tests.ops.stack import REPO, wait_until


def test_one_sms_per_incident_and_recipient_even_when_the_event_is_redelivered(harness, twilio):
    event = notice_from_event(danger_event())
    for _ in range(3):
        harness.dispatcher.publish_once(harness.dispatcher.handle(event))
    assert len(twilio.messages) == 1
    message = twilio.messages[0]
    assert (message["to"], message["from"]) == (DUTY_PHONE, FROM_NUMBER)
    assert "위험" in message["body"] and "cityguard alerts ack 1" in message["body"]
    assert "density_per_m2" not in message["body"]  # the event's details are for programs, not the operator
    assert count_segments(message["body"]) <= 2
    assert [alert.alert_id for alert in harness.published] == ["plaza/north/risk-1:critical"]
    detail = harness.store.incident_detail("plaza/north/risk-1")
    assert len(detail.events) == 1  # the redeliveries were recognised
    assert [(d.channel_id, d.contact_id, d.status) for d in detail.deliveries] == [("sms", "duty", SENT)]
    assert detail.deliveries[0].provider_id == message["sid"]


def test_a_twilio_429_is_retried_with_backoff_scheduled_in_the_store(harness, twilio):
    twilio.script = [Scripted(429, 20429, "Too Many Requests"), Scripted(503, 20503, "Service unavailable")]
    harness.dispatcher.handle(notice_from_event(danger_event()))
    [delivery] = harness.store.deliveries()
    assert (delivery.status, delivery.next_attempt_at - harness.clock()) == (RETRYING, pytest.approx(0.01))
    harness.dispatcher.tick()
    assert twilio.posts() == 1  # not due yet
    harness.retry_after(0.01)
    [delivery] = harness.store.deliveries()
    assert (delivery.status, delivery.next_attempt_at - harness.clock()) == (RETRYING, pytest.approx(0.02))  # doubled
    harness.retry_after(0.02)
    assert len(twilio.messages) == 1
    attempts = harness.store.incident_detail("plaza/north/risk-1").attempts
    assert [(a.outcome, a.status_code) for a in attempts] == [("retry", 429), ("retry", 503), (SENT, 201)]
    assert [d.status for d in harness.store.deliveries()] == [SENT]


def test_a_twilio_outage_for_one_alert_holds_up_no_other_alert(harness, twilio, webhook):
    twilio.script = [Scripted(503, 20503, "Service unavailable")]
    harness.dispatcher.handle(notice_from_event(danger_event("plaza/north/risk-1")))
    harness.dispatcher.handle(notice_from_event(danger_event("plaza/south/risk-2", zone="south")))
    assert "plaza/south" in twilio.messages[0]["body"]  # went out while the first one waits for its retry
    assert webhook.received == []  # the fallback channel waits until the SMS has failed for good
    harness.retry_after(0.01)
    assert ["plaza/south" in m["body"] for m in twilio.messages] == [True, False]
    assert [d.status for d in harness.store.deliveries()] == [SENT, SENT]


def test_an_sms_failing_every_try_falls_back_to_the_next_channel(harness, twilio, webhook):
    twilio.script = [Scripted(503, 20503, "Service unavailable")] * 3  # max_attempts is 3
    harness.dispatcher.handle(notice_from_event(danger_event()))
    harness.retry_after(0.01)
    assert webhook.received == []
    harness.retry_after(0.02)
    deliveries = harness.store.incident_detail("plaza/north/risk-1").deliveries
    assert [(d.channel_id, d.status) for d in deliveries] == [("sms", FAILED), ("ops", SENT)]
    assert twilio.messages == [] and len(webhook.received) == 1


def test_a_fallback_that_a_crash_kept_from_being_recorded_is_sent_on_the_next_tick(harness, twilio, webhook):
    twilio.script = [Scripted(503, 20503, "Service unavailable")]
    harness.dispatcher.handle(notice_from_event(danger_event()))
    [sms] = harness.store.deliveries()
    # The last try failed for good and the process ended before it recorded the next channel.
    harness.store.finish_delivery(sms.id, FAILED, None, "503", harness.clock())
    harness.dispatcher.tick()
    deliveries = harness.store.incident_detail("plaza/north/risk-1").deliveries
    assert [(d.channel_id, d.status) for d in deliveries] == [("sms", FAILED), ("ops", SENT)]
    harness.dispatcher.tick()
    assert len(webhook.received) == 1 and twilio.posts() == 1  # nothing is sent twice


def test_twilio_problem_details_errors_and_unreadable_replies_are_failed_attempts(harness, twilio):
    twilio.script = [Scripted(503, 20503, "Service Unavailable", style="problem"),
                     Scripted(200, 0, "Proxy login required", style="html")]
    harness.dispatcher.handle(notice_from_event(danger_event()))  # must not raise
    harness.retry_after(0.01)
    harness.retry_after(0.02)
    # The unreadable reply may hide a created message that Twilio does not list yet: no second POST meanwhile.
    assert twilio.posts() == 2 and [d.status for d in harness.store.deliveries()][0] == RETRYING
    harness.retry_after(30)  # the channel's listing_lag_s
    detail = harness.store.incident_detail("plaza/north/risk-1")
    assert [(a.outcome, a.status_code) for a in detail.attempts] == [("retry", 503), ("retry", None), (SENT, 201)]
    assert "20503" in detail.attempts[0].error and "Service Unavailable" in detail.attempts[0].error
    assert detail.attempts[1].error.startswith("JSONDecodeError")
    assert ("GET", 200) in twilio.requests  # the unreadable reply may hide a created message: reconciled first
    assert len(twilio.messages) == 1 and detail.deliveries[0].status == SENT


def test_delivery_errors_are_stored_and_logged_without_urls_or_the_account_sid(tmp_path, harness, twilio, webhook,
                                                                                   caplog):
    section = alerting_section(f"http://127.0.0.1:{free_port()}", webhook.url, f"sqlite:///{tmp_path}/refused.db")
    section["channels"][0]["retry"] = {"max_attempts": 1}  # nothing listens on the port: refused at once
    unreachable = make_dispatcher(make_config(tmp_path, section))
    twilio.script = [Scripted(400, 21211, "Invalid 'To'", style="problem")]  # its detail quotes the request path
    with caplog.at_level(logging.DEBUG):
        unreachable.dispatcher.handle(notice_from_event(danger_event()))
        harness.dispatcher.handle(notice_from_event(danger_event()))
    [refused] = [d for d in unreachable.store.deliveries() if d.channel_id == "sms"]
    [invalid] = [d for d in harness.store.deliveries() if d.channel_id == "sms"]
    assert refused.status == FAILED and refused.error.startswith("ConnectionError: ")
    assert invalid.status == FAILED and "21211" in invalid.error and "Invalid 'To'" in invalid.error
    assert "<path>" in refused.error and "<path>" in invalid.error
    attempts = [a.error for built in (unreachable, harness)
                for a in built.store.incident_detail("plaza/north/risk-1").attempts if a.error]
    assert len(attempts) == 2
    for text in [refused.error, invalid.error, *attempts, caplog.text]:
        assert ACCOUNT_SID not in text and "/Accounts/" not in text and AUTH_TOKEN not in text
    unreachable.store.close()


def test_redact_keeps_the_error_and_drops_urls_credentials_and_account_sids():
    text = (f"Max retries exceeded with url: /2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json (proxy "
            f"http://ops:hunter2@proxy.example:3128, account {ACCOUNT_SID}, relay ops:hunter2@relay) 5.6 p/m²")
    assert redact(text) == ("Max retries exceeded with url: <path> (proxy <url>, account <account-sid>, relay "
                            "<credentials>@relay) 5.6 p/m²")
    assert describe_error(ConnectionError("refused")) == "ConnectionError: refused"


def test_an_sms_whose_replies_the_twilio_library_cannot_read_fails_after_its_tries_and_falls_back(harness, twilio,
                                                                                                 webhook):
    twilio.script = [Scripted(201, 0, "[]", style="json")] * 3  # max_attempts is 3; no message is created
    harness.dispatcher.handle(notice_from_event(danger_event()))
    for _ in range(2):
        harness.retry_after(30)  # the back-off, and the listing_lag_s for the message such a reply may hide
    detail = harness.store.incident_detail("plaza/north/risk-1")
    assert [(d.channel_id, d.status, d.attempt_count) for d in detail.deliveries] == [("sms", FAILED, 3),
                                                                                      ("ops", SENT, 1)]
    sms_attempts = [a for a in detail.attempts if a.delivery_id == detail.deliveries[0].id]
    assert [a.outcome for a in sms_attempts] == ["retry", "retry", FAILED]
    assert all(a.error.startswith("AttributeError: ") for a in sms_attempts)
    assert ("GET", 200) in twilio.requests  # each retry asked Twilio first
    assert twilio.messages == [] and len(webhook.received) == 1


def webhook_broadcast(tmp_path, twilio, url: str, monkeypatch) -> DeliveryRow:
    """The delivery of one alert broadcast to the webhook at `url`, with OPS_TOKEN as its bearer token."""
    monkeypatch.setenv("OPS_TOKEN", "s3cret-token")
    section = alerting_section(twilio.url, url, f"sqlite:///{tmp_path}/incidents.db")
    section["channels"][1]["bearer_token_env"] = "OPS_TOKEN"
    section["routes"][0].update(channels=["sms"], broadcast=["ops"])
    harness = make_dispatcher(make_config(tmp_path, section))
    harness.dispatcher.handle(notice_from_event(danger_event()))
    [ops] = [d for d in harness.store.deliveries() if d.channel_id == "ops"]
    harness.store.close()
    return ops


@pytest.mark.parametrize("status", [307, 308])
def test_a_webhook_redirect_that_keeps_the_post_is_followed_on_its_host_with_the_alert_and_its_headers(
        tmp_path, twilio, webhook, monkeypatch, status):
    webhook.script = [(status, {"Location": "/v2/hook"}), (status, {"Location": "/v3/hook?token=x"})]
    ops = webhook_broadcast(tmp_path, twilio, webhook.url, monkeypatch)
    assert (ops.status, ops.attempt_count) == (SENT, 1) and webhook.paths == ["/v3/hook?token=x"]
    assert [alert["alert_id"] for alert in webhook.received] == ["plaza/north/risk-1:critical"]
    assert webhook.headers[0]["Authorization"] == "Bearer s3cret-token"
    assert webhook.headers[0]["Idempotency-Key"] == ops.key and webhook.gets == []


def test_an_http_webhook_moved_to_https_on_its_host_is_followed_and_never_back(tmp_path, twilio, webhook,
                                                                               https_webhook, monkeypatch):
    webhook.script = [(308, {"Location": https_webhook.url.replace("/hook", "/v2/hook")})]
    ops = webhook_broadcast(tmp_path, twilio, webhook.url, monkeypatch)
    assert ops.status == SENT and https_webhook.paths == ["/v2/hook"] and webhook.received == []
    assert https_webhook.headers[0]["Authorization"] == "Bearer s3cret-token"
    https_webhook.script = [(307, {"Location": webhook.url})]
    (tmp_path / "downgraded").mkdir()
    ops = webhook_broadcast(tmp_path / "downgraded", twilio, https_webhook.url, monkeypatch)
    port = webhook.url.split(":")[2].split("/")[0]
    assert ops.status == FAILED and webhook.received == [] and ops.error.startswith(
        f"HTTP 307: redirected to http://127.0.0.1:{port}/<path>, which is not followed")


def test_a_webhook_redirected_more_times_than_are_followed_fails_naming_the_last_host(tmp_path, twilio, webhook,
                                                                                    monkeypatch):
    webhook.script = [(307, {"Location": f"/v{version}/hook"}) for version in range(2, 2 + 4)]
    ops = webhook_broadcast(tmp_path, twilio, webhook.url, monkeypatch)
    port = webhook.url.split(":")[2].split("/")[0]
    assert (ops.status, ops.attempt_count) == (FAILED, 1) and webhook.received == [] and webhook.script == []
    assert ops.error == (f"HTTP 307: redirected to http://127.0.0.1:{port}/<path> after 3 redirects, as many as are "
                         "followed: give the channel the URL the webhook has now")


def test_an_sms_reply_the_twilio_library_cannot_read_is_reconciled_not_sent_again(harness, twilio):
    twilio.script = [Scripted(201, 0, "null", style="json", after_create=True)]
    harness.dispatcher.handle(notice_from_event(danger_event()))
    harness.retry_after(30)  # the channel's listing_lag_s
    assert len(twilio.messages) == 1 and twilio.posts() == 1
    assert [(d.status, d.provider_id) for d in harness.store.deliveries()] == [(SENT, twilio.messages[0]["sid"])]


@pytest.mark.parametrize("status, location, says", [
    (301, "/v2/hook", "http://127.0.0.1:{port}/<path>"),  # moved on the same host: requests would GET it
    (302, "https://bob:hunter2@hooks.example.com/T0123/s3cretpath?token=x", "https://hooks.example.com/<path>"),
    (303, "/v2/hook", "http://127.0.0.1:{port}/<path>"),
    (307, "http://localhost:{port}/v2/hook", "http://localhost:{port}/<path>"),  # another host: no bearer token there
    (307, "http://127.0.0.1:{other}/v2/hook", "http://127.0.0.1:{other}/<path>"),  # another port: maybe another service
    (308, "ftp://127.0.0.1/hook", "ftp://127.0.0.1/<path>"),
    (300, None, "no Location"),
])
def test_a_webhook_that_redirects_is_not_followed_and_fails_naming_only_the_new_host(tmp_path, twilio, webhook,
                                                                                       status, location, says):
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    section["routes"][0].update(channels=["sms"], broadcast=["ops"])
    harness = make_dispatcher(make_config(tmp_path, section))
    port = webhook.url.split(":")[2].split("/")[0]
    other = int(port) + 1
    webhook.script = [(status, {"Location": location.format(port=port, other=other)} if location else {})]
    harness.dispatcher.handle(notice_from_event(danger_event()))
    [ops] = [d for d in harness.store.deliveries() if d.channel_id == "ops"]
    assert (ops.status, ops.attempt_count) == (FAILED, 1)  # a redirect is not retried
    assert ops.error == (f"HTTP {status}: redirected to {says.format(port=port, other=other)}, which is not followed: "
                         "give the channel the URL the webhook has now")
    assert webhook.gets == [] and webhook.received == [] and len(webhook.script) == 0
    harness.store.close()


@pytest.mark.parametrize("size, piece, pause_s", [
    (32 * 1_048_576, 65_536, 0.0),  # far more than an error's text, at once
    (400, 1, 0.05),  # a byte at a time, for longer than the try's timeout_s
])
def test_a_webhook_answer_is_read_no_further_than_its_start_and_the_try_ends(tmp_path, twilio, webhook, size, piece,
                                                                              pause_s):
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    section["channels"][1]["retry"] = {"max_attempts": 3, "backoff_initial_s": 0.01, "backoff_max_s": 0.05,
                                       "timeout_s": 1}
    section["routes"][0].update(channels=["sms"], broadcast=["ops"])
    harness = make_dispatcher(make_config(tmp_path, section))
    webhook.script = [503]
    webhook.answer_size, webhook.answer_piece, webhook.answer_pause_s = size, piece, pause_s
    harness.dispatcher.handle(notice_from_event(danger_event()))
    [ops] = [d for d in harness.store.deliveries() if d.channel_id == "ops"]
    assert ops.status == RETRYING  # the try ended with the answer's status, its body let go
    assert webhook.answered.wait(30) and webhook.answers_cut_off == 1
    [attempt] = [a for a in harness.store.incident_detail("plaza/north/risk-1").attempts if a.delivery_id == ops.id]
    assert attempt.error.startswith("HTTP 503: o") and len(attempt.error) <= len("HTTP 503: ") + 200
    harness.store.close()


@pytest.mark.parametrize("fingerprint", [None, "지문-1"], ids=["labels", "fingerprint"])
def test_an_alertmanager_alert_named_beyond_ascii_reaches_the_webhook_under_a_key_a_header_carries(tmp_path, twilio,
                                                                                                  webhook, fingerprint):
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    section["routes"][0].update(channels=["sms"], broadcast=["ops"])
    harness = make_dispatcher(make_config(tmp_path, section))
    alert = {"status": "firing", "startsAt": "2027-01-15T10:00:00Z",
             "labels": {"alertname": "CityguardZoneStale", "severity": "critical", "zone": "강남역 2번 출구"}}
    [notice] = notices_from_alertmanager({"version": "4", "alerts": [{**alert, "fingerprint": fingerprint}]})
    harness.dispatcher.handle(notice)
    [ops] = [d for d in harness.store.deliveries() if d.channel_id == "ops"]
    assert (ops.status, ops.attempt_count) == (SENT, 1)
    assert webhook.headers[0]["Idempotency-Key"] == ops.key and ops.key.isascii()
    assert [received["zone_id"] for received in webhook.received] == ["강남역 2번 출구"]
    harness.store.close()


def test_the_widest_alertmanager_subject_fits_the_column_it_is_stored_in():
    """Name, camera and zone labels as long as they may be, in Korean: the cooldown's key fits alerts.subject, which a
    database enforcing column widths would otherwise refuse, leaving the alert to page nobody."""
    label = "강" * ID_MAX_CHARS
    alert = {"status": "firing", "startsAt": "2027-01-15T10:00:00Z",
             "labels": {"alertname": label, "severity": "critical", "camera": label, "zone": label}}
    [notice] = notices_from_alertmanager({"version": "4", "alerts": [alert]})
    assert len(cooldown_key(notice.subject)) <= AlertRow.__table__.c.subject.type.length


def test_a_webhook_asking_to_wait_is_retried_after_the_wait_it_asked_for_up_to_ten_minutes(tmp_path, twilio,
                                                                                            webhook):
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    section["channels"][1]["retry"] = {"max_attempts": 5, "backoff_initial_s": 1, "backoff_max_s": 30}
    section["routes"][0].update(channels=["sms"], broadcast=["ops"])
    harness = make_dispatcher(make_config(tmp_path, section))
    # An HTTP date counts from the answer's own Date (the server's clock, to the second), not from ours.
    webhook.script = [(429, {"Retry-After": "120"}), (503, {"Retry-After": formatdate(time.time() + 300, usegmt=True)}),
                      (429, {"Retry-After": "86400"}), (429, {"Retry-After": "soon"})]

    def ops() -> DeliveryRow:
        return next(d for d in harness.store.deliveries() if d.channel_id == "ops")

    harness.dispatcher.handle(notice_from_event(danger_event()))
    assert ops().next_attempt_at - harness.clock() == 120
    harness.retry_after(119)
    assert len(webhook.script) == 3  # not tried again before the wait is over
    harness.retry_after(1)
    assert ops().next_attempt_at - harness.clock() == pytest.approx(300, abs=1)
    harness.retry_after(301)
    assert ops().next_attempt_at - harness.clock() == 600  # a day asked for: ten minutes at most
    harness.retry_after(600)
    assert ops().next_attempt_at - harness.clock() == 8  # nothing readable asked for: the back-off of a 4th try
    harness.retry_after(8)
    assert (ops().status, ops().attempt_count) == (SENT, 5)  # every wait spent a try
    harness.store.close()


def test_a_twilio_400_fails_the_delivery_with_the_error_and_the_next_channel_is_tried(harness, twilio, webhook):
    twilio.script = [Scripted(400, 21211, "The 'To' number is not a valid phone number.")]
    harness.dispatcher.handle(notice_from_event(danger_event()))
    assert twilio.messages == [] and twilio.posts() == 1  # a 400 is not retried
    deliveries = harness.store.incident_detail("plaza/north/risk-1").deliveries
    assert [(d.channel_id, d.status) for d in deliveries] == [("sms", FAILED), ("ops", SENT)]
    assert "21211" in deliveries[0].error and "not a valid phone number" in deliveries[0].error
    assert len(webhook.received) == 1
    assert webhook.received[0]["alert_id"] == "plaza/north/risk-1:critical"
    assert webhook.received[0]["contact"]["id"] == "duty"
    assert webhook.headers[0]["Idempotency-Key"] == "plaza/north/risk-1:critical|ops|duty"


def test_a_send_that_reached_twilio_before_the_reply_was_lost_is_not_repeated(tmp_path, twilio, webhook):
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    section["channels"][0]["retry"] = {"max_attempts": 3, "backoff_initial_s": 0.01, "timeout_s": 0.3}
    harness = make_dispatcher(make_config(tmp_path, section))
    twilio.hold_after_create = threading.Event()  # Twilio creates the message, the reply never comes in time
    try:
        harness.dispatcher.handle(notice_from_event(danger_event()))
        harness.retry_after(0.01)
    finally:
        twilio.hold_after_create.set()
    assert len(twilio.messages) == 1 and twilio.posts() <= 1
    deliveries = harness.store.incident_detail("plaza/north/risk-1").deliveries
    assert [(d.status, d.provider_id) for d in deliveries] == [(SENT, twilio.messages[0]["sid"])]
    harness.store.close()


def test_a_gateway_timeout_after_twilio_created_the_message_is_reconciled_not_sent_again(harness, twilio):
    twilio.script = [Scripted(504, 0, "Gateway Timeout", style="html", after_create=True)]
    harness.dispatcher.handle(notice_from_event(danger_event()))
    harness.clock.now += 30  # the channel's listing_lag_s; the listing shows the message
    harness.retry_after(0.01)
    assert len(twilio.messages) == 1 and twilio.posts() == 1
    deliveries = harness.store.incident_detail("plaza/north/risk-1").deliveries
    assert [(d.status, d.provider_id) for d in deliveries] == [(SENT, twilio.messages[0]["sid"])]


def test_a_delivery_left_sending_by_a_crash_before_its_first_try_is_sent_once_no_try_can_be_under_way(harness,
                                                                                                      twilio):
    notice, _, body = left_sending_by_a_crash(harness)
    harness.dispatcher.resume_pending()
    assert twilio.messages == []  # another dispatcher's first try may still be under way
    harness.let_every_try_end()
    harness.dispatcher.resume_pending()  # no try began, so none can have gone out: no wait for the listing's lag
    assert [m["body"] for m in twilio.messages] == [body]
    assert ("GET", 200) not in twilio.requests
    harness.dispatcher.resume_pending()
    harness.dispatcher.handle(notice)  # and the redelivered event afterwards
    assert [m["body"] for m in twilio.messages] == [body]
    assert [d.status for d in harness.store.deliveries()] == [SENT]


def test_a_delivery_left_sending_by_a_crash_during_its_try_waits_for_the_listing_before_sending_again(harness,
                                                                                                     twilio):
    _, _, body = left_sending_by_a_crash(harness)
    [row] = harness.store.deliveries()
    # The try began; its request may or may not have gone.
    harness.store.start_attempt(row, harness.clock(), harness.dispatcher.claim_watch.mark())
    harness.let_every_try_end()
    harness.dispatcher.resume_pending()
    assert twilio.messages == []  # not listed, but the listing may lag: wait rather than risk a second SMS
    harness.clock.now += 30  # the channel's listing_lag_s
    harness.let_every_try_end()  # and the claim of that look
    harness.dispatcher.resume_pending()
    assert [m["body"] for m in twilio.messages] == [body]
    assert [d.status for d in harness.store.deliveries()] == [SENT]


def crashed_after_twilio_took_it_then_paged(harness, others: int) -> DeliveryRow:
    """A try that Twilio took before the process died, then `others` SMS to the same person (a page storm): the
    delivery left `sending`, as read before it is resumed."""
    _, message, body = left_sending_by_a_crash(harness)
    [row] = harness.store.deliveries()
    harness.store.start_attempt(row, harness.clock(), harness.dispatcher.claim_watch.mark())
    assert harness.dispatcher.channels["sms"].send(message, body).delivered
    for number in range(others):
        harness.dispatcher.handle(notice_from_event(danger_event(f"plaza/z{number}/risk-1", zone=f"z{number}")))
    harness.clock.now += 30  # the channel's listing_lag_s
    harness.let_every_try_end()
    return harness.store.deliveries()[0]


def test_a_send_found_behind_more_than_a_page_of_other_messages_is_not_repeated(harness, twilio):
    row = crashed_after_twilio_took_it_then_paged(harness, 55)
    harness.dispatcher.resume_pending()
    assert [m for m in twilio.messages if delivery_tag(row.key) in m["body"]] == [twilio.messages[0]]
    assert (harness.store.deliveries()[0].status, harness.store.deliveries()[0].provider_id) == (
        SENT, twilio.messages[0]["sid"])


def test_a_listing_longer_than_can_be_read_is_asked_again_not_taken_for_not_sent(harness, twilio, monkeypatch):
    monkeypatch.setattr(channels, "LISTING_MAX_PAGES", 1)
    row = crashed_after_twilio_took_it_then_paged(harness, 55)
    harness.dispatcher.resume_pending()
    assert [m for m in twilio.messages if delivery_tag(row.key) in m["body"]] == [twilio.messages[0]]
    assert harness.store.deliveries()[0].status == RETRYING


def test_a_send_listed_late_and_with_twilios_trial_prefix_is_found_not_repeated(harness, twilio):
    twilio.listing_lag_s, twilio.body_prefix = 1.0, "Sent from your Twilio trial account - "
    notice, message, body = left_sending_by_a_crash(harness)
    assert delivery_tag(message.key) in body
    [row] = harness.store.deliveries()
    harness.store.start_attempt(row, harness.clock(), harness.dispatcher.claim_watch.mark())
    harness.dispatcher.channels["sms"].send(message, body)  # the try that went out before the crash
    harness.let_every_try_end()
    harness.dispatcher.resume_pending()  # Twilio does not list it yet
    assert twilio.posts() == 1 and [d.status for d in harness.store.deliveries()] == ["sending"]
    time.sleep(1.1)
    harness.let_every_try_end()  # and the claim of that look
    harness.dispatcher.resume_pending()
    harness.dispatcher.handle(notice)
    assert twilio.posts() == 1 and len(twilio.messages) == 1
    assert twilio.messages[0]["body"] == "Sent from your Twilio trial account - " + body
    assert [(d.status, d.provider_id) for d in harness.store.deliveries()] == [(SENT, twilio.messages[0]["sid"])]


def test_unacknowledged_alerts_escalate_to_the_next_contact_and_acks_stop_it(harness, twilio):
    dispatcher, clock = harness.dispatcher, harness.clock
    dispatcher.handle(notice_from_event(danger_event("plaza/north/risk-1")))
    dispatcher.handle(notice_from_event(danger_event("plaza/south/risk-2", zone="south")))
    assert [m["to"] for m in twilio.messages] == [DUTY_PHONE, DUTY_PHONE]
    harness.store.acknowledge("plaza/south/risk-2", "tester", "on my way", clock())
    clock.now += 30
    dispatcher.tick()
    assert len(twilio.messages) == 2  # not yet due
    clock.now += 31
    dispatcher.tick()
    dispatcher.tick()
    assert [m["to"] for m in twilio.messages] == [DUTY_PHONE, DUTY_PHONE, CHIEF_PHONE]
    assert "plaza/north" in twilio.messages[2]["body"]
    clock.now += 120
    dispatcher.tick()
    assert len(twilio.messages) == 3  # the escalation list is exhausted


def test_resolved_incidents_do_not_escalate(harness, twilio):
    harness.dispatcher.handle(notice_from_event(danger_event()))
    harness.dispatcher.handle(notice_from_event(danger_event(state=EventState.RESOLVED, at=1_800_000_010.0)))
    harness.clock.now += 600
    harness.dispatcher.tick()
    assert len(twilio.messages) == 1
    assert harness.store.list_incidents(only_open=True) == []


def test_cooldown_suppresses_a_flapping_subject_but_not_a_higher_severity(tmp_path, twilio, webhook):
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    section["routes"][0]["match"] = {}
    harness = make_dispatcher(make_config(tmp_path, section))
    dispatcher = harness.dispatcher
    dispatcher.handle(notice_from_event(danger_event("risk-1", severity=Severity.WARNING)))
    harness.clock.now += 60
    second = dispatcher.handle(notice_from_event(danger_event("risk-2", severity=Severity.WARNING,
                                                              at=harness.clock.now)))
    assert second.status == SUPPRESSED and "cooldown" in second.reason
    assert len(twilio.messages) == 1
    dispatcher.handle(notice_from_event(danger_event("risk-2", severity=Severity.CRITICAL, at=harness.clock.now + 1)))
    assert len(twilio.messages) == 2  # worse news goes out
    lower = dispatcher.handle(notice_from_event(danger_event("risk-2", severity=Severity.WARNING,
                                                             at=harness.clock.now + 2)))
    assert lower.status == SUPPRESSED
    harness.clock.now += 601
    dispatcher.handle(notice_from_event(danger_event("risk-3", severity=Severity.WARNING, at=harness.clock.now)))
    assert len(twilio.messages) == 3  # the cooldown is over
    harness.store.close()


@pytest.mark.parametrize(("closed_by", "continues"), [(CLOSED_BY_RESET, None), (None, "risk-1:critical")])
def test_an_incident_closed_by_an_analyzer_reset_holds_no_cooldown(tmp_path, twilio, webhook, closed_by, continues):
    """The crowd is still there when the reset analyzer opens a new episode: its alert goes out, where a real end
    followed by a new start within the cooldown is a flapping subject, whose alert continues the first one."""
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    section["routes"][0]["match"] = {}
    harness = make_dispatcher(make_config(tmp_path, section))
    dispatcher = harness.dispatcher
    dispatcher.handle(notice_from_event(danger_event("risk-1")))
    resolved = danger_event("risk-1", state=EventState.RESOLVED, at=harness.clock.now + 30)
    if closed_by:
        resolved = resolved.model_copy(update={"details": {**resolved.details, "closed_by": closed_by}})
    dispatcher.handle(notice_from_event(resolved))
    harness.clock.now += 60
    second = dispatcher.handle(notice_from_event(danger_event("risk-2", at=harness.clock.now)))
    assert (second.status, second.continues) == (NOTIFYING, continues)
    assert len(twilio.messages) == (1 if continues else 2)
    harness.store.close()


def unacknowledged(severity: str) -> float:
    return REGISTRY.get_sample_value("cityguard_alerts_unacknowledged", {"severity": severity})


def back_within_the_cooldown(harness):
    """A zone at danger (risk-1) dips below it 20 s later and is back as a new incident (risk-2) at 30 s, before
    anyone answered the page: (start, the first alert, the one continuing it)."""
    dispatcher, clock = harness.dispatcher, harness.clock
    start = clock.now
    first = dispatcher.handle(notice_from_event(danger_event("risk-1", at=start)))
    dispatcher.handle(notice_from_event(danger_event("risk-1", state=EventState.RESOLVED, at=start + 20)))
    clock.now = start + 30
    back = dispatcher.handle(notice_from_event(danger_event("risk-2", at=start + 30)))
    return start, first, back


def test_a_subject_back_within_the_cooldown_before_anyone_answered_escalates_on_without_paging_again(harness, twilio):
    """The zone dips below danger for a moment and is back as a new incident: the duty officer is not paged again,
    the chief is paged escalate_after_s after the first page, and the alert counts as unacknowledged until the duty
    officer acknowledges the page they got."""
    dispatcher, clock = harness.dispatcher, harness.clock
    start, first, back = back_within_the_cooldown(harness)
    assert (back.status, back.continues) == (NOTIFYING, first.alert_id)
    clock.now = start + 59
    dispatcher.tick()
    assert [message["to"] for message in twilio.messages] == [DUTY_PHONE]
    assert unacknowledged("critical") == 1
    clock.now = start + 61
    dispatcher.tick()
    assert [message["to"] for message in twilio.messages] == [DUTY_PHONE, CHIEF_PHONE]
    assert f"ack {back.id}" in twilio.messages[1]["body"]
    harness.store.acknowledge(str(first.id), "duty", "", clock())  # the reference in the SMS the duty officer got
    dispatcher.tick()
    assert harness.store.get_alert(back.alert_id).acked_at is not None
    assert unacknowledged("critical") == 0


def test_a_verdict_on_the_incident_that_ended_leaves_the_one_continuing_it_unacknowledged(harness, twilio):
    dispatcher, clock = harness.dispatcher, harness.clock
    start, first, back = back_within_the_cooldown(harness)
    assert back.continues == first.alert_id
    # The console's operator marks the incident that ended a false alarm: nobody has looked at risk-2, still open.
    harness.store.review_incident("risk-1", "false_alarm", "ana", "a blip", clock())
    assert harness.store.get_alert(first.alert_id).acked_at is not None
    clock.now = start + 61
    dispatcher.tick()
    assert harness.store.get_alert(back.alert_id).acked_at is None
    assert [message["to"] for message in twilio.messages] == [DUTY_PHONE, CHIEF_PHONE]  # risk-2 escalates on
    harness.store.review_incident("risk-2", "acknowledged", "ana", "", clock())
    assert harness.store.get_alert(back.alert_id).acked_at is not None


def test_a_verdict_on_an_incident_with_alerts_in_two_chains_stops_each_chain_at_its_own_alerts(harness):
    store, clock = harness.store, harness.clock
    first = harness.dispatcher.handle(notice_from_event(danger_event("risk-1", at=clock.now)))
    harness.dispatcher.handle(notice_from_event(danger_event("risk-1", state=EventState.RESOLVED, at=clock.now)))
    second = harness.dispatcher.handle(notice_from_event(danger_event("risk-2", at=clock.now)))
    harness.dispatcher.handle(notice_from_event(danger_event("risk-2", state=EventState.RESOLVED, at=clock.now)))
    third = harness.dispatcher.handle(notice_from_event(danger_event("risk-3", at=clock.now)))
    assert second.continues == third.continues == first.alert_id
    # risk-2 also has an alert of a chain of its own, created after risk-3's
    store.create_alert(AlertRow(alert_id="risk-2:danger-again", incident_id="risk-2", severity="critical",
                                camera_id=second.camera_id, zone_id=second.zone_id, subject="elsewhere",
                                routes=second.routes, status=NOTIFYING, reason="", title="t", message="m",
                                created_at=clock(), escalation_step=0))
    store.review_incident("risk-2", "false_alarm", "ana", "", clock())
    assert store.get_alert(third.alert_id).acked_at is None  # a later incident in the first chain: nobody saw it
    assert store.get_alert(first.alert_id).acked_at is not None


def test_alerts_ack_takes_a_number_for_an_alert_only_as_alerts_are_numbered(tmp_path, harness, monkeypatch, capsys):
    """Traffic incident ids are 24 hex digits, about one in 79,000 of them decimal digits alone: such an id names its
    incident, never an alert its digits would read as (too large for the store, or with leading zeros)."""
    from cityguard.cli import main

    monkeypatch.delenv("CITYGUARD_INCIDENT_STORE_URL", raising=False)
    site = tmp_path / "site.yaml"
    site.write_text(f"alerting: {{store_url: 'sqlite:///{tmp_path}/incidents.db'}}\n"
                    "cameras:\n  - {id: plaza, source: clip.mp4}\n")
    digits, padded = "602127156173416216829113", "000000000000000000000001"  # the second reads as alert 1 to int()
    first = harness.dispatcher.handle(notice_from_event(danger_event("plaza/north/risk-1")))
    for incident_id, zone in ((digits, "south"), (padded, "east")):
        harness.dispatcher.handle(notice_from_event(danger_event(incident_id, zone=zone)))
    for ref in (digits, padded):
        assert main(["alerts", "ack", "--by", "duty", "--config", str(site), ref]) == 0
        assert harness.store.get_alert(f"{ref}:critical").acked_at is not None
    assert harness.store.get_alert(first.alert_id).acked_at is None
    assert main(["alerts", "ack", "--by", "duty", "--config", str(site), str(first.id)]) == 0
    assert harness.store.get_alert(first.alert_id).acked_at is not None
    capsys.readouterr()
    assert main(["alerts", "ack", "--config", str(site), "99999999999999999999999"]) == 2
    assert capsys.readouterr().err == ("cityguard: error: no alert or incident '99999999999999999999999' in the "
                                       "incident store\n")


def test_an_escalation_a_crash_kept_from_paging_is_paged_on_the_next_tick(harness, twilio):
    dispatcher, clock = harness.dispatcher, harness.clock
    alert = dispatcher.handle(notice_from_event(danger_event("plaza/north/risk-1")))
    clock.now += 61
    # escalate() stored the step, then the process ended before it recorded the chief's delivery
    assert harness.store.set_escalation(alert.id, alert.next_escalation_at, {"crowd": (1, clock())}, None)
    dispatcher.tick()
    dispatcher.tick()
    assert [message["to"] for message in twilio.messages] == [DUTY_PHONE, CHIEF_PHONE]


def test_two_routes_of_one_alert_escalate_each_after_its_own_wait(tmp_path, twilio, webhook):
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    section["contacts"] += [{"id": "ops1", "phone": OPS1_PHONE}, {"id": "ops2", "phone": OPS2_PHONE}]
    section["routes"] = [
        {"id": "duty", "channels": ["sms"], "escalation": ["duty", "chief"], "escalate_after_s": 60,
         "continue_matching": True},
        {"id": "cityops", "channels": ["sms"], "escalation": ["ops1", "ops2"], "escalate_after_s": 600}]
    harness = make_dispatcher(make_config(tmp_path, section))
    dispatcher, clock = harness.dispatcher, harness.clock

    def paged_at(seconds: float) -> list[str]:
        clock.now = start + seconds
        dispatcher.tick()
        dispatcher.tick()
        return [message["to"] for message in twilio.messages]

    start = clock.now
    dispatcher.handle(notice_from_event(danger_event()))
    assert paged_at(61) == [DUTY_PHONE, OPS1_PHONE, CHIEF_PHONE]  # the duty route's wait is over, not the desk's
    assert paged_at(599) == [DUTY_PHONE, OPS1_PHONE, CHIEF_PHONE]
    assert paged_at(601) == [DUTY_PHONE, OPS1_PHONE, CHIEF_PHONE, OPS2_PHONE]
    harness.store.close()


def test_acknowledging_an_alert_acknowledges_the_other_alerts_of_its_incident_but_a_later_openings(tmp_path, twilio,
                                                                                                 webhook):
    """The duty officer answers the critical page of an incident first paged as a warning: the warning's escalation
    stops too, and the incident is acknowledged. An alert of a later opening waits for its own answer, which covers
    what an earlier opening left unanswered."""
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    section["routes"][0]["match"] = {"severities": ["warning", "critical"]}
    harness = make_dispatcher(make_config(tmp_path, section))
    dispatcher, store, clock = harness.dispatcher, harness.store, harness.clock

    def opened_again(days: int):
        dispatcher.handle(notice_from_event(danger_event("risk-1", state=EventState.RESOLVED, at=clock.now + 1)))
        clock.now = start + days * 86_400  # past the cooldown: alerted anew, not as the alert before continued
        return dispatcher.handle(notice_from_event(danger_event("risk-1", at=clock.now)))

    start = clock.now
    warning = dispatcher.handle(notice_from_event(danger_event("risk-1", severity=Severity.WARNING, at=start)))
    critical = dispatcher.handle(notice_from_event(danger_event("risk-1", at=start + 5)))
    acknowledged = store.acknowledge(str(critical.id), "duty", "on it", clock())  # the ref of the critical SMS
    assert [alert.alert_id for alert in acknowledged] == [warning.alert_id, critical.alert_id]
    clock.now = start + 61
    dispatcher.tick()
    dispatcher.tick()
    assert [message["to"] for message in twilio.messages] == [DUTY_PHONE, DUTY_PHONE]  # nobody escalated to
    assert [acked for _, acked in store.open_incidents()] == [True] and store.open_unacknowledged() == {}
    second = opened_again(1)
    store.acknowledge(str(warning.id), "duty", "late", clock())
    assert store.get_alert(second.alert_id).acked_at is None
    third = opened_again(2)
    store.acknowledge(third.alert_id, "duty", "", clock())
    assert store.get_alert(second.alert_id).acked_at is not None and store.open_unacknowledged() == {}
    harness.store.close()


def test_acknowledging_the_warning_of_an_incident_leaves_its_critical_alert_escalating(tmp_path, twilio, webhook):
    """Whoever answers the warning SMS has not seen the critical page the incident rose to: that one escalates on."""
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    section["routes"][0]["match"] = {"severities": ["warning", "critical"]}
    harness = make_dispatcher(make_config(tmp_path, section))
    dispatcher, store, clock = harness.dispatcher, harness.store, harness.clock
    start = clock.now
    warning = dispatcher.handle(notice_from_event(danger_event("risk-1", severity=Severity.WARNING, at=start)))
    critical = dispatcher.handle(notice_from_event(danger_event("risk-1", at=start + 5)))
    acknowledged = store.acknowledge(str(warning.id), "duty", "", clock())  # the ref of the warning SMS
    assert [alert.alert_id for alert in acknowledged] == [warning.alert_id]
    clock.now = start + 66
    dispatcher.tick()
    dispatcher.tick()
    assert [message["to"] for message in twilio.messages] == [DUTY_PHONE, DUTY_PHONE, CHIEF_PHONE]
    assert [acked for _, acked in store.open_incidents()] == [False]
    assert store.open_unacknowledged() == {"critical": 1} and store.get_alert(critical.alert_id).acked_at is None
    harness.store.close()


def test_an_alertmanager_alert_firing_again_within_the_cooldown_escalates_on(harness, twilio):
    def notify(status: str, ends_at: str = "0001-01-01T00:00:00Z") -> None:
        payload = {"version": "4", "alerts": [{"status": status, "fingerprint": "fp1", "startsAt": starts_at,
                                               "endsAt": ends_at, "labels": {"alertname": "CityguardZoneStale",
                                                                             "severity": "critical"}}]}
        for notice in notices_from_alertmanager(payload):
            harness.dispatcher.handle(notice)

    starts_at = "2027-01-16T10:00:00Z"
    notify("firing")
    notify("resolved", "2027-01-16T10:00:15Z")  # one evaluation's resolve, as during an exporter's restart
    starts_at = "2027-01-16T10:00:30Z"
    notify("firing")
    harness.clock.now += 61
    harness.dispatcher.tick()
    assert [message["to"] for message in twilio.messages] == [DUTY_PHONE, CHIEF_PHONE]


def test_a_hung_webhook_holds_up_neither_the_dispatcher_nor_the_sms_of_other_alerts(tmp_path, twilio, webhook):
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    section["routes"][0].update(channels=["sms"], broadcast=["ops"])
    harness = make_dispatcher(make_config(tmp_path, section), tries=DeliveryTries())
    webhook.hold_all = threading.Event()
    try:
        for zone in ("north", "south", "east"):
            harness.dispatcher.handle(notice_from_event(danger_event(f"plaza/{zone}/risk-1", zone=zone)))
        # Every alert was decided and its deliveries recorded while the webhook had answered none of its tries.
        assert [d.status for d in harness.store.deliveries() if d.channel_id == "ops"] == [SENDING] * 3
        wait_until(lambda: len(twilio.sent_to(DUTY_PHONE)) == 3, 10, "the three SMS")
        assert webhook.received == []
    finally:
        webhook.hold_all.set()
        assert harness.dispatcher.tries.wait_until_idle(30)
        harness.store.close()
    assert len(webhook.received) == 3


def test_a_due_retry_is_made_off_the_dispatchers_loop(tmp_path, twilio, webhook):
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    section["routes"][0].update(channels=["sms"], broadcast=["ops"])
    harness = make_dispatcher(make_config(tmp_path, section), tries=DeliveryTries())
    webhook.script = [503]
    try:
        harness.dispatcher.handle(notice_from_event(danger_event()))
        assert harness.dispatcher.tries.wait_until_idle(30)
        webhook.hold_all = threading.Event()
        webhook.arrived.clear()
        harness.retry_after(1)  # returns with the retry handed on, not made
        assert webhook.arrived.wait(10)
        assert [(d.channel_id, d.status) for d in harness.store.deliveries()] == [("ops", SENDING), ("sms", SENT)]
    finally:
        webhook.hold_all.set()
        assert harness.dispatcher.tries.wait_until_idle(30)
        harness.store.close()
    assert [(d.channel_id, d.status) for d in harness.store.deliveries()] == [("ops", SENT), ("sms", SENT)]


def test_a_late_copy_closing_by_reset_never_undoes_the_end_an_incident_really_had(tmp_path, twilio, webhook):
    """An analyzer's stored list of open incidents is as of its last checkpoint: an incident that really ended after
    it keeps that end, and its cooldown, when a new version resets the analyzer and sends the list."""
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    section["routes"][0]["match"] = {}
    harness = make_dispatcher(make_config(tmp_path, section))
    dispatcher = harness.dispatcher
    dispatcher.handle(notice_from_event(danger_event("risk-1")))
    dispatcher.handle(notice_from_event(danger_event("risk-1", state=EventState.RESOLVED, at=harness.clock.now + 50)))
    stale = danger_event("risk-1", state=EventState.RESOLVED, at=harness.clock.now + 20)
    dispatcher.handle(notice_from_event(stale.model_copy(update={"details": {**stale.details,
                                                                             "closed_by": CLOSED_BY_RESET}})))
    [incident] = harness.store.list_incidents()
    assert incident.resolved_at == harness.clock.now + 50 and not incident.closed_by_reset
    harness.clock.now += 60
    assert dispatcher.handle(notice_from_event(danger_event("risk-2", at=harness.clock.now))).continues == (
        "risk-1:critical")
    assert len(twilio.messages) == 1
    harness.store.close()


def test_notices_matching_no_route_are_recorded_without_notifying(harness, twilio):
    alert = harness.dispatcher.handle(notice_from_event(danger_event(severity=Severity.INFO)))
    assert alert.status == SUPPRESSED and alert.reason == "no route matches"
    assert twilio.messages == [] and harness.published == []


def test_sound_alarm_without_a_player_is_a_warning_not_a_crash(tmp_path, twilio, webhook, caplog):
    (tmp_path / "alarm.wav").write_bytes(b"RIFF")
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    section["channels"].append({"kind": "sound", "id": "alarm", "file": "alarm.wav",
                                "players": [["cityguard-no-such-player", "{file}"]]})
    section["routes"][0]["broadcast"] = ["alarm"]
    harness = make_dispatcher(make_config(tmp_path, section))
    harness.dispatcher.handle(notice_from_event(danger_event()))
    deliveries = harness.store.deliveries()
    assert [(d.channel_id, d.status, d.error) for d in deliveries][0] == ("alarm", FAILED, "no audio player installed")
    assert "none of cityguard-no-such-player is installed" in caplog.text
    assert len(twilio.messages) == 1  # the SMS still went out
    harness.store.close()


def test_a_webhook_url_from_the_environment_is_used_and_never_logged(tmp_path, twilio, webhook, monkeypatch,
                                                                      caplog):
    monkeypatch.setenv("OPS_WEBHOOK_URL", webhook.url + "/T0123/B0456/s3cretpath")
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    section["channels"][1] = {"kind": "webhook", "id": "ops", "url_env": "OPS_WEBHOOK_URL"}
    section["routes"][0]["broadcast"] = ["ops"]
    caplog.set_level(logging.DEBUG)
    harness = make_dispatcher(make_config(tmp_path, section))
    harness.dispatcher.handle(notice_from_event(danger_event()))
    assert webhook.paths == ["/hook/T0123/B0456/s3cretpath"]
    assert "s3cretpath" not in caplog.text
    harness.store.close()


def test_a_webhook_variable_without_a_url_fails_at_start_without_quoting_it(tmp_path, twilio, webhook, monkeypatch):
    monkeypatch.setenv("OPS_WEBHOOK_URL", "s3cret-not-a-url")
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    section["channels"][1] = {"kind": "webhook", "id": "ops", "url_env": "OPS_WEBHOOK_URL"}
    with pytest.raises(ConfigError, match="^alert channel ops: OPS_WEBHOOK_URL does not hold an http") as error:
        make_dispatcher(make_config(tmp_path, section))
    assert "s3cret" not in str(error.value)


def test_a_sound_alarm_whose_file_is_missing_fails_at_start_naming_it(tmp_path, twilio, webhook):
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    section["channels"].append({"kind": "sound", "id": "alarm", "file": "alarm.wav"})
    section["routes"][0]["broadcast"] = ["alarm"]
    with pytest.raises(ConfigError, match=r"^alert channel alarm: sound file .*alarm\.wav does not exist$"):
        make_dispatcher(make_config(tmp_path, section))


def test_sound_alarm_plays_the_file_with_the_first_installed_player(tmp_path, twilio, webhook):
    (tmp_path / "alarm.wav").write_bytes(b"RIFF")
    copy = tmp_path / "played.wav"
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    section["channels"].append({"kind": "sound", "id": "alarm", "file": "alarm.wav",
                                "players": [["cityguard-no-such-player", "{file}"], ["cp", "{file}", str(copy)]]})
    section["routes"][0]["broadcast"] = ["alarm"]
    harness = make_dispatcher(make_config(tmp_path, section))
    harness.dispatcher.handle(notice_from_event(danger_event()))
    sound = harness.dispatcher.channels["alarm"]
    for process in sound.playing:
        process.wait(5)
    assert copy.read_bytes() == b"RIFF"
    assert harness.store.deliveries()[0].provider_id == "cp"
    harness.store.close()


# A dispatcher process that plays its alarm (`tail -f` standing in for a player that plays on) from a delivery thread
# that then ends, prints the player's pid once that thread is gone from the system too, and runs on until it is killed.
DISPATCHER_PLAYING = """
import os, sys, threading, time
from schemas import Alert, Severity
from schemas.settings.alerting import SoundChannelConfig
from sinks.alerts.channels import Message, SoundChannel

config = SoundChannelConfig(kind="sound", id="alarm", file=sys.argv[1], players=[["tail", "-f", "{file}"]])
alarm = SoundChannel(config, str)
alert = Alert(alert_id="plaza/north/risk-1:critical", event_id="plaza/north/risk-1", severity=Severity.CRITICAL,
              camera_id="plaza", zone_id="north", title="Crowd risk", message="danger", created_at=time.time())
delivery = threading.Thread(target=alarm.send, args=(Message(alert, 1, "test", None, "key"), sys.argv[1]))
delivery.start()
delivery.join()
while os.path.exists(f"/proc/self/task/{delivery.native_id}"):
    time.sleep(0.01)
print(alarm.playing[0].pid, flush=True)
sys.stdin.read()
"""
PF_EXITING = 0x4


def running(pid: int) -> bool:
    """Whether the process is there and not on its way out: not a zombie, not exiting, no SIGTERM or SIGKILL pending
    (a signal the kernel has sent but the process has not acted on yet)."""
    try:
        after_name = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    fields = dict(line.split(":", 1) for line in status.splitlines())
    pending = int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16)
    ending = 1 << (signal.SIGTERM - 1) | 1 << (signal.SIGKILL - 1)
    return after_name[0] != "Z" and not int(after_name[6]) & PF_EXITING and not pending & ending


def test_a_sound_alarm_plays_on_after_its_delivery_thread_ends_and_stops_with_the_dispatcher(tmp_path):
    (tmp_path / "alarm.wav").write_bytes(b"RIFF")
    dispatcher = subprocess.Popen([sys.executable, "-c", DISPATCHER_PLAYING, str(tmp_path / "alarm.wav")],
                                  cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        player = int(dispatcher.stdout.readline())
        assert running(player)  # the thread that started it has ended
    finally:
        dispatcher.kill()  # no shutdown code of its own runs
        dispatcher.wait()
    wait_until(lambda: not running(player), 10, "the player to end with the dispatcher")


def test_alertmanager_webhook_payload_becomes_notices():
    payload = {
        "version": "4", "status": "firing", "receiver": "cityguard", "groupKey": "{}:{alertname=\"x\"}",
        "alerts": [
            {"status": "firing", "fingerprint": "abc123",
             "labels": {"alertname": "CityguardZoneDanger", "severity": "critical", "camera": "plaza", "zone": "north"},
             "annotations": {"summary": "Zone north at danger", "description": "5.6 p/m²",
                             "runbook_url": "https://runbooks/zone-danger"},
             "startsAt": "2027-01-15T10:00:00.000Z", "endsAt": "0001-01-01T00:00:00Z"},
            {"status": "resolved", "fingerprint": "def456",
             "labels": {"alertname": "CityguardStageDown", "job": "cityguard-inference", "instance": "10.0.0.6:9102"},
             "annotations": {}, "startsAt": "2027-01-15T09:00:00Z", "endsAt": "2027-01-15T09:30:00Z"},
        ],
    }
    firing, resolved = notices_from_alertmanager(payload)
    assert (firing.incident_id, firing.type, firing.severity, firing.camera_id, firing.zone_id) == (
        "am-abc123", "CityguardZoneDanger", Severity.CRITICAL, "plaza", "north")
    assert firing.state == EventState.OPENED and "Runbook: https://runbooks/zone-danger" in firing.message
    assert resolved.state == EventState.RESOLVED and resolved.severity == Severity.WARNING
    assert resolved.message == "instance=10.0.0.6:9102, job=cityguard-inference"  # no description: where it fires
    assert firing.at - resolved.at == 1800.0  # started 10:00, the other ended 09:30
    with pytest.raises(ValueError):
        notices_from_alertmanager({"version": "3", "alerts": []})


def test_an_alertmanager_alert_firing_again_after_it_resolved_pages_again(harness, twilio):
    def notify(status: str, starts: str, ends: str = "0001-01-01T00:00:00Z") -> None:
        payload = {"version": "4", "alerts": [{
            "status": status, "fingerprint": "fp1", "startsAt": starts, "endsAt": ends,
            "labels": {"alertname": "CityguardZoneStale", "severity": "critical", "camera": "plaza", "zone": "north"}}]}
        for notice in notices_from_alertmanager(payload):
            harness.dispatcher.handle(notice)

    notify("firing", "2027-01-15T10:00:00Z")
    notify("firing", "2027-01-15T10:00:00Z")  # Alertmanager's repeat of the same firing
    notify("resolved", "2027-01-15T10:00:00Z", "2027-01-15T10:05:00Z")
    assert len(twilio.sent_to(DUTY_PHONE)) == 1
    harness.clock.now += 86400  # the same labels fire again the next day: the incident opens again
    notify("firing", "2027-01-16T10:00:00Z")
    assert len(twilio.sent_to(DUTY_PHONE)) == 2
    # Fired again before Alertmanager sent the resolve (within a group interval): still the one open incident.
    notify("firing", "2027-01-16T10:00:30Z")
    assert len(twilio.sent_to(DUTY_PHONE)) == 2
    notify("resolved", "2027-01-16T10:00:30Z", "2027-01-16T10:06:00Z")
    [incident] = harness.store.list_incidents()
    assert (incident.id, incident.state) == ("am-fp1", "resolved")  # no incident left open behind it
    assert harness.store.get_alert("am-fp1:critical") and harness.store.get_alert("am-fp1:critical#1")


def test_an_alertmanager_alert_is_cooled_down_per_label_set(harness, twilio):
    def firing(fingerprint: str, job: str) -> dict:
        return {"status": "firing", "fingerprint": fingerprint, "startsAt": "2027-01-15T10:00:00Z",
                "labels": {"alertname": "CityguardStageDown", "severity": "critical", "job": job}}

    payload = {"version": "4", "alerts": [firing("a1", "cityguard-inference"), firing("b2", "cityguard-alerts")]}
    for notice in notices_from_alertmanager(payload):
        harness.dispatcher.handle(notice)
    assert len(twilio.sent_to(DUTY_PHONE)) == 2  # two stages down: neither page holds back the other
    flapped = {"version": "4", "alerts": [{**firing("a1", "cityguard-inference"), "startsAt": "2027-01-15T10:03:00Z"}]}
    for notice in notices_from_alertmanager(flapped):
        harness.dispatcher.handle(notice)
    assert len(twilio.sent_to(DUTY_PHONE)) == 2  # the same stage again within the cooldown


def test_a_contact_without_a_phone_goes_to_the_fallback_and_counts_as_unreachable_not_failed(tmp_path, twilio,
                                                                                            webhook):
    from prometheus_client import REGISTRY

    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db",
                               contacts=[{"id": "duty", "name": "Duty officer"}])  # no phone: the webhook reaches them
    section["routes"][0]["escalation"] = ["duty"]
    harness = make_dispatcher(make_config(tmp_path, section))

    def count(status: str) -> float:
        return REGISTRY.get_sample_value("cityguard_alert_deliveries_total", {"channel": "sms", "status": status}) or 0

    before = count("failed"), count("unreachable")
    harness.dispatcher.handle(notice_from_event(danger_event()))
    assert twilio.messages == [] and len(webhook.received) == 1
    assert (count("failed"), count("unreachable")) == (before[0], before[1] + 1)  # no provider failed: no SRE page


def test_backoff_doubles_up_to_the_cap_and_the_rate_limiter_spaces_sends():
    assert [backoff_delay(n, 1, 5) for n in range(1, 6)] == [1, 2, 4, 5, 5]
    assert backoff_delay(5000, 0.5, 10.0) == 10.0  # the dispatcher's pauses count failures through a long outage
    now, slept = [0.0], []
    limiter = RateLimiter(2.0, clock=lambda: now[0], sleep=slept.append)
    for _ in range(3):
        limiter.wait()
    assert slept == [0.5, 1.0]
    now[0] = 10.0
    assert limiter.wait() == 0.0

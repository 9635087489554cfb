"""The dispatcher when its surroundings fail: a configuration changed under stored deliveries, the broker or the
incident store away, a provider that cannot say what it sent, a second dispatcher on the same store, secrets as
shells and files leave them, a crash in the middle of a retry, and a store from an earlier version."""
import sqlite3
import threading
from types import SimpleNamespace

import pytest
from kafka.errors import KafkaConnectionError, TopicAuthorizationFailedError
from prometheus_client import REGISTRY
from sqlalchemy import create_engine, text

from infra.consume_loop import RetryBatch
from infra.kafka import ProduceFailed
from schemas import Alert, DeadLetter, Event, EventState, decode, encode
from schemas.base import ID_MAX_CHARS
from schemas.settings.alerting import ReceiverConfig
from schemas.settings.base import ConfigError
from schemas.settings.config import Config, TopicNames
from sinks.alerts.channels import Message
from sinks.alerts.dispatcher import longest_try_s, to_message
from sinks.alerts.notice import MESSAGE_MAX_CHARS, TITLE_MAX_CHARS, notice_from_event, notices_from_alertmanager
from sinks.alerts.redact import redact
from sinks.alerts.service import PAUSE_INITIAL_S, AlertmanagerReceiver, DispatcherService, PendingNotices
from sinks.alerts.store import BUSY_TIMEOUT_S, FAILED, RETRYING, SENDING, SENT, IncidentStore
from tests.ops.fakes import Scripted
from tests.ops.helpers import (
    AUTH_TOKEN,
    CHIEF_PHONE,
    DUTY_PHONE,
    Clock,
    Harness,
    alerting_section,
    danger_event,
    left_sending_by_a_crash,
    make_config,
    make_dispatcher,
)

NIGHT_PHONE = "+821055556666"
HOUR = 3600.0
UNAVAILABLE = Scripted(503, 20503, "Service unavailable")


class Broker:
    """The alerts topic as the publisher sees it: every alert refused while `down` (not confirmed), kept otherwise."""

    def __init__(self):
        self.down = True
        self.alerts: list[Alert] = []

    def publish(self, alert: Alert) -> None:
        if self.down:
            raise ProduceFailed("produce failed: KafkaTimeoutError")
        self.alerts.append(alert)


class DeadLetterProducer:
    """Stands in for the KafkaProducer the service sends dead letters with; keeps them."""

    def __init__(self):
        self.letters: list[DeadLetter] = []

    def send(self, topic: str, key: bytes | None = None, value: bytes | None = None) -> DeadLetter:
        self.letters.append(decode(value, DeadLetter))
        return self.letters[-1]


class Passes:
    """The consumer as DispatcherService.run sees it, without records: each poll begins a pass of the service's loop
    and first runs the next step; once they are all done, the loop stops."""

    config = {"group_id": "alerts"}

    def __init__(self, stop: threading.Event, *steps):
        self.stop, self.steps = stop, list(steps)

    def poll(self, timeout_ms: int) -> dict:
        if self.steps:
            self.steps.pop(0)()
        else:
            self.stop.set()
        return {}

    def assignment(self) -> set:
        return set()

    def bootstrap_connected(self) -> bool:
        return True


class LosesTheBrokerOnce(Passes):
    """The consumer when the broker goes away under its first poll, which raises as kafka-python's can once it loses
    its group coordinator; the broker is back for every later poll."""

    def __init__(self):
        super().__init__(threading.Event())
        self.polls = 0

    def poll(self, timeout_ms: int) -> dict:
        self.polls += 1
        if self.polls == 1:
            raise KafkaConnectionError("111 ECONNREFUSED")
        return {}

    def bootstrap_connected(self) -> bool:
        return self.polls != 1


class NotAuthorised(Passes):
    """The consumer when the broker refuses the group the events topic: an error that waiting will not pass."""

    def __init__(self):
        super().__init__(threading.Event())

    def poll(self, timeout_ms: int) -> dict:
        raise TopicAuthorizationFailedError("cityguard.events.v1")


def records(*events: Event) -> list:
    return [SimpleNamespace(topic="cityguard.events.v1", partition=0, offset=offset, key=b"plaza", value=encode(event))
            for offset, event in enumerate(events)]


def kafka_service(harness, producer=None) -> DispatcherService:
    return DispatcherService(harness.dispatcher, None, producer, TopicNames(), None, 60, ["plaza"])


def sqlite(tmp_path, statement: str) -> None:
    database = create_engine(f"sqlite:///{tmp_path}/incidents.db")
    with database.begin() as connection:
        connection.execute(text(statement))
    database.dispose()


# -- a configuration changed under stored deliveries -------------------------------------------------------------------

def test_a_retry_for_a_contact_removed_from_the_config_fails_and_the_route_goes_on(tmp_path, twilio, webhook):
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    before = make_dispatcher(make_config(tmp_path, section))
    twilio.script = [Scripted(429, 20429, "Too Many Requests")]
    before.dispatcher.handle(notice_from_event(danger_event()))  # duty's SMS waits for its retry
    # The duty officer is replaced by the night officer, and the dispatcher restarted.
    section["contacts"] = [{"id": "night", "phone": NIGHT_PHONE}, section["contacts"][1]]
    section["routes"][0]["escalation"] = ["night", "chief"]
    after = make_dispatcher(make_config(tmp_path, section))
    after.clock.now += 60
    after.dispatcher.resume_pending()
    after.dispatcher.retry_due()
    after.dispatcher.resume_pending()
    deliveries = after.store.deliveries()
    assert [(d.contact_id, d.status) for d in deliveries] == [("duty", FAILED), ("night", SENT)]
    assert deliveries[0].error == "contact duty is no longer configured"
    assert [message["to"] for message in twilio.messages] == [NIGHT_PHONE]


def test_a_delivery_that_breaks_the_dispatcher_is_skipped_and_the_others_still_go_out(tmp_path, twilio, webhook,
                                                                                      caplog):
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    harness = make_dispatcher(make_config(tmp_path, section))
    twilio.script = [UNAVAILABLE]
    harness.dispatcher.handle(notice_from_event(danger_event("plaza/north/risk-1")))
    # A store edited by hand (or half restored from a backup): the retrying delivery's alert is gone.
    with create_engine(f"sqlite:///{tmp_path}/incidents.db").begin() as connection:
        connection.execute(text("UPDATE deliveries SET alert_ref = 999"))
    harness.dispatcher.handle(notice_from_event(danger_event("plaza/south/risk-2", zone="south")))
    harness.clock.now += 1
    harness.dispatcher.tick()
    assert [message["body"].split(":")[0] for message in twilio.messages] == [
        "[CRITICAL] risk level changed at plaza/south"]
    assert "delivery plaza/north/risk-1:critical|sms|duty skipped: AttributeError" in caplog.text


# -- the broker away ---------------------------------------------------------------------------------------------------

def test_every_alert_of_a_webhook_request_is_notified_while_the_broker_is_down(tmp_path, twilio, webhook):
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    section["routes"] = [{"id": "sre", "channels": ["sms"], "escalation": ["duty"]}]
    broker = Broker()
    harness = make_dispatcher(make_config(tmp_path, section), broker.publish)
    receiver = AlertmanagerReceiver(ReceiverConfig(port=0), None)
    service = DispatcherService(harness.dispatcher, None, None, TopicNames(), receiver, 60, ["plaza"])
    names = ["ConsumerLag", "KafkaDown", "StageDown"]
    payload = {"version": "4", "alerts": [
        {"status": "firing", "fingerprint": name, "labels": {"alertname": name, "severity": "critical"},
         "startsAt": "2027-01-15T10:00:00Z"} for name in names]}
    answers, sms = [], []
    try:
        for down in (True, False):  # Alertmanager sends the request again after the 500
            broker.down = down
            pending = PendingNotices(notices_from_alertmanager(payload))
            receiver.inbox.put(pending)
            service.answer_webhooks(0)
            answers.append(pending.error)
            sms.append(sorted(message["body"].split(":")[0] for message in twilio.messages))
    finally:
        receiver.server.server_close()
    assert "ProduceFailed" in answers[0] and answers[1] is None
    assert sms == [[f"[CRITICAL] {name}" for name in names]] * 2
    assert sorted(alert.event_id for alert in broker.alerts) == [f"am-{name}" for name in names]


def test_every_event_of_a_batch_is_notified_before_an_unconfirmed_publish_sends_the_batch_again(tmp_path, twilio,
                                                                                                  webhook):
    broker = Broker()
    harness = make_dispatcher(make_config(tmp_path, alerting_section(
        twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")), broker.publish)
    service = kafka_service(harness)
    batch = records(danger_event("plaza/north/risk-1"), danger_event("plaza/south/risk-2", zone="south"))
    with pytest.raises(ProduceFailed):
        service.process(batch)
    assert len(twilio.sent_to(DUTY_PHONE)) == 2
    broker.down = False
    assert service.process(batch) == []
    assert len(twilio.messages) == 2 and len(broker.alerts) == 2


def test_an_incident_opened_and_updated_in_one_batch_publishes_its_alert_once(tmp_path, twilio, webhook):
    broker = Broker()
    broker.down = False
    harness = make_dispatcher(make_config(tmp_path, alerting_section(
        twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")), broker.publish)
    opened = danger_event()
    updated = danger_event(state=EventState.UPDATED, at=opened.updated_at + 5)
    assert kafka_service(harness).process(records(opened, updated)) == []
    assert [alert.alert_id for alert in broker.alerts] == ["plaza/north/risk-1:critical"]
    assert len(twilio.messages) == 1


def test_an_alert_read_before_another_notice_published_it_is_not_published_again(harness):
    opened = danger_event()
    first = harness.dispatcher.handle(notice_from_event(opened))
    second = harness.dispatcher.handle(notice_from_event(danger_event(state=EventState.UPDATED,
                                                                      at=opened.updated_at + 5)))
    harness.dispatcher.publish_once(second)
    harness.dispatcher.publish_once(first)
    assert [alert.alert_id for alert in harness.published] == ["plaza/north/risk-1:critical"]


def test_a_poll_that_loses_the_broker_pauses_reading_and_the_dispatcher_reads_on_after_it(harness):
    clock = [0.0]
    consumer = LosesTheBrokerOnce()
    service = DispatcherService(harness.dispatcher, consumer, None, TopicNames(), None, 60, ["plaza"],
                                clock=lambda: clock[0])
    service.consume()  # raised inside: the dispatcher is still up
    assert consumer.polls == 1 and REGISTRY.get_sample_value("cityguard_broker_connected", {"stage": "alerts"}) == 0
    service.consume()
    assert consumer.polls == 1  # paused
    clock[0] += PAUSE_INITIAL_S
    service.consume()
    assert consumer.polls == 2 and REGISTRY.get_sample_value("cityguard_broker_connected", {"stage": "alerts"}) == 1
    assert service.batch_pause.failures == 0  # the next failure pauses briefly again


def test_a_poll_refused_for_good_ends_the_dispatcher_naming_why(harness):
    service = DispatcherService(harness.dispatcher, NotAuthorised(), None, TopicNames(), None, 60, ["plaza"])
    with pytest.raises(TopicAuthorizationFailedError):  # waiting would not pass it: the stage ends, saying so
        service.consume()


# -- records the incident store cannot take, and the store away --------------------------------------------------------

def test_an_event_whose_ids_exceed_the_store_columns_is_a_dead_letter_and_the_batch_goes_on(harness, twilio):
    producer = DeadLetterProducer()
    too_long = danger_event().model_copy(update={"event_id": "plaza/north/" + "x" * 200})  # as another producer sent
    kafka_service(harness, producer).process(records(too_long, danger_event("plaza/south/risk-2", zone="south")))
    assert [letter.offset for letter in producer.letters] == [0]
    assert "event_id" in producer.letters[0].reason
    assert ["plaza/south" in message["body"] for message in twilio.messages] == [True]


def test_an_event_of_a_camera_the_site_does_not_have_is_a_dead_letter_and_pages_nobody(harness, twilio):
    forged = [danger_event(f"ghost{number}/z/risk-1").model_copy(update={"camera_id": f"ghost{number}"})
              for number in range(3)]
    producer = DeadLetterProducer()
    kafka_service(harness, producer).handle_records(records(*forged, danger_event()))
    assert [letter.reason for letter in producer.letters] == [
        f"camera 'ghost{number}' is not in the site configuration" for number in range(3)]
    assert [message["to"] for message in twilio.messages] == [DUTY_PHONE]
    assert [incident.id for incident in harness.store.list_incidents()] == ["plaza/north/risk-1"]


def test_an_event_too_large_to_alert_on_is_a_dead_letter_and_the_batch_goes_on(harness, twilio):
    """Its alert could not be published, and the batch would come again for ever behind it."""
    producer = DeadLetterProducer()
    huge = danger_event().model_copy(update={"details": {f"k{n}": n for n in range(200_000)}})
    kafka_service(harness, producer).process(records(huge, danger_event("plaza/south/risk-2", zone="south")))
    assert [letter.offset for letter in producer.letters] == [0]
    assert "details" in producer.letters[0].reason
    assert ["plaza/south" in message["body"] for message in twilio.messages] == [True]


def test_an_alertmanager_alerts_text_is_cut_to_a_publishable_size():
    alert = {"status": "firing", "fingerprint": "f1", "startsAt": "2027-01-15T10:00:00Z",
             "labels": {"alertname": "CityguardStageDown", "severity": "critical"},
             "annotations": {"summary": "s" * 5_000, "description": "d" * 2_000_000, "runbook_url": "https://rb/x"}}
    [notice] = notices_from_alertmanager({"version": "4", "alerts": [alert]})
    assert len(notice.title) == TITLE_MAX_CHARS and notice.title.endswith("…")
    assert len(notice.message) <= MESSAGE_MAX_CHARS and notice.message.endswith("… Runbook: https://rb/x")


def test_an_alertmanager_alert_whose_ids_exceed_the_store_columns_is_refused_naming_the_field():
    alert = {"status": "firing", "fingerprint": "f1",
             "labels": {"alertname": "CityguardZoneDanger", "zone": "z" * (ID_MAX_CHARS + 1)},
             "startsAt": "2027-01-15T10:00:00Z"}
    with pytest.raises(ValueError, match=rf"^alerts\[0\]\.labels\.zone is longer than {ID_MAX_CHARS} characters$"):
        notices_from_alertmanager({"version": "4", "alerts": [alert]})
    with pytest.raises(ValueError, match=r"^alerts\[0\]\.fingerprint is longer than 200 characters$"):
        notices_from_alertmanager({"version": "4", "alerts": [{**alert, "labels": {}, "fingerprint": "f" * 198}]})


def test_an_event_the_store_refuses_is_a_dead_letter_and_a_store_outage_sends_the_batch_again(tmp_path, harness,
                                                                                               twilio):
    # What Postgres does with a value too long for its column, on the SQLite store: refuses this one row.
    sqlite(tmp_path, "CREATE TRIGGER refuse BEFORE INSERT ON incidents WHEN NEW.id LIKE '%refused%' "
                     "BEGIN SELECT RAISE(ABORT, 'value too long for type character varying(200)'); END")
    producer = DeadLetterProducer()
    service = kafka_service(harness, producer)
    service.process(records(danger_event("plaza/north/refused"), danger_event("plaza/south/risk-2", zone="south")))
    assert [letter.offset for letter in producer.letters] == [0]
    assert "IntegrityError" in producer.letters[0].reason
    assert ["plaza/south" in message["body"] for message in twilio.messages] == [True]
    # The store goes away: every write fails. Not the events' fault: no dead letter, the batch comes again.
    sqlite(tmp_path, "CREATE TRIGGER away BEFORE INSERT ON events BEGIN INSERT INTO no_such_table VALUES (1); END")
    with pytest.raises(RetryBatch):
        service.process(records(danger_event("plaza/east/risk-3", zone="east")))
    assert len(producer.letters) == 1
    sqlite(tmp_path, "DROP TRIGGER away")
    assert service.process(records(danger_event("plaza/east/risk-3", zone="east"))) == []
    assert len(twilio.messages) == 2


def run_service(harness, consumer, stop: threading.Event, clock) -> None:
    """The dispatcher service's loop over `consumer` until `stop`, its Alertmanager receiver on a free port."""
    receiver = AlertmanagerReceiver(ReceiverConfig(port=0), None)
    service = DispatcherService(harness.dispatcher, consumer, None, TopicNames(), receiver, 60, ["plaza"], clock=clock)
    try:
        service.run(stop)
    finally:
        receiver.server.server_close()


def test_a_store_outage_pauses_retries_and_the_dispatcher_makes_them_once_the_store_is_back(tmp_path, harness,
                                                                                             twilio, caplog):
    twilio.script = [UNAVAILABLE]
    harness.dispatcher.handle(notice_from_event(danger_event()))  # duty's SMS waits for its retry
    harness.clock.now += 1
    monotonic = [0.0]

    def pause_over():
        monotonic[0] += PAUSE_INITIAL_S

    stop = threading.Event()
    consumer = Passes(stop, lambda: sqlite(tmp_path, "ALTER TABLE deliveries RENAME TO deliveries_away"),
                      lambda: sqlite(tmp_path, "ALTER TABLE deliveries_away RENAME TO deliveries"), pause_over)
    run_service(harness, consumer, stop, lambda: monotonic[0])
    assert "retries and escalations wait 0.5 s: OperationalError" in caplog.text
    assert "no such table: deliveries" in caplog.text
    assert len(twilio.messages) == 1 and [d.status for d in harness.store.deliveries()] == [SENT]


def test_the_incident_store_away_shows_in_its_gauge_until_it_answers_again(tmp_path, harness):
    seen, monotonic = [], [0.0]

    def away():
        seen.append(REGISTRY.get_sample_value("cityguard_alert_store_failing"))
        sqlite(tmp_path, "ALTER TABLE deliveries RENAME TO deliveries_away")

    def back():
        seen.append(REGISTRY.get_sample_value("cityguard_alert_store_failing"))
        sqlite(tmp_path, "ALTER TABLE deliveries_away RENAME TO deliveries")

    def pause_over():
        monotonic[0] += PAUSE_INITIAL_S

    stop = threading.Event()
    consumer = Passes(stop, away, back, pause_over, lambda: seen.append(
        REGISTRY.get_sample_value("cityguard_alert_store_failing")))
    run_service(harness, consumer, stop, lambda: monotonic[0])
    assert seen == [0, 1, 0]


# -- a provider that cannot say what it sent ---------------------------------------------------------------------------

@pytest.mark.parametrize("listing", [Scripted(403, 20003, "Permission denied"),  # an API key without the right to list
                                     Scripted(200, 0, "[]", style="json")],  # a listing twilio-python cannot read
                         ids=["refused", "unreadable"])
def test_a_pending_sms_whose_listing_cannot_be_read_is_sent_again_and_falls_back_once_it_fails(harness, twilio,
                                                                                                webhook, listing):
    twilio.listing_error = listing
    left_sending_by_a_crash(harness)
    [row] = harness.store.deliveries()
    # The crash cut this try short: it may have gone out.
    harness.store.start_attempt(row, harness.clock(), harness.dispatcher.claim_watch.mark())
    harness.let_every_try_end()
    harness.dispatcher.resume_pending()
    assert [d.status for d in harness.store.deliveries()] == [RETRYING]
    twilio.script = [UNAVAILABLE] * 2  # max_attempts is 3, the try cut short included
    for _ in range(2):
        harness.retry_after(1)
    deliveries = harness.store.deliveries()
    assert [(d.channel_id, d.status) for d in deliveries] == [("sms", FAILED), ("ops", SENT)]
    assert twilio.posts() == 2 and len(webhook.received) == 1


# -- a second dispatcher on the same store -----------------------------------------------------------------------------

def while_the_webhook_holds_one_request(webhook, first_step, second_step) -> None:
    """first_step in a thread until its webhook request has arrived and is held unanswered; then second_step; then
    the webhook answers and first_step finishes."""
    hold = webhook.hold_next = threading.Event()
    webhook.arrived.clear()
    first = threading.Thread(target=first_step)
    first.start()
    try:
        assert webhook.arrived.wait(10)
        second_step()
    finally:
        hold.set()
        first.join(10)


def test_two_dispatchers_on_one_store_make_a_due_retry_once(tmp_path, twilio, webhook):
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    section["routes"][0]["broadcast"] = ["ops"]
    first, second = (make_dispatcher(make_config(tmp_path, section)) for _ in range(2))
    webhook.script, twilio.script = [503], [UNAVAILABLE]
    first.dispatcher.handle(notice_from_event(danger_event()))  # the broadcast and duty's SMS both wait to retry
    first.clock.now = second.clock.now = first.clock.now + 1
    # The first dispatcher reads both due retries and waits on the webhook's answer to the first; meanwhile the
    # second dispatcher makes the SMS retry.
    while_the_webhook_holds_one_request(webhook, first.dispatcher.retry_due, second.dispatcher.retry_due)
    assert len(twilio.messages) == 1
    assert [(d.channel_id, d.status, d.attempt_count) for d in first.store.deliveries()] == [
        ("ops", SENT, 2), ("sms", SENT, 2)]


def test_a_retry_in_flight_in_one_dispatcher_is_no_crash_leftover_for_another(tmp_path, twilio, webhook):
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    section["routes"][0]["broadcast"] = ["ops"]
    first, second = (make_dispatcher(make_config(tmp_path, section)) for _ in range(2))
    webhook.script = [503]
    first.dispatcher.handle(notice_from_event(danger_event()))  # the broadcast waits to retry
    first.clock.now = second.clock.now = first.clock.now + 1
    # The first dispatcher's tick makes the retry and waits on the webhook's answer; meanwhile the second ticks.
    while_the_webhook_holds_one_request(webhook, first.dispatcher.tick, second.dispatcher.tick)
    assert len(webhook.received) == 1
    assert [(d.channel_id, d.status, d.attempt_count) for d in first.store.deliveries()] == [
        ("ops", SENT, 2), ("sms", SENT, 1)]


def test_a_restarted_dispatcher_says_which_leftover_it_waits_on_and_for_how_long(tmp_path, twilio, webhook, caplog):
    config = make_config(tmp_path, alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db"))
    left_sending_by_a_crash(make_dispatcher(config))
    restarted = make_dispatcher(config)
    limit_s = longest_try_s(restarted.dispatcher.channels["sms"].retry)
    with caplog.at_level("INFO", logger="sinks.alerts.dispatcher"):
        restarted.dispatcher.resume_pending()
        restarted.dispatcher.resume_pending()  # the same claim: said once
    assert [record.getMessage() for record in caplog.records if "did not make" in record.getMessage()] == [
        "delivery plaza/north/risk-1:critical|sms|duty is sending under a claim this dispatcher did not make (another "
        f"dispatcher's try, or one cut short by a crash): resumed here if the claim is unchanged in {limit_s:.0f} s"]
    assert twilio.posts() == 0


def crashed_mid_try_on(host: Clock, config: Config) -> tuple[Harness, str, float]:
    """A dispatcher on `host` that began a try of an SMS and died: (its harness, the SMS body, how long after the try
    began no try of it can be under way, by the host's clock)."""
    crashed = make_dispatcher(config, host=host)
    _, _, body = left_sending_by_a_crash(crashed)
    [row] = crashed.store.deliveries()
    crashed.store.start_attempt(row, crashed.clock(), crashed.dispatcher.claim_watch.mark())
    return crashed, body, longest_try_s(crashed.dispatcher.channels["sms"].retry) + BUSY_TIMEOUT_S


def test_a_dispatcher_restarted_on_the_same_host_resumes_a_crashs_leftover_once_its_try_must_have_ended(
        tmp_path, twilio, webhook):
    """The try cut short by the crash is older than a try lasts (and its claim's write may have waited) by the host's
    clock, which a restart does not set back: the restarted dispatcher resumes it at once, where it waited a try's
    length again, and again at each restart of a crash loop, holding a critical SMS back."""
    config = make_config(tmp_path, alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db"))
    host = Clock(0.0)
    crashed, body, ended_s = crashed_mid_try_on(host, config)
    host.now += ended_s + 1
    restarted = make_dispatcher(config, host=host)
    restarted.clock.now = crashed.clock.now + 30  # the channel's listing_lag_s
    restarted.dispatcher.resume_pending()
    assert [message["body"] for message in twilio.messages] == [body]
    assert [d.status for d in restarted.store.deliveries()] == [SENT]


@pytest.mark.parametrize("case", ["try still under way", "another host", "claimed since by the version before"])
def test_a_claim_a_dispatcher_cannot_date_by_its_own_clock_waits_a_try_from_when_it_is_read(tmp_path, twilio, webhook,
                                                                                            case):
    """A try still under way on the same host; an old claim made on another host (whose clock means nothing here);
    a claim marked on this host and claimed again since by a dispatcher that marks no claims (its mark is the one
    before): none is taken for a crash's leftover until a try's length after it is first read."""
    config = make_config(tmp_path, alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db"))
    host = Clock(0.0)
    crashed, body, ended_s = crashed_mid_try_on(host, config)
    host.now += ended_s - 1 if case == "try still under way" else ended_s + 1
    if case == "claimed since by the version before":
        with sqlite3.connect(tmp_path / "incidents.db") as database:
            database.execute("UPDATE deliveries SET claims = claims + 1")
    other = make_dispatcher(config, host=host, host_name="other host" if case == "another host" else "host")
    other.clock.now = crashed.clock.now + 30  # the channel's listing_lag_s
    other.dispatcher.resume_pending()
    assert twilio.posts() == 0
    host.now += ended_s + 1
    other.dispatcher.resume_pending()
    assert [message["body"] for message in twilio.messages] == [body]


def test_a_leftover_taken_over_while_its_first_claimant_asks_twilio_is_sent_once(tmp_path, twilio, webhook, caplog):
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    first, second = (make_dispatcher(make_config(tmp_path, section)) for _ in range(2))
    left_sending_by_a_crash(first)
    [row] = first.store.deliveries()
    # The crash cut this try short, before its request went out.
    first.store.start_attempt(row, first.clock(), first.dispatcher.claim_watch.mark())
    first.clock.now += 30  # the channel's listing_lag_s: a listing without the SMS now means it did not go out
    first.let_every_try_end()
    hold = twilio.hold_next_listing = threading.Event()
    asking = threading.Thread(target=first.dispatcher.resume_pending)
    asking.start()
    try:
        assert twilio.listed.wait(10)
        # The first dispatcher claimed the leftover and waits on Twilio's listing for longer than a try lasts: the
        # second takes the leftover over, finds it not listed either, and sends it.
        second.clock.now = first.clock.now
        second.let_every_try_end()
        second.dispatcher.resume_pending()
        assert len(twilio.messages) == 1
    finally:
        hold.set()
        asking.join(10)
    assert [message["to"] for message in twilio.messages] == [DUTY_PHONE]
    assert [(d.status, d.attempt_count) for d in first.store.deliveries()] == [(SENT, 2)]
    # (the dispatcher's own log: a Kafka client another test of this worker left running may warn meanwhile)
    assert [record.levelname for record in caplog.records
            if record.name.startswith("sinks.") and record.levelname in ("WARNING", "ERROR")] == []


def test_a_try_under_way_is_no_leftover_for_a_dispatcher_whose_clock_is_ahead(tmp_path, twilio, webhook):
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    section["routes"][0]["broadcast"] = ["ops"]
    first, second = (make_dispatcher(make_config(tmp_path, section)) for _ in range(2))
    second.clock.now = first.clock.now + HOUR  # the second host's clock was stepped forward, or runs that far ahead
    # The first dispatcher's webhook try waits on its answer; meanwhile the second ticks, its clock stepped forward
    # again between its ticks.
    while_the_webhook_holds_one_request(webhook, lambda: first.dispatcher.handle(notice_from_event(danger_event())),
                                        lambda: ticks_across_a_step(second))
    assert len(webhook.received) == 1
    assert [(d.channel_id, d.status, d.attempt_count) for d in first.store.deliveries()][0] == ("ops", SENT, 1)


def test_an_sms_under_way_is_not_sent_again_by_a_dispatcher_whose_clock_is_ahead(tmp_path, twilio, webhook):
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    section["routes"][0]["escalation"] = ["duty"]  # the second's clock is past the escalation: no page but duty's
    first, second = (make_dispatcher(make_config(tmp_path, section)) for _ in range(2))
    second.clock.now = first.clock.now + HOUR
    twilio.listing_lag_s = 60  # Twilio lists the SMS only after a while
    hold = twilio.hold_after_create = threading.Event()
    sending = threading.Thread(target=first.dispatcher.handle, args=(notice_from_event(danger_event()),))
    sending.start()
    try:
        assert twilio.created.wait(10)  # Twilio has the SMS; its answer is on its way
        ticks_across_a_step(second)
    finally:
        hold.set()
        sending.join(10)
    assert [message["to"] for message in twilio.messages] == [DUTY_PHONE]
    assert [(d.status, d.attempt_count) for d in first.store.deliveries()] == [(SENT, 1)]


def ticks_across_a_step(harness) -> None:
    harness.dispatcher.tick()
    harness.clock.now += HOUR
    harness.dispatcher.tick()


def test_a_delivery_left_sending_is_taken_over_by_one_dispatcher(harness):
    left_sending_by_a_crash(harness)
    [left] = harness.store.deliveries()
    harness.let_every_try_end()
    assert harness.store.claim_sending(left, harness.clock(), harness.dispatcher.claim_watch.mark()) is not None
    # A second dispatcher that read it too:
    assert harness.store.claim_sending(left, harness.clock(), harness.dispatcher.claim_watch.mark()) is None


def test_an_escalation_is_moved_on_once_and_not_after_an_acknowledgement(harness):
    alert = harness.dispatcher.handle(notice_from_event(danger_event()))
    store, due_at = harness.store, alert.next_escalation_at
    assert store.set_escalation(alert.id, due_at, {"crowd": (1, due_at)}, due_at + 60)
    assert not store.set_escalation(alert.id, due_at, {"crowd": (1, due_at)}, due_at + 60)  # another dispatcher's
    store.acknowledge(str(alert.id), "tester", "", due_at)
    assert not store.set_escalation(alert.id, due_at + 60, {"crowd": (2, due_at + 60)}, None)
    assert store.get_alert(alert.alert_id).escalation_step == 1


# -- secrets as shells and files leave them ----------------------------------------------------------------------------

def test_secrets_from_the_environment_lose_the_newline_around_them(tmp_path, twilio, webhook, monkeypatch):
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN + "\n")
    monkeypatch.setenv("OPS_TOKEN", "s3cret-token\n")
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    section["channels"][1]["bearer_token_env"] = "OPS_TOKEN"
    section["routes"][0]["broadcast"] = ["ops"]
    harness = make_dispatcher(make_config(tmp_path, section))
    harness.dispatcher.handle(notice_from_event(danger_event()))
    assert [d.status for d in harness.store.deliveries()] == [SENT, SENT]
    assert webhook.headers[0]["Authorization"] == "Bearer s3cret-token" and len(twilio.messages) == 1


def test_a_secret_with_a_control_character_fails_at_start_naming_the_variable_not_the_value(tmp_path, twilio,
                                                                                             webhook, monkeypatch):
    monkeypatch.setenv("OPS_TOKEN", "s3cret\rtoken")
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    section["channels"][1]["bearer_token_env"] = "OPS_TOKEN"
    with pytest.raises(ConfigError, match="^alert channel ops: environment variable OPS_TOKEN holds a control "
                                         "character$"):
        make_dispatcher(make_config(tmp_path, section))


@pytest.mark.parametrize("variable, channel", [("OPS_TOKEN", "ops"), ("TWILIO_AUTH_TOKEN", "sms")])
def test_a_secret_an_http_header_cannot_carry_fails_at_start_naming_the_variable_not_the_value(
        tmp_path, twilio, webhook, monkeypatch, variable, channel):
    monkeypatch.setenv("OPS_TOKEN", "s3cret-token")
    monkeypatch.setenv(variable, "s3cret\u2019token")  # a typographic quote pasted with it
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    section["channels"][1]["bearer_token_env"] = "OPS_TOKEN"
    with pytest.raises(ConfigError, match=f"^alert channel {channel}: environment variable {variable} holds a "
                                          "character an HTTP header cannot carry") as error:
        make_dispatcher(make_config(tmp_path, section))
    assert "s3cret" not in str(error.value)


def test_redact_drops_a_bearer_token_quoted_from_a_header():
    text = "InvalidHeader: Invalid return character(s) in header value: 'Bearer s3cret-token\\n'"
    assert redact(text) == "InvalidHeader: Invalid return character(s) in header value: 'Bearer <token>'"


# -- a crash in the middle of a retry ----------------------------------------------------------------------------------

def test_a_retry_cut_short_by_a_crash_waits_the_listing_lag_from_that_try(tmp_path, twilio, webhook):
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")
    section["channels"][0]["retry"] = {"max_attempts": 3, "backoff_initial_s": 20, "timeout_s": 5}
    section["channels"][0]["listing_lag_s"] = 60
    config = make_config(tmp_path, section)
    before = make_dispatcher(config)
    twilio.script = [Scripted(429, 20429, "Too Many Requests")]
    alert = before.dispatcher.handle(notice_from_event(danger_event()))
    twilio.listing_lag_s = 3600  # Twilio's log will not show the retry in time
    # 20 s later the retry goes out, and the process dies before the answer is recorded.
    [row] = before.store.deliveries()
    retried_at = before.clock() + 20
    before.store.start_attempt(row, retried_at, before.dispatcher.claim_watch.mark())
    message = Message(to_message(alert), alert.id, "test", before.dispatcher.contacts["duty"], row.key)
    assert before.dispatcher.channels["sms"].send(message, row.body).delivered
    restarted = make_dispatcher(config)
    longest_s = longest_try_s(restarted.dispatcher.channels["sms"].retry) + 1  # what let_every_try_end lets pass
    restarted.clock.now = retried_at + 50 - longest_s
    restarted.let_every_try_end()  # the retry is over; 70 s after the first try, 50 s after the retry
    restarted.dispatcher.resume_pending()
    assert twilio.posts() == 2  # not sent a third time while the listing may still lag behind the retry
    assert [d.status for d in restarted.store.deliveries()] == [SENDING]


def test_a_store_from_before_tries_were_timed_opens_and_settles_its_pending_delivery(tmp_path, harness, twilio,
                                                                                      webhook):
    left_sending_by_a_crash(harness)
    harness.store.close()
    with sqlite3.connect(tmp_path / "incidents.db") as database:
        database.execute("ALTER TABLE deliveries DROP COLUMN tried_at")
    database.close()
    reopened = make_dispatcher(make_config(tmp_path, alerting_section(
        twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db")))
    reopened.clock.now = harness.clock.now + 30  # with the longest try let pass below: past the listing_lag_s of 30 s
    reopened.let_every_try_end()
    reopened.dispatcher.resume_pending()
    assert [d.status for d in reopened.store.deliveries()] == [SENT] and len(twilio.messages) == 1
    reopened.store.close()


def test_an_escalation_stored_before_routes_escalated_apart_goes_on_after_an_upgrade(tmp_path, harness, twilio):
    harness.dispatcher.handle(notice_from_event(danger_event()))
    harness.store.close()
    with sqlite3.connect(tmp_path / "incidents.db") as database:
        database.execute("ALTER TABLE alerts DROP COLUMN route_steps")
    database.close()
    reopened = make_dispatcher(make_config(tmp_path, alerting_section(
        twilio.url, "http://127.0.0.1:1/hook", f"sqlite:///{tmp_path}/incidents.db")))
    reopened.clock.now = harness.clock.now + 61
    reopened.dispatcher.tick()
    reopened.dispatcher.tick()
    assert [message["to"] for message in twilio.messages] == [DUTY_PHONE, CHIEF_PHONE]
    reopened.store.close()


def test_a_store_from_before_a_not_null_column_gains_it_with_its_default(tmp_path, harness):
    left_sending_by_a_crash(harness)
    harness.store.close()
    with sqlite3.connect(tmp_path / "incidents.db") as database:
        database.execute("ALTER TABLE deliveries DROP COLUMN reconcile_first")
    database.close()
    reopened = IncidentStore(f"sqlite:///{tmp_path}/incidents.db")
    assert [d.reconcile_first for d in reopened.deliveries()] == [False]
    reopened.close()
    with sqlite3.connect(tmp_path / "incidents.db") as database:
        columns = {name: not_null for _, name, _, not_null, _, _ in database.execute("PRAGMA table_info(deliveries)")}
    database.close()
    assert columns["reconcile_first"] == 1


def test_a_store_lacking_a_not_null_column_without_a_default_is_refused_naming_it(tmp_path, harness):
    harness.store.close()
    with sqlite3.connect(tmp_path / "incidents.db") as database:
        database.execute("ALTER TABLE deliveries DROP COLUMN body")
    database.close()
    with pytest.raises(SystemExit, match=r"^incident store: column deliveries\.body is missing and NOT NULL without "
                                         r"a default"):
        IncidentStore(f"sqlite:///{tmp_path}/incidents.db")

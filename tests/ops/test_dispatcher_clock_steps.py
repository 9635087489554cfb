"""The dispatcher when its host's wall clock steps: due times are stored as wall times (a restart keeps them), yet an
escalation, a retry, a crash's leftover or a cooldown must not wait for as long as the clock went back, and a step
forward must neither page anyone twice nor skip a contact."""
import logging

from schemas import EventState
from sinks.alerts.dispatcher import CLOCK_STEP_MARGIN_S, DeliveryTries, longest_try_s, step_back
from sinks.alerts.notice import notice_from_event
from sinks.alerts.store import SENDING, SENT
from tests.ops.fakes import Scripted
from tests.ops.helpers import (
    CHIEF_PHONE,
    DUTY_PHONE,
    OPS1_PHONE,
    alerting_section,
    danger_event,
    left_sending_by_a_crash,
    make_config,
    make_dispatcher,
)

HOUR = 3600.0


def paged(twilio) -> list[str]:
    return [message["to"] for message in twilio.messages]


def ticks(harness, count: int = 2) -> None:
    """The dispatcher's ticks: an escalation stores its step on one, and pages on it or the next."""
    for _ in range(count):
        harness.dispatcher.tick()


def test_an_escalation_falls_due_after_its_wait_when_the_clock_is_set_back_before_it(harness, twilio, caplog):
    harness.dispatcher.handle(notice_from_event(danger_event()))
    harness.clock.now += 30
    ticks(harness)
    harness.clock.now -= HOUR  # NTP corrects a host that ran an hour ahead
    with caplog.at_level(logging.WARNING, logger="sinks.alerts.dispatcher"):
        ticks(harness)
        assert paged(twilio) == [DUTY_PHONE]  # 30 s of the 60 s wait have passed
        harness.clock.now += 31
        ticks(harness)
    assert paged(twilio) == [DUTY_PHONE, CHIEF_PHONE]
    assert [record.getMessage() for record in caplog.records if "clock went back" in record.getMessage()] == [
        "the clock went back 3600 s: escalations, retries and pending deliveries moved back with it"]


class HeldTries(DeliveryTries):
    """Delivery tries queued and held, as behind a channel's busy threads, until the test runs them."""

    def __init__(self):
        super().__init__(0)
        self.held = []

    def run(self, delivery, work) -> None:
        self.held.append((delivery, work))

    def run_held(self) -> None:
        held, self.held = self.held, []
        for delivery, work in held:
            super().run(delivery, work)


def test_a_first_sms_queued_before_the_clock_is_set_back_goes_out_when_its_try_runs(tmp_path, twilio, webhook):
    config = make_config(tmp_path, alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db"))
    harness = make_dispatcher(config, tries=HeldTries())
    harness.dispatcher.handle(notice_from_event(danger_event()))
    harness.clock.now -= HOUR
    harness.dispatcher.tick()  # moves the queued delivery's times back before its try runs
    harness.dispatcher.tries.run_held()
    assert paged(twilio) == [DUTY_PHONE]
    assert [(d.status, d.attempt_count) for d in harness.store.deliveries()] == [(SENT, 1)]
    harness.store.close()


def test_a_retry_falls_due_after_its_back_off_when_the_clock_is_set_back(harness, twilio):
    twilio.script = [Scripted(503, 20503, "Service unavailable")]
    harness.dispatcher.handle(notice_from_event(danger_event()))
    harness.clock.now -= HOUR
    harness.dispatcher.tick()
    harness.retry_after(0.01)  # the back-off
    assert len(twilio.messages) == 1 and twilio.posts() == 2
    assert [delivery.status for delivery in harness.store.deliveries()] == [SENT]


def test_an_sms_sent_before_a_crash_is_found_not_sent_again_after_the_clock_was_corrected_back(tmp_path, harness,
                                                                                                twilio, webhook):
    config = make_config(tmp_path, alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db"))
    harness.clock.now += HOUR  # the host runs an hour ahead of Twilio
    harness.dispatcher.tick()
    _, message, body = left_sending_by_a_crash(harness)
    [row] = harness.store.deliveries()
    harness.store.start_attempt(row, harness.clock(), harness.dispatcher.claim_watch.mark())
    assert harness.dispatcher.channels["sms"].send(message, body).delivered  # then the process died
    restarted = make_dispatcher(config)  # on a host whose clock NTP set right meanwhile
    restarted.let_every_try_end()
    restarted.dispatcher.tick()
    assert twilio.posts() == 1  # a try may still be under way, as far as the restarted dispatcher can tell
    restarted.let_every_try_end()
    restarted.dispatcher.tick()
    assert twilio.posts() == 1 and ("GET", 200) in twilio.requests
    assert [(d.status, d.provider_id) for d in restarted.store.deliveries()] == [(SENT, twilio.messages[0]["sid"])]
    restarted.store.close()


def test_a_crash_leftover_is_resumed_after_the_clock_went_back_while_no_dispatcher_ran(tmp_path, harness, twilio,
                                                                                      webhook):
    config = make_config(tmp_path, alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db"))
    harness.dispatcher.tick()
    _, _, body = left_sending_by_a_crash(harness)
    restarted = make_dispatcher(config)
    restarted.clock.now = harness.clock.now - HOUR
    restarted.dispatcher.tick()
    assert twilio.messages == []
    restarted.let_every_try_end()
    restarted.dispatcher.tick()
    assert [m["body"] for m in twilio.messages] == [body]
    restarted.store.close()


def test_dispatchers_sharing_a_store_move_its_due_times_back_once_for_one_step(tmp_path, twilio, webhook):
    config = make_config(tmp_path, alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db"))
    first, second = make_dispatcher(config), make_dispatcher(config)
    second.clock.now = first.clock.now
    first.dispatcher.handle(notice_from_event(danger_event()))
    for harness in (first, second):
        harness.dispatcher.tick()
        harness.clock.now -= HOUR  # one host's clock: both dispatchers notice the step
    for seconds in (30, 30):
        for harness in (first, second):
            ticks(harness)
        assert paged(twilio) == [DUTY_PHONE]  # not early either
        for harness in (first, second):
            harness.clock.now += seconds
    for harness in (first, second):
        ticks(harness)
    assert paged(twilio) == [DUTY_PHONE, CHIEF_PHONE]
    for harness in (first, second):
        harness.store.close()


def test_a_cooldown_ends_on_time_when_the_clock_is_set_back_during_it(harness, twilio):
    alert = harness.dispatcher.handle(notice_from_event(danger_event()))
    harness.store.acknowledge(str(alert.id), "tester", "", harness.clock())
    harness.dispatcher.handle(notice_from_event(danger_event(state=EventState.RESOLVED, at=1_800_000_060.0)))
    harness.clock.now += 60
    harness.dispatcher.tick()
    harness.clock.now -= HOUR
    harness.dispatcher.tick()
    harness.clock.now += 541  # the 600 s cooldown is over
    harness.dispatcher.handle(notice_from_event(danger_event("plaza/north/risk-2", at=1_800_000_700.0)))
    assert paged(twilio) == [DUTY_PHONE, DUTY_PHONE]


def three_contacts(tmp_path, twilio, webhook):
    section = alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/three.db")
    section["contacts"].append({"id": "director", "phone": OPS1_PHONE})
    section["routes"][0]["escalation"] = ["duty", "chief", "director"]
    return make_dispatcher(make_config(tmp_path, section))


def test_a_clock_stepped_forward_escalates_one_contact_at_a_time_and_pages_nobody_twice(tmp_path, twilio, webhook):
    harness = three_contacts(tmp_path, twilio, webhook)
    notice = notice_from_event(danger_event())
    harness.dispatcher.handle(notice)
    harness.clock.now += HOUR
    ticks(harness, 4)
    harness.dispatcher.handle(notice)  # the event redelivered
    assert paged(twilio) == [DUTY_PHONE, CHIEF_PHONE]
    harness.clock.now += 59
    ticks(harness)
    assert paged(twilio) == [DUTY_PHONE, CHIEF_PHONE]
    harness.clock.now += 2
    ticks(harness)
    assert paged(twilio) == [DUTY_PHONE, CHIEF_PHONE, OPS1_PHONE]
    harness.store.close()


def test_a_clock_stepped_forward_and_corrected_back_holds_the_next_escalation_no_longer_than_its_wait(
        tmp_path, twilio, webhook):
    harness = three_contacts(tmp_path, twilio, webhook)
    harness.dispatcher.handle(notice_from_event(danger_event()))
    harness.clock.now += HOUR  # the step forward pages the chief at once
    ticks(harness)
    harness.clock.now -= HOUR  # and is corrected
    ticks(harness)
    assert paged(twilio) == [DUTY_PHONE, CHIEF_PHONE]
    harness.clock.now += 61
    ticks(harness)
    assert paged(twilio) == [DUTY_PHONE, CHIEF_PHONE, OPS1_PHONE]
    harness.store.close()


def test_a_clock_read_a_little_earlier_than_before_is_no_step():
    assert step_back(1_000.0, 1_000.0 - CLOCK_STEP_MARGIN_S) is None
    assert step_back(1_000.0, 1_001.0) is None
    assert step_back(1_000.0, 1_000.0 - HOUR) == HOUR


def test_a_clock_stepped_back_does_not_start_again_the_wait_for_a_crashs_leftover(tmp_path, twilio, webhook):
    # A step back moves every claim's time back by the step; the claim is still the one the dispatcher has known.
    config = make_config(tmp_path, alerting_section(twilio.url, webhook.url, f"sqlite:///{tmp_path}/incidents.db"))
    left_sending_by_a_crash(make_dispatcher(config))
    watcher = make_dispatcher(config)
    longest_s = longest_try_s(watcher.dispatcher.channels["sms"].retry)
    watcher.dispatcher.tick()  # the leftover's claim, known from now
    watcher.monotonic.now += longest_s - 5
    watcher.clock.now -= 60  # NTP steps the host back a minute
    watcher.dispatcher.tick()
    assert [d.status for d in watcher.store.deliveries()] == [SENDING]
    watcher.monotonic.now += 10  # known for longer than a try lasts, the step between
    watcher.dispatcher.tick()
    assert [d.status for d in watcher.store.deliveries()] == [SENT] and twilio.posts() == 1
    watcher.store.close()

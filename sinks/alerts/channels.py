"""Delivery channels: Twilio SMS, HTTP webhook and a local sound alarm, each one attempt at a time.

Retrying, rate limiting and recording are the dispatcher's; a channel says per attempt whether it worked, whether
trying again could help (429 and 5xx can, other 4xx and redirects cannot) and how long the receiver asked it to wait
before trying again (Retry-After). Error texts are redacted (sinks.alerts.redact): they are logged and stored, and
client errors quote URLs with the Twilio Account SID or a webhook's token.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Callable, Protocol
from urllib.parse import SplitResult, urljoin, urlsplit, urlunsplit

import requests
import urllib3
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client as TwilioClient

from infra.deadline import Deadline
from infra.process import start_child
from infra.redaction import shown
from schemas import Alert
from schemas.settings.alerting import (
    TWILIO_API,
    WEBHOOK_URL_PATTERN,
    ContactConfig,
    RetryConfig,
    SmsChannelConfig,
    SoundChannelConfig,
    WebhookChannelConfig,
)
from schemas.settings.base import DEFAULT_PORTS, env_values
from schemas.settings.config import ConfigError
from sinks.alerts.deadline_http import PerRequestDeadlineSession, session_until
from sinks.alerts.redact import describe_error, redact
from sinks.alerts.sms_text import fit_sms

log = logging.getLogger(__name__)
# Answers that may follow a message Twilio did create (it failed after taking the request, or a gateway gave up
# waiting): the message log is asked before sending again. 503 and 429 are refusals: nothing was created.
AMBIGUOUS_STATUSES = frozenset({500, 502, 504})
# Twilio's clock against ours, when a listed message is compared with the time its try began.
CLOCK_SKEW_S = 60.0
# Reconciling reads the recipient's messages newest first, page by page, back to the try. More pages than this (a
# storm of other messages to the same person) cannot be read in time: the listing counts as unreadable.
LISTING_PAGE_SIZE = 50
LISTING_MAX_PAGES = 20
# How many 307 and 308 redirects one webhook try follows: an http URL moved to https, then a moved path, and one to
# spare. A longer chain (or a loop) is a URL to correct.
MAX_WEBHOOK_REDIRECTS = 3
# How much of a webhook's answer is read: the start of an error's text (its first 200 characters are kept). The rest,
# however large, is never waited for.
ANSWER_MAX_BYTES = 1024


@dataclass(frozen=True)
class Attempt:
    delivered: bool
    retryable: bool = False
    ambiguous: bool = False  # the request may have reached the provider (read timeout, reset): reconcile first
    provider_id: str | None = None
    status_code: int | None = None
    error: str | None = None
    retry_after_s: float | None = None  # the wait the answer asked for before another try (Retry-After)


@dataclass(frozen=True)
class Message:
    """What one delivery sends: the alert, its short reference for acknowledging, the recipient if any."""

    alert: Alert
    ref: int
    site: str
    contact: ContactConfig | None
    key: str  # idempotency key of the delivery


class Channel(Protocol):
    id: str
    retry: RetryConfig

    def accepts(self, contact: ContactConfig | None) -> str | None:
        """None when this channel can reach the contact, else why not."""

    def render(self, message: Message) -> str:
        """The text recorded with the delivery before it is sent (used again to reconcile)."""

    def send(self, message: Message, body: str) -> Attempt: ...

    def reconcile(self, message: Message, body: str, sent_since: float, now: float) -> str | None:
        """After a crash mid-send or a lost reply: the provider id when a try made since `sent_since` is known to
        have gone out, None when it is known not to have; raises ReconcileError while that cannot be told yet."""


def delivery_tag(key: str) -> str:
    """A short reference unique to one delivery, put in the text it sends so the provider's log can be searched
    for it: it survives text added before it (Twilio trial accounts prefix every body) and character substitution
    (hex digits are in every encoding). Six digits: it is only compared within one recipient's messages since the
    try, and every character costs SMS length."""
    return "#" + hashlib.sha256(key.encode()).hexdigest()[:6]


def retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


class RateLimiter:
    """At most `per_second` sends, spaced evenly; thread-safe."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.interval_s = 1.0 / per_second
        self.clock, self.sleep = clock, sleep
        self.next_slot = 0.0
        self.lock = threading.Lock()

    def wait(self) -> float:
        with self.lock:
            now = self.clock()
            delay = max(0.0, self.next_slot - now)
            self.next_slot = max(now, self.next_slot) + self.interval_s
        if delay:
            self.sleep(delay)
        return delay


def required_env(name: str, channel_id: str) -> str:
    return env_values([name], f"alert channel {channel_id}")[name]


def required_header_env(name: str, channel_id: str) -> str:
    """A secret sent in an HTTP header (a bearer token, basic auth): HTTP headers carry Latin-1 only, and a character
    beyond it (a typographic quote pasted with the token) would fail every try, at the start rather than never."""
    value = required_env(name, channel_id)
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:  # not chained: its text quotes the value
        raise ConfigError(f"alert channel {channel_id}: environment variable {name} holds a character an HTTP header "
                          "cannot carry (only Latin-1; a typographic quote or dash pasted with it?)") from None
    return value


def asked_wait_s(response: requests.Response) -> float | None:
    """The wait before another try that an answer asks for in its Retry-After: seconds, or an HTTP date, counted from
    the answer's own Date when it has one so that the receiver's clock and ours need not agree; None without one that
    can be read."""
    value = response.headers.get("Retry-After", "").strip()
    if value.isascii() and value.isdigit():
        return float(value)
    until = http_date(value)
    if until is None:
        return None
    return max(0.0, until - (http_date(response.headers.get("Date", "")) or time.time()))


def http_date(value: str) -> float | None:
    """An HTTP date (`Wed, 21 Oct 2026 07:28:00 GMT`) as unix seconds; None for anything else."""
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()


class DeadlineHttpClient(TwilioHttpClient):
    """The Twilio library's requests, each complete within the timeout, its answer read: a socket timeout alone bounds
    each read, and an answer trickling in a byte at a time would hold the try as long as it kept coming.

    A custom http_client is the library's documented extension point; paths, form fields and basic auth stay
    exactly as the library builds them."""

    def __init__(self, timeout: float):
        super().__init__(pool_connections=False, timeout=timeout)
        self.session = PerRequestDeadlineSession()


class BaseUrlHttpClient(DeadlineHttpClient):
    """Sends the Twilio library's requests to another scheme and host (a local test server, an egress proxy)."""

    def __init__(self, base_url: str, timeout: float):
        super().__init__(timeout=timeout)
        self.base = urlsplit(base_url)

    def request(self, method, url, *args, **kwargs):
        parts = urlsplit(url)
        url = urlunsplit((self.base.scheme, self.base.netloc, parts.path, parts.query, parts.fragment))
        return super().request(method, url, *args, **kwargs)


def keep_request_lines_out_of_logs() -> None:
    """urllib3 logs each request line at DEBUG: its path holds Twilio's Account SID, or a webhook's token."""
    logging.getLogger("urllib3.connectionpool").setLevel(logging.INFO)


class TwilioSmsChannel:
    def __init__(self, config: SmsChannelConfig):
        self.id = config.id
        self.config = config
        self.retry = config.retry
        env_values([config.account_sid_env, config.auth_token_env, config.from_number_env],
                   f"alert channel {config.id}")
        self.from_number = required_env(config.from_number_env, config.id)
        http_client = (DeadlineHttpClient(config.retry.timeout_s) if config.api_base_url == TWILIO_API
                       else BaseUrlHttpClient(config.api_base_url, config.retry.timeout_s))
        # The library logs query strings (phone numbers) at INFO; recipients are personal data.
        logging.getLogger("twilio.http_client").setLevel(logging.WARNING)
        keep_request_lines_out_of_logs()
        self.client = TwilioClient(required_header_env(config.account_sid_env, config.id),
                                   required_header_env(config.auth_token_env, config.id), http_client=http_client)
        self.limiter = RateLimiter(config.messages_per_second)

    def accepts(self, contact: ContactConfig | None) -> str | None:
        return None if contact is not None and contact.phone else "contact has no phone number"

    def render(self, message: Message) -> str:
        alert = message.alert
        text = self.config.template.format(
            severity=alert.severity.value.upper(), title=alert.title, message=alert.message,
            camera=alert.camera_id, zone=alert.zone_id or "", ref=message.ref, site=message.site)
        return fit_sms(text, self.config.max_segments, suffix=f" {delivery_tag(message.key)}").body

    def send(self, message: Message, body: str) -> Attempt:
        self.limiter.wait()
        try:
            sent = self.client.messages.create(to=message.contact.phone, from_=self.from_number, body=body)
        except TwilioRestException as exc:
            return Attempt(False, retryable=retryable_status(exc.status), status_code=exc.status,
                           ambiguous=exc.status in AMBIGUOUS_STATUSES,
                           error=redact(f"Twilio {exc.status} (code {exc.code}): {exc.msg}"))
        except TwilioServiceException as exc:  # the RFC 9457 error format of newer Twilio APIs
            return Attempt(False, retryable=retryable_status(exc.status), status_code=exc.status,
                           ambiguous=exc.status in AMBIGUOUS_STATUSES,
                           error=redact(f"Twilio {exc.status} (code {exc.code}): {exc.title}: {exc.detail or ''}"))
        except requests.RequestException as exc:
            return Attempt(False, retryable=True, ambiguous=not isinstance(exc, requests.ConnectTimeout),
                           error=describe_error(exc))
        except (TwilioException, json.JSONDecodeError) as exc:
            # An unreadable reply to the POST (a proxy's page, a cut body): the message may exist, so reconcile.
            return Attempt(False, retryable=True, ambiguous=True, error=describe_error(exc))
        return Attempt(True, provider_id=sent.sid, status_code=201)

    def reconcile(self, message: Message, body: str, sent_since: float, now: float) -> str | None:
        """Looks for the delivery's tag in Twilio's log of messages to the contact, newest first, back to the try
        (`sent_since`); a send not listed yet counts as not sent only once the listing has had `listing_lag_s` to
        show it. A listing longer than LISTING_MAX_PAGES counts as unreadable (ReconcileError), for which the
        dispatcher prefers a rare duplicate to a silent page.

        Bounded by each message's date_created, not by the DateSent> filter: a message still queued has no
        date_sent, and the filter could hide the very message looked for."""
        tag, since = delivery_tag(message.key), sent_since - CLOCK_SKEW_S
        try:
            page = self.client.messages.page(to=message.contact.phone, from_=self.from_number,
                                             page_size=LISTING_PAGE_SIZE)
            for _ in range(LISTING_MAX_PAGES):
                reached_the_try = False
                for sent in page:
                    before_the_try = sent.date_created is not None and sent.date_created.timestamp() < since
                    if tag in (sent.body or "") and not before_the_try:
                        return sent.sid
                    reached_the_try = reached_the_try or before_the_try
                page = None if reached_the_try else page.next_page()
                if page is None:
                    break
            else:
                raise ReconcileError(f"more than {LISTING_MAX_PAGES * LISTING_PAGE_SIZE} messages to the contact "
                                     f"since the try: {tag} not found among them yet")
        except (TwilioException, requests.RequestException, json.JSONDecodeError) as exc:
            raise ReconcileError(f"cannot list Twilio messages: {describe_error(exc)}") from exc
        listed_by = sent_since + self.config.listing_lag_s
        if now < listed_by:
            raise ListingLag(f"{tag} not listed by Twilio yet; sent again only if still missing at {listed_by:.0f}",
                             listed_by)
        return None


class ReconcileError(RuntimeError):
    """The provider could not tell whether an earlier send went out; the delivery is tried again, asking first."""


class ListingLag(ReconcileError):
    """The provider's log may not show the earlier send yet; ask again at `ask_again_at` (unix seconds)."""

    def __init__(self, reason: str, ask_again_at: float):
        super().__init__(reason)
        self.ask_again_at = ask_again_at


class WebhookChannel:
    """POSTs the alert as JSON with an Idempotency-Key header, so a receiver can drop a re-send after a crash."""

    def __init__(self, config: WebhookChannelConfig):
        self.id = config.id
        self.config = config
        self.retry = config.retry
        env_values([name for name in (None if config.url else config.url_env, config.bearer_token_env) if name],
                   f"alert channel {config.id}")
        self.url = config.url or required_env(config.url_env, config.id)
        if not re.match(WEBHOOK_URL_PATTERN, self.url):  # never quoted: such a URL may hold a token
            raise ConfigError(f"alert channel {config.id}: {config.url_env} does not hold an http(s) URL with a host")
        self.headers = {"Content-Type": "application/json"}
        if config.bearer_token_env:
            self.headers["Authorization"] = f"Bearer {required_header_env(config.bearer_token_env, config.id)}"
        keep_request_lines_out_of_logs()

    def accepts(self, contact: ContactConfig | None) -> str | None:
        return None

    def render(self, message: Message) -> str:
        return f"{message.alert.title}: {message.alert.message}"

    def send(self, message: Message, body: str) -> Attempt:
        """One POST. A 307 or 308 (which keep the method and the body) is followed to the same host, by the same
        scheme or from http to https, at most MAX_WEBHOOK_REDIRECTS times, all within the try's timeout_s. Any other
        redirect is not followed: requests would follow a 301, 302 or 303 with a GET without the alert and take that
        GET's answer for the delivery's, and another host (or http after https) must never get the bearer token.
        Such a redirect, or one more than are followed, is a failure that trying again cannot mend (the url needs
        changing), naming where it points. The try ends at its deadline, however slowly the receiver answers: a
        socket timeout alone bounds each read, and an answer trickling in a byte at a time would hold the delivery,
        and the contact's next channel, as long as it kept coming."""
        payload = {**message.alert.model_dump(mode="json"), "ref": message.ref, "site": message.site, "text": body,
                   "contact": message.contact.model_dump(mode="json") if message.contact else None}
        headers = {**self.headers, "Idempotency-Key": message.key}
        url, redirects = self.url, 0
        try:
            # One try's deadline, however many answers it takes.
            with session_until(Deadline(self.config.retry.timeout_s)) as session:
                while True:
                    response = session.post(url, json=payload, headers=headers, allow_redirects=False, stream=True)
                    with response:  # closed with its body unread: only an error's first bytes are of use
                        text = answer_start(response) if response.status_code >= 400 else ""
                    status = response.status_code
                    target = same_host_target(url, response.headers.get("Location")) if status in (307, 308) else None
                    if target is None or redirects == MAX_WEBHOOK_REDIRECTS:
                        break
                    url, redirects = target, redirects + 1
        except requests.RequestException as exc:
            return Attempt(False, retryable=True, error=describe_error(exc))
        if 200 <= status < 300:
            return Attempt(True, status_code=status)
        if 300 <= status < 400:
            followed = ", which is not followed" if target is None else \
                f" after {redirects} redirects, as many as are followed"
            return Attempt(False, status_code=status, error=f"HTTP {status}: redirected to "
                           f"{redirect_target(url, response.headers.get('Location'))}{followed}: give the channel "
                           "the URL the webhook has now")
        return Attempt(False, retryable=retryable_status(status), status_code=status,
                       retry_after_s=asked_wait_s(response), error=redact(f"HTTP {status}: {text[:200]}"))

    def reconcile(self, message: Message, body: str, sent_since: float, now: float) -> str | None:
        return None  # send again: the Idempotency-Key lets the receiver drop it


def answer_start(response: requests.Response) -> str:
    """The first ANSWER_MAX_BYTES of an answer's body, as far as they arrive before the try's deadline (session_until
    cuts a body short there): a receiver sending an endless or trickling body would otherwise hold the try, and the
    contact's next channel, as long as it kept sending."""
    start = b""
    try:
        while len(start) < ANSWER_MAX_BYTES:
            piece = response.raw.read1(ANSWER_MAX_BYTES - len(start), decode_content=True)
            if not piece:
                break
            start += piece
    except (urllib3.exceptions.HTTPError, OSError):
        pass  # the answer broke off: its status says what matters, its text is what came
    return start.decode("utf-8", errors="replace")


def same_host_target(url: str, location: str | None) -> str | None:
    """The URL a redirect from `url` points to, where the webhook's headers (its bearer token) may go: the same host
    and port by the same scheme, or the same host from http to https (on any port: https has its own); None
    elsewhere, or without a Location that can be read. Another port on the host may be another service."""
    source, target = urlsplit(url), _redirected_to(url, location)
    if target is None or target.hostname != source.hostname:
        return None
    if (source.scheme, target.scheme) == ("http", "https"):
        return target.geturl()
    same_port = _port_of(target) == _port_of(source)
    return target.geturl() if target.scheme == source.scheme and same_port else None


def _port_of(url: SplitResult) -> int | None:
    """The URL's port, its scheme's default where it names none; None where the port cannot be read."""
    try:
        return url.port or DEFAULT_PORTS.get(url.scheme)
    except ValueError:
        return None


def redirect_target(url: str, location: str | None) -> str:
    """Where a redirect from `url` points, as far as an error text may say it: its scheme and host (an http URL moved
    to https, another host), never its credentials, path or query, where a token may lie."""
    if not location:
        return "no Location"
    target = _redirected_to(url, location)
    if target is None:
        return "an address that cannot be read"
    return shown(urlunsplit((target.scheme, target.netloc, "", "", ""))) + "/<path>"


def _redirected_to(url: str, location: str | None) -> SplitResult | None:
    """A redirect's Location read against the URL it answered; None without one, or where it cannot be read (a
    malformed address)."""
    if not location:
        return None
    try:
        return urlsplit(urljoin(url, location))
    except ValueError:
        return None


class SoundChannel:
    """Plays the configured file with the first player installed; no audio is a warning, never a crash."""

    retry = RetryConfig(max_attempts=1)

    def __init__(self, config: SoundChannelConfig, resolve_path: Callable[[str], str]):
        self.id = config.id
        self.file = resolve_path(config.file)
        if not os.path.isfile(self.file):  # an alarm that would stay silent until the night it is needed
            raise ConfigError(f"alert channel {config.id}: sound file {self.file} does not exist")
        self.players = config.players
        self.playing: list[subprocess.Popen] = []

    def accepts(self, contact: ContactConfig | None) -> str | None:
        return None

    def render(self, message: Message) -> str:
        return self.file

    def send(self, message: Message, body: str) -> Attempt:
        self.playing = [process for process in self.playing if process.poll() is None]  # reap finished players
        if not os.path.exists(self.file):
            log.warning("sound alarm: file %s does not exist", self.file)
            return Attempt(False, error=f"sound file {self.file} does not exist")
        for player in self.players:
            if shutil.which(player[0]) is None:
                continue
            command = [part.replace("{file}", self.file) for part in player]
            try:
                # Not waited for: an alarm may last longer than the dispatcher should block. Ended with the
                # dispatcher's process, not with the delivery thread that started it.
                self.playing.append(start_child(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL))
            except OSError as exc:
                log.warning("sound alarm: %s failed to start: %s", player[0], exc)
                continue
            return Attempt(True, provider_id=player[0])
        log.warning("sound alarm: none of %s is installed; alert %s is silent",
                    ", ".join(player[0] for player in self.players), message.alert.alert_id)
        return Attempt(False, error="no audio player installed")

    def reconcile(self, message: Message, body: str, sent_since: float, now: float) -> str | None:
        return None  # play again: a repeated alarm is harmless


def build_channels(configs, resolve_path: Callable[[str], str]) -> dict[str, Channel]:
    channels: dict[str, Channel] = {}
    for config in configs:
        if isinstance(config, SmsChannelConfig):
            channels[config.id] = TwilioSmsChannel(config)
        elif isinstance(config, WebhookChannelConfig):
            channels[config.id] = WebhookChannel(config)
        else:
            channels[config.id] = SoundChannel(config, resolve_path)
    return channels

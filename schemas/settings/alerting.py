"""Alerting configuration: contacts, channels, routing rules, escalation, cooldown and the incident store.

Secrets never appear here: channels name the environment variables that hold them (Twilio SID and token, webhook
bearer tokens), and the dispatcher reads those variables at start.
"""
from __future__ import annotations

import re
import string
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from schemas.event import Severity
from schemas.settings.base import EnvName, Frozen, Identifier, ListenHost, require_unique, worded

E164_PATTERN = worded(r"^\+[1-9][0-9]{6,14}$", "a number in international (E.164) form: '+', the country code and "
                      "the number without its leading 0, spaces or dashes, e.g. +821012345678")
HOURS_PATTERN = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-4]):([0-5][0-9])$")
WEBHOOK_URL_PATTERN = worded(r"^https?://[^/?#\s]+", "an http:// or https:// URL with a host")
TWILIO_API = "https://api.twilio.com"
TEMPLATE_FIELDS = frozenset({"severity", "title", "message", "camera", "zone", "ref", "site"})


class ContactConfig(Frozen):
    """A person on call; routes list contacts in escalation order."""

    id: Identifier
    name: str = ""
    phone: str | None = Field(default=None, pattern=E164_PATTERN,
                              description="E.164 number for SMS, e.g. +821012345678")


class RetryConfig(Frozen):
    """Tries of one delivery; retries are scheduled in the incident store, nothing waits for their back-off."""

    # The defaults keep trying for half a minute (1 + 2 + 4 + 8 + 16 s), so that a receiver restarted or a provider
    # briefly away loses no alert (five tries in 15 s gave up within an ordinary restart), and no longer: a contact's
    # next channel is tried only once these are spent.
    max_attempts: int = Field(default=6, ge=1, le=20, description="tries per delivery, the first included")
    backoff_initial_s: float = Field(default=1.0, gt=0, le=60, description="wait before the second try; doubles")
    backoff_max_s: float = Field(default=30.0, gt=0, le=600, description="longest wait between two tries")
    timeout_s: float = Field(default=10.0, gt=0, le=120,
                             description="HTTP request timeout: the longest one try holds up the other alerts")

    @model_validator(mode="after")
    def verify_backoff_bounds(self) -> "RetryConfig":
        if self.backoff_initial_s > self.backoff_max_s:
            raise ValueError("backoff_initial_s must not exceed backoff_max_s")
        return self


class SmsChannelConfig(Frozen):
    """Twilio Programmable Messaging."""

    kind: Literal["sms"]
    id: Identifier = Field(description="the name routes give for this channel")
    account_sid_env: EnvName = "TWILIO_ACCOUNT_SID"
    auth_token_env: EnvName = "TWILIO_AUTH_TOKEN"
    from_number_env: EnvName = "TWILIO_FROM_NUMBER"
    api_base_url: str = Field(default=TWILIO_API,
                              pattern=worded(r"^https?://[^/]+$", "http:// or https:// and a host, without a path"),
                              description="scheme and host of the Twilio REST API; tests point it at a local server")
    max_segments: int = Field(default=2, ge=1, le=10,
                              description="longer texts are cut to fit: 160 GSM-7 / 70 UCS-2 (Korean) chars for one")
    messages_per_second: float = Field(default=1.0, gt=0, le=100,
                                       description="sending rate limit (Twilio queues above the number's rate)")
    listing_lag_s: float = Field(default=30.0, ge=0, le=600,
                                 description="how long Twilio's message list may take to show a sent message: a send "
                                 "that may have gone out (crash, lost reply) is repeated only when the list still "
                                 "lacks it this long after the try")
    template: str = Field(default="[{severity}] {title}: {message} (ack {ref})",
                          description="SMS text; placeholders: " + ", ".join(sorted(TEMPLATE_FIELDS)))
    retry: RetryConfig = RetryConfig()

    @field_validator("template")
    @classmethod
    def verify_template(cls, template: str) -> str:
        allowed = ", ".join(sorted(TEMPLATE_FIELDS))
        try:
            # Whole names only: {title.x} or {title[0]} would fail, or print an object, only when an alert is sent.
            unknown = sorted({field for _, field, _, _ in string.Formatter().parse(template)
                              if field is not None and field not in TEMPLATE_FIELDS})
            if unknown:
                raise ValueError(", ".join(f"{{{field}}}" for field in unknown))
            template.format(**{name: "" for name in TEMPLATE_FIELDS})  # format specs, and fields nested in them
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"template placeholders must be among {allowed}: {exc}") from None
        return template


class WebhookChannelConfig(Frozen):
    """JSON POST of the alert to an HTTP endpoint (an incident system, a chat bridge)."""

    kind: Literal["webhook"]
    id: Identifier = Field(description="the name routes give for this channel")
    url: str | None = Field(default=None, pattern=WEBHOOK_URL_PATTERN, description="endpoint receiving the alert as "
                            "JSON (one of url and url_env)")
    url_env: EnvName | None = Field(default=None, description="variable holding the endpoint, for URLs that carry a "
                                    "token in their path (chat webhooks)")
    bearer_token_env: EnvName | None = Field(default=None, description="variable holding an Authorization token")
    retry: RetryConfig = RetryConfig()

    @model_validator(mode="after")
    def verify_one_url(self) -> "WebhookChannelConfig":
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give exactly one of url and url_env")
        return self


class SoundChannelConfig(Frozen):
    """An audible alarm on the operator machine."""

    kind: Literal["sound"]
    id: Identifier = Field(description="the name routes give for this channel")
    file: str = Field(min_length=1, description="sound file to play (relative to the config file)")
    players: list[list[str]] = Field(
        default_factory=lambda: [["paplay", "{file}"], ["aplay", "-q", "{file}"],
                                 ["ffplay", "-nodisp", "-autoexit", "-loglevel", "quiet", "{file}"]],
        min_length=1,
        description="commands tried in order, the first installed one plays; {file} is replaced by the path",
    )

    @field_validator("players")
    @classmethod
    def verify_players(cls, players: list[list[str]]) -> list[list[str]]:
        if any(not player or "{file}" not in player for player in players):
            raise ValueError("every player is a non-empty command with a {file} argument")
        return players


ChannelConfig = Annotated[SmsChannelConfig | WebhookChannelConfig | SoundChannelConfig, Field(discriminator="kind")]


class RouteMatch(Frozen):
    """Which incidents a route takes; an empty list matches anything."""

    severities: list[Severity] = Field(default_factory=list)
    types: list[str] = Field(default_factory=list, description="event types or Alertmanager alert names")
    cameras: list[str] = Field(default_factory=list)
    zones: list[str] = Field(default_factory=list)
    hours: str | None = Field(
        default=None, description="local time window HH:MM-HH:MM; may wrap midnight (22:00-06:00)")

    @field_validator("hours")
    @classmethod
    def verify_hours(cls, hours: str | None) -> str | None:
        if hours is not None:
            match = HOURS_PATTERN.match(hours)
            if not match or (match.group(3) == "24" and match.group(4) != "00"):
                raise ValueError("hours must look like 08:00-18:00 (24:00 allowed as an end)")
            if hours[:5] == hours[6:]:
                raise ValueError("hours start and end are the same; omit hours to match all day")
        return hours


class RouteConfig(Frozen):
    id: Identifier
    match: RouteMatch = RouteMatch()
    channels: list[str] = Field(default_factory=list,
                                description="per contact, tried in order until one delivers (e.g. sms, then webhook)")
    broadcast: list[str] = Field(default_factory=list,
                                 description="channels notified once per alert, whoever is on call (sound, webhook)")
    escalation: list[str] = Field(default_factory=list, description="contact ids; the next one is notified when the "
                                  "alert is not acknowledged within escalate_after_s")
    escalate_after_s: float = Field(default=300.0, ge=10, le=86_400,
                                    description="wait for an acknowledgement before this route's next contact; each "
                                    "route of an alert escalates after its own")
    continue_matching: bool = Field(default=False, description="also try the routes after this one when it matches")

    @model_validator(mode="after")
    def verify_has_recipients(self) -> "RouteConfig":
        if not self.broadcast and not (self.channels and self.escalation):
            raise ValueError("a route needs broadcast channels, or channels together with an escalation list")
        return self


class ReceiverConfig(Frozen):
    """The dispatcher's HTTP server: Alertmanager webhook (POST /alertmanager) and its own /metrics.

    The webhook takes only requests with `Authorization: Bearer <token>`, the token read from `token_env` at start.
    Without a token the intake is closed (every POST answered 401), and the dispatcher refuses to start on any
    address but loopback: a reachable receiver without a token could neither take Alertmanager's alerts nor be
    told apart from a forger.
    """

    host: ListenHost = "127.0.0.1"
    port: int = Field(default=9103, ge=0, le=65535, description="0 picks a free port")
    token_env: EnvName = Field(default="CITYGUARD_ALERTMANAGER_TOKEN",
                               description="variable holding the bearer token Alertmanager sends (its http_config)")
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576,
                                description="larger webhook bodies are refused with 413 before being read")
    max_alerts_per_request: int = Field(default=100, ge=1, le=10_000,
                                        description="more alerts in one webhook are refused with 413 (Alertmanager's "
                                        "max_alerts keeps below it)")
    max_connections: int = Field(default=16, ge=1, le=1024,
                                 description="connections served at once; more are answered 503 and closed")
    request_timeout_s: float = Field(default=10.0, gt=0, le=300,
                                     description="longest wait for a request's headers (then the connection is "
                                     "closed) or its whole body (then 408)")
    incident_requests_per_minute: int = Field(default=12, ge=1, le=6000,
                                              description="webhook notices of one incident accepted per minute; "
                                              "more are answered 429 (Alertmanager retries them later)")
    runbook_base_url: str | None = Field(
        default=None, max_length=200,
        pattern=worded(r"^https?://[^\s?#]+$", "an http:// or https:// URL without spaces, query or fragment"),
        description="where the runbooks are published, e.g. https://git.example.org/cityguard/blob/main/: an "
        "alert's relative runbook_url (infra/prometheus/runbooks.md#zone-stale) is sent as a link under it; unset, "
        "as the repository path")


class AlertingConfig(Frozen):
    """Where alerts go and when."""

    store_url: str = Field(default="sqlite:///var/incidents.sqlite",
                           description="SQLAlchemy URL of the incident store; relative SQLite paths are relative to "
                           "the config file (use postgresql+psycopg://... in production, password from the URL env)")
    store_url_env: EnvName = Field(default="CITYGUARD_INCIDENT_STORE_URL",
                                   description="variable that overrides store_url (keeps database passwords out)")
    timezone: str | None = Field(default=None, description="IANA zone for route hours, e.g. Asia/Seoul; unset: local")
    cooldown_s: float = Field(default=600.0, ge=0, le=86_400,
                              description="after an alert on a camera/zone/type (an Alertmanager alert: with the same "
                              "labels), no new alert of the same or lower severity for this long (stops flapping "
                              "incidents from paging again)")
    escalation_check_interval_s: float = Field(default=5.0, gt=0, le=300)
    receiver: ReceiverConfig = ReceiverConfig()
    contacts: list[ContactConfig] = Field(default_factory=list)
    channels: list[ChannelConfig] = Field(default_factory=list)
    routes: list[RouteConfig] = Field(default_factory=list, description="first match wins unless continue_matching")

    @field_validator("timezone")
    @classmethod
    def verify_timezone(cls, timezone: str | None) -> str | None:
        if timezone is not None:
            try:
                ZoneInfo(timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {timezone!r} (IANA names such as Asia/Seoul)") from None
        return timezone

    @model_validator(mode="after")
    def verify_unique_ids(self) -> "AlertingConfig":
        require_unique([contact.id for contact in self.contacts], "contact id")
        require_unique([channel.id for channel in self.channels], "channel id")
        require_unique([route.id for route in self.routes], "route id")
        return self

    @model_validator(mode="after")
    def verify_routes_reference_known_names(self) -> "AlertingConfig":
        channels = {channel.id: channel for channel in self.channels}
        contacts = {contact.id: contact for contact in self.contacts}
        for route in self.routes:
            unknown = [name for name in route.channels + route.broadcast if name not in channels]
            if unknown:
                raise ValueError(f"route {route.id}: unknown channel(s) {', '.join(unknown)}")
            unknown = [name for name in route.escalation if name not in contacts]
            if unknown:
                raise ValueError(f"route {route.id}: unknown contact(s) {', '.join(unknown)}")
            if any(channels[name].kind == "sms" for name in route.broadcast):
                raise ValueError(f"route {route.id}: an sms channel needs a contact, "
                                 "list it in channels, not broadcast")
            if any(channels[name].kind == "sms" for name in route.channels):
                phoneless = [name for name in route.escalation if contacts[name].phone is None]
                if phoneless and all(channels[name].kind == "sms" for name in route.channels):
                    raise ValueError(f"route {route.id}: contact(s) {', '.join(phoneless)} have no phone and the "
                                     "route has no other channel")
        return self

    def channel(self, channel_id: str) -> ChannelConfig:
        return next(channel for channel in self.channels if channel.id == channel_id)

    def contact(self, contact_id: str) -> ContactConfig:
        return next(contact for contact in self.contacts if contact.id == contact_id)

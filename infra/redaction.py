"""Text that is safe to log: URLs without their credentials, queries and token-like path segments, and no bearer
tokens, user:password@ pairs or Twilio Account SIDs anywhere. Every stage's log lines, tracebacks included, pass
through `RedactingFormatter`, so an exception that quotes a request (a webhook URL with a token, a camera URL with
a password, an ITS stream URL with its key) cannot put a secret in a log at any level.
"""
from __future__ import annotations

import logging
import re
import sys
import traceback
from urllib.parse import quote, unquote, urlsplit, urlunsplit

URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
URL_IN_TEXT = re.compile(r"[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.IGNORECASE)
# Access tokens in URL paths are base64 or base64url (ITS: with '+', '/' as %2F and '=') or hex; a run that long
# mixing letters and digits is rare in readable words, numeric ids and timestamps.
TOKEN_RUN = re.compile(r"[A-Za-z0-9+/=_-]{20,}|[0-9A-Fa-f]{12,}")
BEARER = re.compile(r"\bBearer\s+[^\s'\",)]+", re.IGNORECASE)  # an Authorization header quoted
# user:password@, in a URL or not; for stored error texts replaced before URLs are read, because a password may hold
# characters that end a URL there
CREDENTIALS = re.compile(r"(?<![^\s/'\"@])[^\s/'\"@:]++:[^\s/'\"@]++@")  # possessive: linear on any line
ACCOUNT_SID = re.compile(r"\bAC[0-9a-fA-F]{32}\b")  # Twilio's, part of its API paths
UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # every control character but tab and newline
# Values this process knows to be secret (keep_out_of_logs). A shorter one, or digits alone, would be masked in
# ordinary words, numbers and times, garbling the logs and giving itself away by what is missing; one holding a
# character that ends a URL's parts is masked from 4, as no parser finds its end.
MIN_KNOWN_SECRET_CHARS = 8
MIN_KNOWN_SECRET_CHARS_WITH_DELIMITER = 4
URL_DELIMITERS = set("/@:?#")
_known_secrets: tuple[str, ...] = ()  # the longest first: one may hold another


def keep_out_of_logs(secret: str) -> None:
    """Masks this value, as written and percent-encoded, wherever `shown` or `redacted` meet it from now on: a camera
    password from the environment can hold characters ('/', '@') that no URL pattern can tell from the URL around
    it."""
    long_enough = len(secret) >= (MIN_KNOWN_SECRET_CHARS_WITH_DELIMITER if URL_DELIMITERS & set(secret)
                                  else MIN_KNOWN_SECRET_CHARS)
    if long_enough and not secret.isdigit():
        global _known_secrets
        _known_secrets = tuple(sorted({*_known_secrets, secret, quote(secret, safe="")}, key=len, reverse=True))


def _without_known_secrets(text: str) -> str:
    for secret in _known_secrets:
        text = text.replace(secret, "<secret>")
    return text


def shown(source: str) -> str:
    """The source as logs, camera-status reasons and the console may show it: a URL without its user:password@, its
    query and the path segments that look like tokens (camera credentials; ITS stream URLs carry an expiring token in
    the path or the query)."""
    if not URL.match(source):
        return source
    # A password may hold a '/' or an '@', which no parser can tell from the URL's own: this process's camera
    # passwords are masked first (keep_out_of_logs).
    source = _without_known_secrets(source)
    try:
        parts = urlsplit(source)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return source.split("://", 1)[0] + "://<unparsable URL>"
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    path = "/".join("…" if token_like(segment) else segment for segment in parts.path.split("/"))
    if not netloc:  # sqlite:////var/db: urlunsplit would take the path's first slashes for an empty host's
        return f"{parts.scheme}://{path}" + ("?…" if parts.query else "")
    return urlunsplit((parts.scheme, netloc, path, "…" if parts.query else "", ""))


def token_like(segment: str) -> bool:
    """Whether a URL path segment looks like an access token: once its percent-escapes are decoded, it holds a run
    of 20 base64 characters or 12 hex digits with both letters and digits in it."""
    return any(any(char.isalpha() for char in run) and any(char.isdigit() for char in run)
               for run in TOKEN_RUN.findall(unquote(segment)))


def _shown_in_text(match: re.Match) -> str:
    url = match.group()
    bare = url.rstrip(".,;:)]")  # punctuation after a URL in a sentence ("stream broke: rtsp://host:554: ...")
    return shown(bare) + url[len(bare):]


def redacted(text: str) -> str:
    """The text with the secrets this process knows (keep_out_of_logs), bearer tokens and user:password@ pairs masked,
    every URL as `shown` shows it, and no Account SID."""
    text = URL_IN_TEXT.sub(_shown_in_text, BEARER.sub("Bearer <token>", _without_known_secrets(text)))
    return ACCOUNT_SID.sub("<account-sid>", CREDENTIALS.sub("<credentials>@", text))


class RedactingFormatter(logging.Formatter):
    """A log formatter whose whole output, message and traceback, is `redacted`, and whose message cannot start a
    line of its own: text from a request (a reviewer's name, an alert's id) could otherwise forge a log line. Its
    control characters are escaped, and the lines after its first are indented."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = UNPRINTABLE.sub(lambda match: f"\\x{ord(match.group()):02x}", record.message)
        record.message = record.message.replace("\n", "\n    ")
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        return redacted(super().format(record))


class RedactingFilter(logging.Filter):
    """Redacts each record of a logger that keeps handlers of its own (ultralytics), before they format it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redacted(record.getMessage()), None
        return True


def configure_logging(level: str | int, fmt: str) -> None:
    """logging.basicConfig with a RedactingFormatter on its stderr handler (nothing changes when the root logger
    has handlers already, as with basicConfig). urllib3 logs a request's path and query at debug level without its
    scheme, where no URL can be recognised: it logs from INFO up."""
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter(fmt))
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger("urllib3").setLevel(max(logging.INFO, logging.getLogger().level))
    logging.getLogger("ultralytics").addFilter(RedactingFilter())
    sys.excepthook = print_redacted_traceback  # --debug lets an error end the process with its traceback


def print_redacted_traceback(kind, value, trace) -> None:
    sys.stderr.write(redacted("".join(traceback.format_exception(kind, value, trace))))

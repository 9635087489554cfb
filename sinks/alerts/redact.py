"""Error text that is safe to log and to store in the incident log.

Client exceptions quote the request: urllib3's MaxRetryError names the path /2010-04-01/Accounts/<Account SID>/...,
requests errors name the full URL (a webhook URL may carry a token, a proxy URL user:password@). Only the exception
type and its message with URLs, paths, credentials, bearer tokens and Account SIDs replaced are kept.
"""
from __future__ import annotations

import re

from infra.redaction import ACCOUNT_SID, BEARER, CREDENTIALS

REDACTIONS = (
    (BEARER, "Bearer <token>"),
    (CREDENTIALS, "<credentials>@"),  # before URLs: see CREDENTIALS
    (re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\",)]+"), "<url>"),  # scheme://host/path?query
    (re.compile(r"(?<![\w.])/[^\s'\",)]*"), "<path>"),  # a request path without its host
    (ACCOUNT_SID, "<account-sid>"),  # wherever else it is quoted
)
MAX_ERROR_CHARS = 500


def redact(text: str) -> str:
    for pattern, replacement in REDACTIONS:
        text = pattern.sub(replacement, text)
    return text[:MAX_ERROR_CHARS]


def describe_error(exc: BaseException) -> str:
    """`<type>: <redacted message>`, for logs and the deliveries.error column."""
    return redact(f"{type(exc).__name__}: {exc}")

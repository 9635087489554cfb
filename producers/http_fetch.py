"""Bounded HTTP GETs for the producers: every read has a byte cap and a total deadline, and every way it can fail
(refused, DNS, timeout, HTTP status, a cut or oversized body, a malformed URL or answer) is one FetchError."""
from __future__ import annotations

import base64
import http.client
import time
import urllib.error
import urllib.request
from urllib.parse import unquote, urlsplit, urlunsplit

HTTP_SCHEMES = ("http", "https")


class FetchError(Exception):
    """A GET that gave no usable body; `status` is the HTTP status when the server answered with an error."""

    def __init__(self, reason: str, status: int | None = None, detail: str = ""):
        super().__init__(reason)
        self.reason, self.status, self.detail = reason, status, detail


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http and https only (urllib would also follow one to ftp)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlsplit(newurl).scheme.lower() not in HTTP_SCHEMES:
            raise FetchError(f"redirected to a {urlsplit(newurl).scheme or 'relative'} URL")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


def fetch(url: str, max_bytes: int, timeout_s: float, headers: dict[str, str] | None = None) -> bytes:
    """The body of an http(s) GET, at most max_bytes, complete within timeout_s; raises FetchError."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in HTTP_SCHEMES:
        raise FetchError(f"scheme {scheme or '(none)'!r} is not http or https")
    deadline = time.monotonic() + timeout_s
    try:
        with _OPENER.open(_request(url, headers or {}), timeout=timeout_s) as response:
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise FetchError(f"body of {declared} bytes exceeds the {max_bytes}-byte cap")
            chunks, size = [], 0
            while chunk := response.read1(65536):
                size += len(chunk)
                if size > max_bytes:
                    raise FetchError(f"body exceeds the {max_bytes}-byte cap")
                if time.monotonic() > deadline:
                    raise FetchError(f"body not complete within {timeout_s:g} s")
                chunks.append(chunk)
            if declared.isdigit() and size < int(declared):
                raise FetchError(f"body cut off at {size} of {declared} bytes")
            return b"".join(chunks)
    except urllib.error.HTTPError as exc:
        try:
            detail = exc.read(300).decode("utf-8", "replace").strip()
        except (OSError, http.client.HTTPException):
            detail = ""
        exc.close()
        raise FetchError(f"HTTP {exc.code}", status=exc.code, detail=detail) from None
    except FetchError:
        raise
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        # OSError covers timeouts and resets; HTTPException a cut body or a malformed status line; ValueError a URL
        # urllib cannot use. `from None`: chained texts could carry the URL and its credentials.
        raise FetchError(f"unreachable: {_failure(exc)}") from None


def _request(url: str, headers: dict[str, str]) -> urllib.request.Request:
    """The GET, with a URL's user:password@ sent as Basic authentication (urllib takes it for a port).

    The credentials go to the URL's own server only: a redirect could lead anywhere."""
    parts = urlsplit(url)
    without_credentials = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    request = urllib.request.Request(without_credentials, headers=headers)
    if "@" in parts.netloc:
        credentials = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        request.add_unredirected_header("Authorization",
                                        "Basic " + base64.b64encode(credentials.encode()).decode("ascii"))
    return request


def _failure(exc: BaseException) -> str:
    """What kept the GET from its server, without the exception's text: that can quote the URL and its credentials."""
    cause = exc.reason if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, OSError) else exc
    if isinstance(cause, OSError) and cause.strerror:
        return f"{type(cause).__name__}: {cause.strerror}"
    return type(cause).__name__

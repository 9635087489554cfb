"""Bounded HTTP GETs for the producers: every read has a byte cap and a total deadline (its host's lookup included),
and every way it can fail (refused, DNS, timeout, HTTP status, a cut or oversized body, a malformed URL or answer) is
one FetchError."""
from __future__ import annotations

import base64
import functools
import http.client
import io
import socket
import urllib.error
import urllib.request
from urllib.parse import unquote, urlsplit, urlunsplit

from infra.deadline import Deadline
from schemas.settings.capture import HTTP_SCHEMES


class FetchError(Exception):
    """A GET that gave no usable body; `status` is the HTTP status when the server answered with an error."""

    def __init__(self, reason: str, status: int | None = None, detail: str = ""):
        super().__init__(reason)
        self.reason, self.status, self.detail = reason, status, detail


class _DeadlineReader(io.RawIOBase):
    """A socket's reader whose every wait is cut to the time left: a socket timeout alone bounds each read, and a
    server trickling its status line, headers or body a byte at a time would never reach it."""

    def __init__(self, sock: socket.socket, deadline: Deadline):
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)  # holds the socket open until closed, as a response's reader must
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int | None:
        self._sock.settimeout(self._deadline.left())
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    """An answer whose status line, headers and body are all read within the deadline."""

    def __init__(self, sock: socket.socket, *args, deadline: Deadline, **kwargs):
        super().__init__(sock, *args, **kwargs)
        plain, self.fp = self.fp, io.BufferedReader(_DeadlineReader(sock, deadline))
        plain.close()


class _DeadlineConnection(http.client.HTTPConnection):
    """Looks its host up and connects within the time left, and reads its answer within the deadline."""

    def __init__(self, host: str, *, deadline: Deadline, **kwargs):
        super().__init__(host, **kwargs)
        self.deadline = deadline
        self.response_class = functools.partial(_DeadlineResponse, deadline=deadline)
        self._create_connection = self._create_connection_by_deadline  # what http.client makes its socket with

    def connect(self) -> None:
        self.timeout = self.deadline.left()  # a TLS handshake and sending the request wait at most this long too
        super().connect()

    def _create_connection_by_deadline(self, address, timeout, source_address) -> socket.socket:
        """The socket connected to `address`, made in a thread of its own and waited for until the deadline only:
        the host's lookup (socket.getaddrinfo) takes no timeout. Only the socket is made there; the connection goes on
        naming the host (the Host header, TLS's SNI and the certificate check). A socket made past the deadline is
        closed."""
        return self.deadline.call(lambda: socket.create_connection(address, timeout, source_address),
                                  socket.socket.close)


class _DeadlineHTTPSConnection(_DeadlineConnection, http.client.HTTPSConnection):
    pass


class _DeadlineHandler(urllib.request.HTTPHandler, urllib.request.HTTPSHandler):
    """Opens http and https connections bound by the request's deadline, redirects included."""

    def do_open(self, http_class, req, **http_conn_args):
        secure = issubclass(http_class, http.client.HTTPSConnection)
        bounded = _DeadlineHTTPSConnection if secure else _DeadlineConnection
        return super().do_open(functools.partial(bounded, deadline=req.deadline), req, **http_conn_args)


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http and https only (urllib would also follow one to ftp), within the first deadline."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlsplit(newurl).scheme.lower() not in HTTP_SCHEMES:
            raise FetchError(f"redirected to a {urlsplit(newurl).scheme or 'relative'} URL")
        redirected = super().redirect_request(req, fp, code, msg, headers, newurl)
        if redirected is not None:
            redirected.deadline = req.deadline
        return redirected


_OPENER = urllib.request.build_opener(_DeadlineHandler, _HttpOnlyRedirects)


def fetch(url: str, max_bytes: int, timeout_s: float, headers: dict[str, str] | None = None,
          first_bytes: bool = False) -> bytes:
    """The body of an http(s) GET, at most max_bytes, complete within timeout_s; raises FetchError. With
    `first_bytes`, a longer body is no error: its first max_bytes are asked for (a Range header) and, where the server
    sends more, cut there."""
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:  # a host in brackets that is no IP address; its text could quote the URL
        raise FetchError("not a valid URL") from None
    if scheme not in HTTP_SCHEMES:
        raise FetchError(f"scheme {scheme or '(none)'!r} is not http or https")
    if first_bytes:
        headers = {**(headers or {}), "Range": f"bytes=0-{max_bytes - 1}"}
    request = _request(url, headers or {})
    request.deadline = Deadline(timeout_s)
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes and not first_bytes:
                raise FetchError(f"body of {declared} bytes exceeds the {max_bytes}-byte cap")
            body = bytearray()
            while chunk := response.read1(65536):
                body += chunk
                if len(body) > max_bytes:
                    if first_bytes:
                        return bytes(body[:max_bytes])
                    raise FetchError(f"body exceeds the {max_bytes}-byte cap")
            if declared.isdigit() and len(body) < int(declared):
                raise FetchError(f"body cut off at {len(body)} of {declared} bytes")
            return bytes(body)
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
        if isinstance(_cause(exc), TimeoutError):
            raise FetchError(f"answer not complete within {timeout_s:g} s") from None
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
    cause = _cause(exc)
    if isinstance(cause, OSError) and cause.strerror:
        return f"{type(cause).__name__}: {cause.strerror}"
    return type(cause).__name__


def _cause(exc: BaseException) -> BaseException:
    """The error itself, or the OSError that urllib wrapped in a URLError."""
    return exc.reason if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, OSError) else exc

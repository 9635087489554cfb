"""The console's listener, with the bounds aiohttp lacks: how many connections one client address and all clients
together may hold, and how long a request's line and headers may take to arrive. Without them a client that opens
connections and sends its requests a byte at a time (slowloris) holds them for ever, and with them the file
descriptors that other operators' browsers need. (A request's body has its own deadline where it is read.) Once
all clients together hold the console's bound, a new client is admitted by closing an idle connection of the client
holding the most that has one, so that many addresses cannot lock the others out.

Each connection is handed to aiohttp's own request handler once admitted; `ConnectionGuard.middleware`, the
application's outermost, tells the connection when a request's head has arrived and when it has been handled."""
from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import logging
import struct
import termios
from collections import Counter
from collections.abc import Hashable

from aiohttp import web

from schemas.settings.console import ConsoleConfig

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5
# The floods of refusals ConnectionGuard logs: all clients over the console's bound, and closing idle connections to
# admit others; a client over its own bound is (CLIENT_FULL, client).
CONSOLE_FULL, CLIENT_FULL, MAKING_ROOM = "console full", "client full", "making room"


def refusal(reason: str) -> bytes:
    """The whole answer to a connection over a bound, written before aiohttp sees it."""
    body = f"{reason}; try again in a few seconds\n".encode()
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Retry-After: %d\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (RETRY_AFTER_S, len(body), body))


def client_of(address: str) -> str:
    """Whom a connection from `address` counts against: the address, or for IPv6 its /64, which one host or network
    commonly holds whole (each of its addresses would be a client of its own)."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return address
    if ip.version == 6 and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return address


class FloodLog:
    """Warnings about floods of refusals: one line when a flood starts, not one a refusal, until it ends: a client
    refused thousands of times would otherwise bury every other line of the log."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger
        self.flooding: set[Hashable] = set()

    def started(self, flood: Hashable, message: str, *args) -> None:
        """Logs the message (a warning) unless `flood` started before and has not ended since."""
        if flood not in self.flooding:
            self.flooding.add(flood)
            self.logger.warning(message, *args, stacklevel=2)  # the line of the refusal

    def ended(self, flood: Hashable) -> None:
        self.flooding.discard(flood)


class ConnectionGuard:
    """The connections held, per client (client_of) and in all: whether a new one is admitted."""

    def __init__(self, settings: ConsoleConfig):
        self.settings = settings
        self.held: Counter[str] = Counter()  # client -> connections it holds
        self.total = 0
        self.connections: dict[asyncio.Protocol, GuardedConnection] = {}  # aiohttp's handler -> its connection
        # A flood ends once the connections held drop below the bound again.
        self.floods = FloodLog(log)

    def admit(self, client: str) -> str | None:
        """None once the client's new connection is counted in; else what to tell the client."""
        settings = self.settings
        if self.total >= settings.max_connections and not self._make_room(client):
            self.floods.started(CONSOLE_FULL, "refusing new connections: the console holds %d connections already "
                                "(console.max_connections)", settings.max_connections)
            return "the console holds too many connections"
        if self.held[client] >= settings.max_connections_per_client:
            self.floods.started((CLIENT_FULL, client), "refusing new connections: %s holds %d connections already "
                                "(console.max_connections_per_client)", client, settings.max_connections_per_client)
            return "your address holds too many connections to the console"
        self.held[client] += 1
        self.total += 1
        return None

    def _make_room(self, client: str) -> bool:
        """Closes a connection waiting for a request of another client holding at least two more than `client`: of
        the client holding the most among those that have one waiting, the one waiting longest. Clients from many
        addresses that fill the console's bound would otherwise lock every operator out, while this way each client
        keeps its share; and a client holding the most, all of its connections busy, shields no other. A connection
        being answered, or whose answer the client has not taken yet, is never closed; one waiting for a request is
        idle or sending slowly, and a browser opens another at once."""
        least = self.held[client] + 2
        waiting = [connection for connection in self.connections.values()
                   if self.held[connection.client] >= least and connection.deadline is not None
                   and not connection.unread_bytes()]
        if not waiting:
            return False
        closed = min(waiting, key=lambda connection: (-self.held[connection.client], connection.deadline.when()))
        self.floods.started(MAKING_ROOM, "the console holds %d connections (console.max_connections): closing idle "
                            "ones of the clients holding the most, %s first with %d, to admit others", self.total,
                            closed.client, self.held[closed.client])
        closed.close_for_another()
        return True

    def release(self, client: str) -> None:
        self.total -= 1
        self.held[client] -= 1
        if not self.held[client]:
            del self.held[client]
        if self.held[client] < self.settings.max_connections_per_client:
            self.floods.ended((CLIENT_FULL, client))
        if self.total < self.settings.max_connections:
            self.floods.ended(CONSOLE_FULL)
            self.floods.ended(MAKING_ROOM)

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        connection = self.connections.get(request.protocol)
        if connection is None:  # the client left before its request was handled: nothing to time
            return await handler(request)
        connection.request_arrived()
        try:
            return await handler(request)
        finally:
            connection.await_request()


class GuardedConnection(asyncio.Protocol):
    """One client connection: refused over a bound (503, closed), else passed on to aiohttp's handler, and cut off
    when no whole request head arrives within the deadline."""

    def __init__(self, guard: ConnectionGuard, handler: asyncio.Protocol):
        self.guard = guard
        self.handler = handler
        self.transport: asyncio.Transport | None = None
        self.address: str | None = None  # None: refused, never handed on
        self.client: str | None = None  # whom it counts against (client_of); None once no longer counted
        self.deadline: asyncio.TimerHandle | None = None
        self.received = False  # bytes came since the deadline was set: a request on its way

    def connection_made(self, transport: asyncio.Transport) -> None:
        peer = transport.get_extra_info("peername")
        if peer is None:  # reset by the client before it could be named: nothing to serve
            transport.abort()
            return
        address, client = peer[0], client_of(peer[0])
        refused = self.guard.admit(client)
        if refused is not None:
            transport.write(refusal(refused))
            transport.close()
            return
        self.address, self.client, self.transport = address, client, transport
        self.guard.connections[self.handler] = self
        self.await_request()
        self.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.address is None:
            return  # refused: what it sends is dropped
        self.received = True
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self.address is None else self.handler.eof_received()

    def pause_writing(self) -> None:
        if self.address is not None:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        if self.address is not None:
            self.handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.address is None:
            return
        self.request_arrived()
        self.transport = None
        self._uncount()
        self.handler.connection_lost(exc)

    def _uncount(self) -> None:
        if self.client is not None:
            del self.guard.connections[self.handler]
            self.guard.release(self.client)
            self.client = None

    def unread_bytes(self) -> int:
        """Bytes of its answers the client has not taken: those the transport holds, and those the kernel holds
        unacknowledged, where a file sent by sendfile lies whole, and the tail of any answer."""
        sock = self.transport.get_extra_info("socket")
        try:
            in_kernel = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0] if sock else 0
        except OSError:  # not a socket the kernel can say this of
            in_kernel = 0
        return self.transport.get_write_buffer_size() + in_kernel

    def close_for_another(self) -> None:
        """Closes this connection, waiting for a request, to admit another client's (ConnectionGuard._make_room):
        no longer counted from now, as the new one is counted at once."""
        log.debug("idle connection from %s closed to admit another client", self.address)
        self.request_arrived()
        self._uncount()
        self.transport.abort()

    def await_request(self) -> None:
        """Sets the deadline for the next request's line and headers, from now (the connection's start, or the end of
        handling its previous request): a kept-alive connection left idle as long is closed too."""
        self.request_arrived()
        if self.transport is None:
            return
        self.received = False
        self.deadline = asyncio.get_running_loop().call_later(self.guard.settings.request_timeout_s, self.cut_off)

    def request_arrived(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def cut_off(self) -> None:
        self.deadline = None
        timeout_s = self.guard.settings.request_timeout_s
        # An answer left unread first: a client may well send the start of its next request while it reads one.
        if self.unread_bytes():
            log.warning("connection from %s cut off: it did not read its answer within %g s "
                        "(console.request_timeout_s)", self.address, timeout_s)
        elif self.received:
            log.warning("connection from %s cut off: its request did not arrive whole within %g s "
                        "(console.request_timeout_s)", self.address, timeout_s)
        else:
            log.debug("idle connection from %s closed after %g s", self.address, timeout_s)
        # Not close(): that would wait for the answer to drain to a client that does not read it.
        self.transport.abort()

"""The console's listener, with the bounds aiohttp lacks: how many connections one client address and all clients
together may hold, and how long a request's line and headers may take to arrive. Without them a client that opens
connections and sends its requests a byte at a time (slowloris) holds them for ever, and with them the file
descriptors that other operators' browsers need. (A request's body has its own deadline where it is read.) Once
all clients together hold the console's bound, a new client is admitted by closing an idle connection of the client
holding the most, so that many addresses cannot lock the others out.

Each connection is handed to aiohttp's own request handler once admitted; `ConnectionGuard.middleware`, the
application's outermost, tells the connection when a request's head has arrived and when it has been handled."""
from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import Counter

from aiohttp import web

from schemas.settings.console import ConsoleConfig

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5


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


class ConnectionGuard:
    """The connections held, per client (client_of) and in all: whether a new one is admitted."""

    def __init__(self, settings: ConsoleConfig):
        self.settings = settings
        self.held: Counter[str] = Counter()  # client -> connections it holds
        self.total = 0
        self.connections: dict[asyncio.Protocol, GuardedConnection] = {}  # aiohttp's handler -> its connection
        # Bounds whose refusals were logged (a client, or None for all clients): one line a flood, not one a
        # connection, until the connections held drop below the bound again.
        self.refusing: set[str | None] = set()
        self.making_room = False  # whether closing idle connections to admit others was logged, as for refusals

    def admit(self, client: str) -> str | None:
        """None once the client's new connection is counted in; else what to tell the client."""
        settings = self.settings
        if self.total >= settings.max_connections and not self._make_room(client):
            self._log_refusals(None, f"the console holds {settings.max_connections} connections already "
                                     "(console.max_connections)")
            return "the console holds too many connections"
        if self.held[client] >= settings.max_connections_per_client:
            self._log_refusals(client, f"{client} holds {settings.max_connections_per_client} connections already "
                                       "(console.max_connections_per_client)")
            return "your address holds too many connections to the console"
        self.held[client] += 1
        self.total += 1
        return None

    def _make_room(self, client: str) -> bool:
        """Closes the connection waiting longest for a request of the client holding the most, where it holds at
        least two more than `client`: clients from many addresses that fill the console's bound would otherwise
        lock every operator out, while this way each client keeps its share. A connection being answered is never
        closed; one waiting for a request is idle or sending slowly, and a browser opens another at once."""
        greediest, holds = max(self.held.items(), key=lambda item: item[1], default=(None, 0))
        if holds < self.held[client] + 2:
            return False
        waiting = [connection for connection in self.connections.values()
                   if connection.client == greediest and connection.deadline is not None
                   and not connection.transport.get_write_buffer_size()]
        if not waiting:
            return False
        if not self.making_room:
            self.making_room = True
            log.warning("the console holds %d connections (console.max_connections): closing idle ones of the "
                        "clients holding the most, %s first with %d, to admit others", self.total, greediest, holds)
        min(waiting, key=lambda connection: connection.deadline.when()).close_for_another()
        return True

    def _log_refusals(self, bound: str | None, reason: str) -> None:
        if bound not in self.refusing:
            self.refusing.add(bound)
            log.warning("refusing new connections: %s", reason)

    def release(self, client: str) -> None:
        self.total -= 1
        self.held[client] -= 1
        if not self.held[client]:
            del self.held[client]
        if self.held[client] < self.settings.max_connections_per_client:
            self.refusing.discard(client)
        if self.total < self.settings.max_connections:
            self.refusing.discard(None)
            self.making_room = False

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
        if self.received:
            log.warning("connection from %s cut off: its request did not arrive whole within %g s "
                        "(console.request_timeout_s)", self.address, timeout_s)
        elif self.transport.get_write_buffer_size():
            log.warning("connection from %s cut off: it did not read its answer within %g s "
                        "(console.request_timeout_s)", self.address, timeout_s)
        else:
            log.debug("idle connection from %s closed after %g s", self.address, timeout_s)
        # Not close(): that would wait for the answer to drain to a client that does not read it.
        self.transport.abort()

"""Wrong console tokens, per client (client_of): after a few, a client waits longer and longer before any token it
offers is checked again, so that the console is no oracle to try guesses against as fast as it answers. A client that
offers no wrong one for an hour, or gives the right one, is forgotten.

Only the tokens offered count (`?token=`, the sign-in's body, the Authorization and X-Console-Token headers): a page
signed in by its session cookie acts on, even from an address that is made to wait. A token of MIN_TOKEN_CHARS or more
(required wherever the network reaches the console) is accepted even from a client made to wait: no one guesses it, and
behind a reverse proxy, a port-forward or a container's published port every client is one address, which one
guesser (or a proxy forwarding its own Bearer header) would otherwise lock every operator out of signing in with. Its
wrong tokens are still answered 429 while the client waits, and logged once a flood. A shorter token, on a loopback
listener only, is checked only once the wait is over."""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from infra.backoff import backoff_delay
from sinks.console.connections import FloodLog

log = logging.getLogger(__name__)

FREE_WRONG_TOKENS = 5  # an operator's typing mistakes, checked at once
FIRST_WAIT_S = 1.0  # after the free ones, each wrong token doubles the wait, up to LONGEST_WAIT_S
LONGEST_WAIT_S = 15 * 60.0
FORGOTTEN_AFTER_S = 60 * 60.0  # since the client's last wrong token
CLIENTS_KEPT = 10_000  # the clients that offered one longest ago are forgotten first
WRONG, WAITING = "wrong console token", "waiting"  # FloodLog floods, with the client


@dataclass
class Guesses:
    """One client's wrong tokens since it was last forgotten."""

    count: int
    last_at: float
    until: float  # no token of the client's is checked before this time


class WrongTokens:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.clients: OrderedDict[str, Guesses] = OrderedDict()  # the client that offered one last, last
        self.floods = FloodLog(log)

    def wait_s(self, client: str) -> float:
        """How long the client must still wait before a token it offers is checked; 0: it is checked at once."""
        guesses = self._remembered(client)
        return 0.0 if guesses is None else max(0.0, guesses.until - self.clock())

    def count(self, client: str) -> None:
        """One more wrong token from the client; logged once until it is forgotten, and once when it starts to wait."""
        now = self.clock()
        guesses = self._remembered(client) or Guesses(count=0, last_at=now, until=now)
        guesses.count += 1
        guesses.last_at = now
        self.clients[client] = guesses
        self.clients.move_to_end(client)
        self.floods.started((WRONG, client), "wrong console token from %s (refused; not logged again until it has "
                            "offered none for %d min)", client, FORGOTTEN_AFTER_S // 60)
        if guesses.count >= FREE_WRONG_TOKENS:
            guesses.until = now + backoff_delay(guesses.count - FREE_WRONG_TOKENS + 1, FIRST_WAIT_S, LONGEST_WAIT_S)
            self.floods.started((WAITING, client), "%s offered %d wrong console tokens: it now waits before each "
                                "next token is checked (answered 429 meanwhile), longer after each wrong one, up to "
                                "%d min", client, guesses.count, LONGEST_WAIT_S // 60)
        while len(self.clients) > CLIENTS_KEPT:
            self._forget(next(iter(self.clients)))

    def forget(self, client: str) -> None:
        """The client gave the right token: its wrong ones before were typing mistakes."""
        if client in self.clients:
            self._forget(client)

    def _remembered(self, client: str) -> Guesses | None:
        guesses = self.clients.get(client)
        if guesses is not None and self.clock() - guesses.last_at > FORGOTTEN_AFTER_S:
            self._forget(client)
            return None
        return guesses

    def _forget(self, client: str) -> None:
        del self.clients[client]
        self.floods.ended((WRONG, client))
        self.floods.ended((WAITING, client))

"""A local HTTP server that reads each request whole, then sends its answer's status line and headers a byte at a time
(each byte well within any socket timeout), then the body: what only a total deadline stops."""
from __future__ import annotations

import socket
import threading
import time


class TricklingServer:
    """Answers every request on 127.0.0.1 with `head` a byte every `pause_s`, then `body`; `received` is set once a
    request was read whole, `head_sent` once a whole head went out."""

    def __init__(self, head: bytes, body: bytes, pause_s: float):
        self.head, self.body, self.pause_s = head, body, pause_s
        self.received = threading.Event()
        self.head_sent = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed at the end of the test
                return
            threading.Thread(target=self.answer, args=(connection,), daemon=True).start()

    def answer(self, connection: socket.socket) -> None:
        with connection, connection.makefile("rb") as request:
            length = 0
            while (line := request.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            request.read(length)
            self.received.set()
            try:
                for byte in self.head:
                    connection.sendall(bytes([byte]))
                    time.sleep(self.pause_s)
                self.head_sent.set()
                connection.sendall(self.body)
            except OSError:  # the client gave up
                pass

    def close(self) -> None:
        self.listener.close()

"""Live streams served from 127.0.0.1 for the capture benchmark and the tests: ffmpeg turns a video file into a live
HLS playlist, and a small HTTP server hands the files out under a token that can be rotated, like the tokenised URLs
of the ITS cameras. Stopping and restarting the server is an outage.
"""
from __future__ import annotations

import functools
import http.server
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from infra.broker import free_port
from infra.process import child_preexec, terminate


def start_ffmpeg(*arguments: str, log_path: Path) -> subprocess.Popen:
    binary = shutil.which("ffmpeg")
    if binary is None:
        raise RuntimeError("ffmpeg is not installed (Debian package ffmpeg; infra/setup.sh installs it)")
    with open(log_path, "ab") as log_file:
        return subprocess.Popen([binary, "-nostdin", "-loglevel", "error", *arguments], stdout=log_file,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=child_preexec)  # noqa: PLW1509 - prctl only


class HlsEncoder:
    """ffmpeg playing a video file in a loop at its natural speed into a live playlist (1 s segments, last 4 kept)."""

    def __init__(self, video: Path, directory: Path, playlist: str = "live.m3u8"):
        self.video = video
        self.directory = directory
        self.playlist = playlist
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 15) -> HlsEncoder:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = start_ffmpeg(
            "-re", "-stream_loop", "-1", "-i", str(self.video), "-an", "-c:v", "libx264", "-preset", "ultrafast",
            "-tune", "zerolatency", "-g", "10", "-f", "hls", "-hls_time", "1", "-hls_list_size", "4",
            "-hls_flags", "delete_segments+omit_endlist", str(self.directory / self.playlist),
            log_path=self.directory / "ffmpeg.log")
        deadline = time.monotonic() + timeout_s
        while self.segments_listed() < 2:  # a player needs a few segments before it can start live playback
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ffmpeg produced no HLS playlist; see {self.directory / 'ffmpeg.log'}")
            time.sleep(0.2)
        return self

    def segments_listed(self) -> int:
        try:
            return (self.directory / self.playlist).read_text().count("#EXTINF")
        except FileNotFoundError:
            return 0

    def stop(self) -> None:
        terminate(self.process, 5)


class _Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, server_token: Callable[[], str], **kwargs):
        self._token = server_token
        super().__init__(*args, **kwargs)

    def translate_path(self, path: str) -> str:
        prefix = f"/{self._token()}/"
        if not path.startswith(prefix):
            return str(Path(self.directory) / "__expired_token__")  # a 404, like an expired ITS URL
        return super().translate_path("/" + path[len(prefix):])

    def log_message(self, *args) -> None:  # one line per segment would drown the test output
        pass


class TokenFileServer:
    """Serves a directory at http://127.0.0.1:PORT/<token>/...; other tokens get 404. Stoppable and restartable."""

    def __init__(self, directory: Path, port: int = 0):
        self.directory = directory
        self.port = port or free_port()
        self.token = secrets.token_hex(8)
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{self.token}/{name}"

    def rotate_token(self) -> str:
        self.token = secrets.token_hex(8)
        return self.token

    def start(self) -> TokenFileServer:
        handler = functools.partial(_Handler, directory=str(self.directory), server_token=lambda: self.token)
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="token-file-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

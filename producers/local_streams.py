"""Live streams served from 127.0.0.1 for the capture benchmark and the tests: ffmpeg turns a video file into a live
HLS playlist (or publishes it to an RTSP server), and a small HTTP server hands the files out under a token that can
be rotated, like the tokenised URLs of the ITS cameras. Stopping and restarting the server is an outage.
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import random
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from infra.broker import free_port, wait_for_port
from infra.process import child_preexec, terminate


def _ffmpeg(*arguments: str, log_path: Path) -> subprocess.Popen:
    binary = shutil.which("ffmpeg")
    if binary is None:
        raise RuntimeError("ffmpeg is not installed (Debian package ffmpeg; infra/setup.sh installs it)")
    with open(log_path, "ab") as log_file:
        return subprocess.Popen([binary, "-nostdin", "-loglevel", "error", *arguments], stdout=log_file,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=child_preexec)  # noqa: PLW1509 - prctl only


def _stop(process: subprocess.Popen | None) -> None:
    terminate(process, 5)


class HlsEncoder:
    """ffmpeg playing a video file in a loop at its natural speed into a live playlist (1 s segments, last 4 kept)."""

    def __init__(self, video: Path, directory: Path, playlist: str = "live.m3u8"):
        self.video = video
        self.directory = directory
        self.playlist = playlist
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 15) -> HlsEncoder:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = _ffmpeg(
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
        _stop(self.process)


class RtspServer:
    """rtsp-server-perl's server (Debian package rtsp-server-perl) on 127.0.0.1 with ffmpeg publishing a looping video.

    That server only speaks RTP over UDP to its readers: set producer.rtsp_transport to udp. Each server gets its own
    block of RTP ports, so servers of two test runs on one host do not take each other's packets.
    """

    RTP_PORTS = 64  # the publisher's pair and one pair per reader's SETUP: reconnecting readers use up pairs

    def __init__(self, video: Path, work_dir: Path, path: str = "cam"):
        self.video = video
        self.work_dir = work_dir
        self.path = path
        self.client_port = free_port()
        self.source_port = free_port()
        self.rtp_start_port = free_udp_block(self.RTP_PORTS)
        self.server: subprocess.Popen | None = None
        self.publisher: subprocess.Popen | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("rtsp-server-perl") is not None and shutil.which("ffmpeg") is not None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.client_port}/{self.path}"

    def start(self, timeout_s: float = 15) -> RtspServer:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with open(self.work_dir / "rtsp-server.log", "ab") as log_file:
            self.server = subprocess.Popen(
                ["perl", "-e", _RTSP_SERVER_PROGRAM, str(self.rtp_start_port),
                 "--clientport", str(self.client_port), "--serverport", str(self.source_port),
                 "--client_listen_address", "127.0.0.1", "--source_listen_address", "127.0.0.1",
                 "--rtp_start_port", str(self.rtp_start_port)],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=child_preexec)  # noqa: PLW1509 - prctl only
        wait_for_port("127.0.0.1", self.source_port, timeout_s, self.server)
        wait_for_port("127.0.0.1", self.client_port, timeout_s, self.server)
        self.publisher = _ffmpeg(
            "-re", "-stream_loop", "-1", "-i", str(self.video), "-an", "-c:v", "libx264", "-preset", "ultrafast",
            "-tune", "zerolatency", "-g", "10", "-f", "rtsp",
            f"rtsp://127.0.0.1:{self.source_port}/{self.path}", log_path=self.work_dir / "ffmpeg-rtsp.log")
        self._wait_for_stream(timeout_s)
        return self

    def _wait_for_stream(self, timeout_s: float) -> None:
        """Until the publisher's stream is mounted: a reader asking before that gets 404."""
        request = f"DESCRIBE {self.url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n".encode()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.publisher.poll() is not None:
                raise RuntimeError(f"ffmpeg stopped publishing to the RTSP server (log: {self.work_dir})")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.client_port), 1) as sock:
                sock.settimeout(1)
                sock.sendall(request)
                if sock.recv(64).startswith(b"RTSP/1.0 200"):
                    return
            time.sleep(0.1)
        raise TimeoutError(f"no stream mounted on {self.url} within {timeout_s:.0f} s (log: {self.work_dir})")

    def stop(self) -> None:
        _stop(self.publisher)
        _stop(self.server)


# The Debian script with one change: whenever no stream is mounted (after any connection closes, such as a reader
# that got 404) the server resets its RTP port counter to the package default of 20000, whatever --rtp_start_port
# says, so every server on a host would bind the same ports. Setting the default keeps each on its own block.
_RTSP_SERVER_PROGRAM = (
    "use AnyEvent; use RTSP::Server;"
    " $RTSP::Server::RTP_START_PORT = shift @ARGV;"
    " RTSP::Server->new_with_options->listen; AnyEvent->condvar->recv;"
)


def free_udp_block(count: int, low: int = 20000, high: int = 32000) -> int:
    """An even port below the usual ephemeral range with `count` free UDP ports from it on 127.0.0.1."""
    for _ in range(200):
        start = random.randrange(low, high - count, 2)
        sockets = []
        try:
            for port in range(start, start + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no block of {count} free UDP ports between {low} and {high}")


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

"""An RTSP camera on 127.0.0.1 for the tests: rtsp-server-perl's server with ffmpeg publishing a looping video."""
from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

from infra.broker import free_port, wait_for_port
from infra.process import child_preexec, terminate
from producers.local_streams import start_ffmpeg


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
        self.publisher = start_ffmpeg(
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
        terminate(self.publisher, 5)
        terminate(self.server, 5)


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

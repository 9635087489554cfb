"""Child-process hygiene shared by everything that starts processes."""
from __future__ import annotations

import ctypes
import signal
import subprocess

_PR_SET_PDEATHSIG = 1


def child_preexec() -> None:
    """Runs in a child before exec: the kernel sends it SIGTERM when its parent dies, so nothing is orphaned."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: cleanup then relies on the parent's own shutdown path


def terminate(process: subprocess.Popen | None, timeout_s: float = 10) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within timeout_s."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

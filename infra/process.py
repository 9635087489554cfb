"""Child-process hygiene shared by everything that starts processes."""
from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1


def child_preexec() -> None:
    """Runs in a child before exec: the kernel sends it SIGTERM when its parent dies, so nothing is orphaned."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: cleanup then relies on the parent's own shutdown path

"""Benchmarks: commands that print figures (the tests never time anything)."""
from __future__ import annotations

import psutil

# The inference benchmarks measure a queued backlog, sent earlier and faster than a camera would send it: none of it
# may be skipped as stale or as over its camera's rate (processors.inference.shedding).
BACKLOG_MODEL_SETTINGS = {"max_frame_age_s": 3600.0, "camera_rate_factor": 100.0}


def cpu_seconds(process: psutil.Process) -> float:
    """User plus system CPU time the process has used so far."""
    times = process.cpu_times()
    return times.user + times.system

"""Benchmarks: commands that print figures (the tests never time anything)."""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

# The inference benchmarks measure a queued backlog, sent earlier and faster than a camera would send it: none of it
# may be skipped as stale or as over its camera's rate (processors.inference.shedding).
BACKLOG_MODEL_SETTINGS = {"max_frame_age_s": 3600.0, "camera_rate_factor": 100.0}


def refuse_single_batch(frames: int, given: str, batch: int, batch_from: str = "model.max_batch_size") -> None:
    """Refuses a backlog of `frames` (described by `given`, as the user gave it) that fits one batch of `batch`
    (where that size comes from: `batch_from`): a rate is timed from the first batch's output to the last, so a single
    batch times nothing."""
    if frames <= batch:
        raise ValueError(f"{given}: a single batch of the workers' {batch} ({batch_from}), and the rate is timed "
                         f"from the first output to the last: give more than {batch} frames in all")


def cpu_seconds(process: psutil.Process) -> float:
    """User plus system CPU time the process has used so far."""
    times = process.cpu_times()
    return times.user + times.system


@contextmanager
def log_folder(given: Path | None, prefix: str) -> Iterator[Path]:
    """The stage logs' folder: `given` (made if missing), else a temporary one, removed unless an error ends the run,
    since the error names the folder whose logs say why."""
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given
        return
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    failed = False
    try:
        yield folder
    except Exception:
        failed = True
        raise
    finally:
        if not failed:
            shutil.rmtree(folder, ignore_errors=True)

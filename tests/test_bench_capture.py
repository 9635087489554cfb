"""The capture benchmark runs the producer on threads of its own process: interrupted, it must stop them, or the
process never ends."""
from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest

from cityguard.bench.capture import bench_config, run_for
from schemas.settings.config import load_config
from tests.conftest import VTEST

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


# Alone, after the rest: sent to a pytest-xdist worker's main thread, the Ctrl-C crashed the worker in two CI runs of
# three, where the same test run in a plain pytest process has never failed.
@pytest.mark.solo
def test_an_interrupted_capture_run_stops_the_producer_threads():
    config = bench_config(load_config(DEMO), None, [{"id": "cam000", "source": str(VTEST), "fps": 5, "loop": True}],
                          "interrupted")
    threads_before = set(threading.enumerate())
    # Ctrl-C here is Python's own, whatever an earlier test in this process left behind: another SIGINT handler, or
    # the wakeup descriptor of an event loop since closed, whose number another file may hold now, and which the
    # signal would write a byte to. (Not what crashed the xdist workers: that went on with this in place.)
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.set_wakeup_fd(-1)
    try:
        with pytest.raises(KeyboardInterrupt):
            # Ctrl-C arrives in the main thread while it waits out the run. The timer starts inside the block: on a
            # busy machine the main thread may not reach the run within the second, and an interrupt before the block
            # would end the test process itself.
            threading.Timer(1.0, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT)).start()
            run_for(config, None, 60)
    finally:
        signal.signal(signal.SIGINT, handler)
    assert [thread.name for thread in set(threading.enumerate()) - threads_before if thread.is_alive()] == []

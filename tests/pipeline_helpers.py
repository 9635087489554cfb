"""Helpers for tests that run real stage processes against the test broker."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from kafka import TopicPartition

from infra.kafka import make_consumer
from infra.process import child_preexec, terminate

REPO = Path(__file__).resolve().parent.parent


class StageProcess:
    """`python -m cityguard <stage>` as a child process with its output in a log file."""

    def __init__(self, stage: str, config_path: Path, bootstrap: str, log_dir: Path, *extra: str):
        self.stage = stage
        self.log_path = log_dir / f"{stage}-{time.monotonic_ns()}.log"
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "YOLO_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cityguard", stage, "--config", str(config_path), *extra],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=child_preexec,
            )

    def log(self) -> str:
        """Everything the stage wrote: what a test looks for may be followed by any amount of shutdown logging."""
        return self.log_path.read_text(errors="replace")

    def log_tail(self) -> str:
        """The end of the log, for a failure message."""
        return self.log()[-4000:]

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self, timeout_s: float = 20) -> None:
        terminate(self.process, timeout_s)


class TopicReader:
    """Reads a topic from the beginning, without a consumer group, accumulating records."""

    def __init__(self, bootstrap: str, topic: str):
        self.consumer = make_consumer(bootstrap, None)
        partitions = self.consumer.partitions_for_topic(topic) or set()
        deadline = time.monotonic() + 10
        while not partitions and time.monotonic() < deadline:
            time.sleep(0.2)
            partitions = self.consumer.partitions_for_topic(topic) or set()
        assignment = [TopicPartition(topic, p) for p in sorted(partitions)]
        self.consumer.assign(assignment)
        self.consumer.seek_to_beginning(*assignment)
        self.records: list = []

    def poll(self) -> list:
        for batch in self.consumer.poll(timeout_ms=300).values():
            self.records.extend(batch)
        return self.records

    def wait_for(self, condition: Callable[[list], bool], timeout_s: float, stages: list[StageProcess] = (),
                 what: str = "condition") -> list:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition(self.poll()):
                return self.records
            for stage in stages:
                if not stage.alive():
                    raise AssertionError(f"stage {stage.stage} died:\n{stage.log_tail()}")
        logs = "\n".join(f"--- {s.stage}\n{s.log_tail()}" for s in stages)
        raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; have {len(self.records)}\n{logs}")

    def close(self) -> None:
        self.consumer.close()

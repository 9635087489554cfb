"""Real Prometheus and Alertmanager (Debian binaries) and the dispatcher process, started on loopback for tests.

Test-only settings: 1 s scrape/evaluation/group intervals, and every rule's `for` shortened to 1 s in a copy of the
rule files (their real durations are covered by promtool's unit tests).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from infra.broker import free_port, wait_for_port
from infra.process import child_preexec, terminate

INFRA = Path(__file__).resolve().parents[2] / "infra"
REPO = INFRA.parent


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run infra/setup.sh")
    return path


def wait_ready(url: str, process: subprocess.Popen, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
        try:
            if requests.get(url, timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready in {timeout_s} s")


def stop(process: subprocess.Popen | None) -> None:
    terminate(process, 10)


def shortened_rule_files(directory: Path) -> list[str]:
    paths = []
    for source in sorted((INFRA / "prometheus" / "rules").glob("*.yml")):
        rules = yaml.safe_load(source.read_text(encoding="utf-8"))
        for group in rules["groups"]:
            group["interval"] = "1s"
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = "1s"
        target = directory / source.name
        target.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
        paths.append(str(target))
    return paths


WEBHOOK_TOKEN = "alertmanager-webhook-token-for-tests"


def start_alertmanager(directory: Path, webhook_url: str, log) -> tuple[subprocess.Popen, str]:
    """The repository's alertmanager.yml with the webhook URL and its token file moved into `directory`; the
    dispatcher must run with WEBHOOK_TOKEN in its token variable."""
    config = yaml.safe_load((INFRA / "alertmanager" / "alertmanager.yml").read_text(encoding="utf-8"))
    token_file = directory / "webhook-token"
    token_file.write_text(WEBHOOK_TOKEN + "\n", encoding="utf-8")
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook_url
            hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    config["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    for route in config["route"].get("routes", []):
        route["group_wait"] = "0s"
    path = directory / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    port = free_port()
    process = subprocess.Popen(
        [binary("prometheus-alertmanager"), f"--config.file={path}", f"--storage.path={directory / 'am-data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=log, stderr=subprocess.STDOUT, preexec_fn=child_preexec)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/-/ready", process)
    return process, url


def start_prometheus(directory: Path, jobs: dict[str, list[str]], alertmanager_url: str,
                     log) -> tuple[subprocess.Popen, str]:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": shortened_rule_files(directory),
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager_url.split("//")[1]]}]}]},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}
                           for job, targets in jobs.items()],
    }
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    port = free_port()
    process = subprocess.Popen(
        [binary("prometheus"), f"--config.file={path}", f"--storage.tsdb.path={directory / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, preexec_fn=child_preexec)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/-/ready", process)
    return process, url


def start_dispatcher(config_path: Path, port: int, env: dict, log) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "cityguard", "alerts", "dispatch", "--config", str(config_path), "--port", str(port)],
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"}, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, preexec_fn=child_preexec)
    wait_for_port("127.0.0.1", port, 30, process)
    return process


def wait_until(predicate, timeout_s: float, what: str, interval_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")

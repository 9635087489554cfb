# The two README commands: `make run` (whole pipeline on embedded defaults) and `make test`.
SHELL := /bin/bash
VENV := .venv
export YOLO_OFFLINE ?= 1

.PHONY: setup lock run test test-fast bench docs

setup:
	bash infra/setup.sh

# Regenerates requirements.lock (and requirements-nodeps.lock) from pyproject.toml after a dependency change;
# pins already locked stay unless UPGRADE=1 (make lock UPGRADE=1 moves everything to the newest allowed).
lock:
	bash infra/lock.sh

run: setup
	$(VENV)/bin/cityguard up $(ARGS)

test: setup
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(VENV)/bin/python -m pytest -m "not slow and not broker" $(PYTEST_ARGS)

bench: setup
	$(VENV)/bin/cityguard bench inference

docs: setup
	$(VENV)/bin/python -m schemas.settings.reference --write

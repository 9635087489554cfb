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

# Most tests wait on processes, the broker or the model, so two workers overlap the waits; the few that load the whole
# machine run after them, alone. Exit status 5 (nothing selected, e.g. a PYTEST_ARGS `-k` that names no solo test) is
# not a failure.
TEST_WORKERS ?= 2

test: setup
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) -m "not solo" $(PYTEST_ARGS)
	$(VENV)/bin/python -m pytest -m solo $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-fast: setup
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) -m "not slow and not broker" $(PYTEST_ARGS)

bench: setup
	$(VENV)/bin/cityguard bench inference

docs: setup
	$(VENV)/bin/python -m schemas.settings.reference --write

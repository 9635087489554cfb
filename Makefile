# The two README commands: `make run` (whole pipeline on embedded defaults) and `make test`.
SHELL := /bin/bash
VENV := .venv
export YOLO_OFFLINE ?= 1

.PHONY: setup run test test-fast bench docs

setup:
	bash infra/setup.sh

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

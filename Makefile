# The README's commands. Every target runs the (idempotent) set-up first.
VENV ?= .venv
PY := $(VENV)/bin/python
export MMRANKKD_VENV := $(abspath $(VENV))

.PHONY: setup test demo benchmark clean-venv

setup:
	bash tools/setup_env.sh

test: setup
	$(PY) -m pytest tests

demo: setup
	$(PY) tools/quickstart.py

benchmark: setup
	$(PY) tools/benchmark_losses.py

clean-venv:
	rm -rf $(VENV)

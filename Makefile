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

# Full-size student steps (e.g. ResNet-18 on 256 ImageNet images) need a GPU;
# on a CPU machine --quick measures them on smaller batches, scaled linearly.
BENCHMARK_ARGS ?= --device cpu --quick --threads 1 --repeats 2
benchmark: setup
	$(PY) tools/benchmark_losses.py $(BENCHMARK_ARGS)

clean-venv:
	rm -rf $(VENV)

# One-command setup: every target creates .venv and installs ssl_jax into it on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test test-fast bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,torch]'
	$(PY) -m pip install --quiet --no-deps lightly==1.6.0  # only its NTXentLoss: see experiments/torch_baseline/README.md
	touch $(STAMP)

## demo: the main job on the embedded (simulated) data: a scaled study with report and plots.
## ssl_jax.launch starts it with mimalloc preloaded (XLA:CPU's train steps stop page-faulting).
demo: $(STAMP)
	$(PY) -m ssl_jax.launch experiments/study.py --scale demo --out runs/demo

## test: the whole suite, slow tests included.
test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup -q tests

## test-fast: the inner loop, slow tests skipped.
test-fast: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup -q -m "not slow" tests

## bench: train-step speed; it starts its timed process with mimalloc itself (--host_allocators).
bench: $(STAMP)
	$(PY) experiments/bench_train_step.py

clean:
	rm -rf $(VENV) runs

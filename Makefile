# Set-up commands: `make demo` and `make test` work on a fresh machine (they create .venv).
PYTHON ?= python3
OUT ?= out
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: test test-all bench demo clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

bench: $(STAMP)
	$(PY) bench/bench.py

demo: $(STAMP)
	$(PY) -m convnext_tf.tasks.demo $(if $(WEIGHTS),--weights $(WEIGHTS)) $(if $(SEG_WEIGHTS),--segmentation-weights $(SEG_WEIGHTS)) --out $(OUT)

clean:
	rm -rf $(VENV) out *.egg-info

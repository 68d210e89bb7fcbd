# Set-up commands: `make demo` and `make test` work on a fresh machine (they create .venv).
PYTHON ?= python3
OUT ?= out
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_STAMP := $(VENV)/.installed-demo
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
# tf.keras is tf_keras, the Keras of these models, and TensorFlow's import skips Keras 3 (README, "Set up")
export TF_USE_LEGACY_KERAS ?= 1

.PHONY: test test-all bench bench-export demo clean

# the library alone (what `make demo` needs)
$(DEMO_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e .
	touch $(DEMO_STAMP)

# plus the test extras: PyTorch and transformers (the parity reference), the notebook runner
$(STAMP): $(DEMO_STAMP)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# two test processes (one file each at a time: a file's module fixtures and order stay together),
# the longest files first (tests/conftest.py orders them)
PYTEST := $(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

test: $(STAMP)
	$(PYTEST)

test-all: $(STAMP)
	$(PYTEST) -m "slow or not slow"

bench: $(STAMP)
	$(PY) bench/bench.py

# sizes, differences and latencies of the exports, and the mIoU of `make demo`'s model in each format
bench-export: $(STAMP)
	$(PY) bench/export_bench.py --demo-model $(OUT)/model.keras

demo: $(DEMO_STAMP)
	$(PY) -m convnext_tf.tasks.demo $(if $(WEIGHTS),--weights $(WEIGHTS)) --out $(OUT)

clean:
	rm -rf $(VENV) out *.egg-info

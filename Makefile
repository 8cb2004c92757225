# Quick start: `make demo` (set up + run the example), `make test` (set up + run the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-slow bench clean

setup: $(STAMP)

# torch and torchvision first, as a matching pair: other packages pull torchvision in,
# and a mismatched pair fails at import.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[test,onnx]'
	touch $(STAMP)

# The demo also segments the example chest radiograph of ../shared/data (TS2D_XRAY_DATA
# overrides), found by ts2d_xray.examples, when that folder exists.
demo: setup
	$(BIN)/ts2d-xray demo -o out/demo

test: setup
	$(BIN)/pytest

test-slow: setup
	$(BIN)/pytest -m slow

bench: setup
	for b in projection drr train segment; do $(BIN)/python benchmarks/bench_$$b.py || exit 1; done

clean:
	rm -rf out .pytest_cache

# The targets the README's two commands call. `make quickstart` and `make test` each set up
# .venv first (once; again when pyproject.toml changes).
#
# TORCH picks the PyTorch build. The default pins a release that has a CPU wheel; on a CUDA
# machine use the build for your driver, e.g.
#   make quickstart TORCH=torch TORCH_INDEX=https://download.pytorch.org/whl/cu128
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: setup quickstart test test-fast clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install --quiet -e '.[dev]'
	touch $@

quickstart: setup
	$(BIN)/sweeper run sweeps/quickstart.yaml
	$(BIN)/sweeper report sweeps/quickstart.yaml --out reports/quickstart
	@echo "Browse every curve: $(BIN)/sweeper ui   (then open the printed URL)"

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

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

.PHONY: setup system-packages quickstart test test-fast clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install --quiet -e '.[dev,evals]'
	touch $@

# Programs the tests drive for real, from Debian's packages: Chromium renders the MLflow UI, and
# PostgreSQL backs the team MLflow server of infra/mlflow. Installed only where missing.
system-packages:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null; \
	fi

quickstart: setup
	$(BIN)/sweeper run sweeps/quickstart.yaml
	$(BIN)/sweeper report sweeps/quickstart.yaml --loss best --tie --out reports/quickstart
	@echo "Browse every curve: $(BIN)/sweeper ui   (then open the printed URL)"

# Two test files at a time (pytest-xdist; a file's tests stay together, so a module's fixture,
# such as test_cluster.py's cluster, starts once). The end-to-end tests spend about half their
# time waiting on processes, Ray and servers to start, so two at once fill the cores. The longest
# files start first (tests/conftest.py's order, which --no-loadscope-reorder keeps: by default
# xdist starts the files with the most tests first, and the quickstart's one ten-minute test ran
# last, alone).
test: setup system-packages
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=30

test-fast: setup system-packages
	$(BIN)/python -m pytest -q -m "not slow" -n auto --maxprocesses 4

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

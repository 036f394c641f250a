# Set-up, the main job and the tests. `make train` and `make test` work on a fresh machine:
# they create .venv, install torch + this package, and fetch Fashion-MNIST from Debian when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FMNIST := /usr/share/datasets/fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup data train test test-slurm lint format clean mini

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

data:
	@if [ -d $(FMNIST) ]; then echo "Fashion-MNIST: $(FMNIST)"; \
	elif command -v apt-get >/dev/null; then \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; \
	else echo "no apt-get: put Fashion-MNIST under data.root or let torchvision download it"; fi

train: setup data
	$(PY) run.py $(ARGS)

# The main suite (pytest-xdist: one worker per core; loadgroup keeps an xdist_group on one worker, where its
# tests share the processes they start), then the SLURM group against a local one-node cluster (scripts/slurm-local.sh), which needs
# root: as root the cluster is started here (apt-get installs SLURM when missing) and stopped afterwards
# unless it was up already; without root its tests skip with the reason (in CI, CI=true, they fail). The SLURM
# tests mostly wait (on the queue, on submitit's polling), so once the cluster is up they run side by side, one
# pytest-xdist worker each (-n 4); if it is not, one process tries to start it and says why not.
test: setup data
	$(PY) -m pytest -q -n auto --dist loadgroup -m "not slurm" $(ARGS)
	$(MAKE) --no-print-directory test-slurm

test-slurm: setup
	@if [ "$$(id -u)" != 0 ]; then exec $(PY) -m pytest -q -m slurm tests/slurm; fi; \
	was_up=$$(bash scripts/slurm-local.sh status >/dev/null 2>&1 && echo yes); \
	bash scripts/slurm-local.sh up || echo "the SLURM tests will say why the cluster is not there"; \
	workers=$$(bash scripts/slurm-local.sh status >/dev/null 2>&1 && echo "-n 4"); \
	$(PY) -m pytest -q $$workers -m slurm tests/slurm; status=$$?; \
	[ -n "$$was_up" ] || bash scripts/slurm-local.sh down; \
	exit $$status

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

clean:
	rm -rf outputs multirun .pytest_cache

mini: setup data
	PY=$(PY) bash experiments/mini.sh $(ARGS)

# `make demo` and `make test` work on a fresh machine with only Python 3.11: each creates .venv
# and installs what it needs (torch 2.14.1 / torchvision 0.29.1 come from pip, see ENV notes).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CURATE := $(VENV)/bin/curate
export RAY_AUTH_MODE ?= disabled
export YOLO_OFFLINE ?= 1
export YOLO_CONFIG_DIR ?= $(CURDIR)/.cache/ultralytics
export MPLCONFIGDIR ?= $(CURDIR)/.cache/matplotlib
export HF_HUB_OFFLINE ?= 1

.PHONY: install demo test bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	CURATE=$(CURATE) bash scripts/demo.sh

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -q -p no:cacheprovider --durations=15 tests

bench: install
	$(PY) bench/bench_decode.py
	$(PY) bench/bench_memory.py

clean:
	rm -rf demo-crawl demo-out .cache

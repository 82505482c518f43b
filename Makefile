# Two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/data
OUTPUT ?= demo_out
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER ?= 0
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: venv demo test lint fmt bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) jobs/demo.py --data $(DATA) --output $(OUTPUT)

lint: venv
	$(PY) -m ruff check fer_ray jobs tests benchmarks

test: lint
	$(PY) -m pytest -q --durations=30 tests

bench: venv
	$(PY) benchmarks/preprocess.py --data $(DATA)

clean:
	rm -rf $(OUTPUT) .pytest_cache .ruff_cache

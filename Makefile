# The two commands of the README. Only python3 (>= 3.11) is needed: everything else goes into .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench clean-demo

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.installed-dev
	$(PY) -m mtlx_core.demo

test: $(VENV)/.installed-dev
	$(PY) -m ruff check .
	$(PY) -m mypy mtlx_core
	$(PY) -m pytest -m "not slow" -q

lint: $(VENV)/.installed-dev
	$(PY) -m ruff check .

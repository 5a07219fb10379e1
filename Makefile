# Setup and entry points. `make table2` and `make test` are the README's Quick start.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
CORES  ?= 2
STAMP   = $(VENV)/.installed

.PHONY: setup system-deps table2 test test-fast lint config-docs clean-venv slurm-up slurm-down

setup: system-deps $(STAMP)

# bubblewrap contains the HumanEval checks (util-linux unshare is the fallback). Installed when
# we may (root with apt-get); otherwise say how, since the sandbox refuses to run uncontained.
system-deps:
	@command -v bwrap >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -q bubblewrap >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q bubblewrap >/dev/null; }; \
	  else echo "note: bubblewrap is not installed (sudo apt-get install bubblewrap); HumanEval checks fall back to unshare"; fi; }

# torch 2.13.0 first: its CPU wheel is on this machine's disk, and a bare `torch`
# requirement would otherwise resolve to a multi-GB CUDA build.
$(STAMP): pyproject.toml requirements-offline.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps -r requirements-offline.txt
	touch $@

table2: system-deps $(STAMP)
	$(BIN)/snakemake --cores $(CORES) results/table2.csv

# Everything: the README's and CI's command (README, Tests, gives its time on 2-core machines); the
# 25 slowest tests are listed at the end, where the suite's time goes.
test: system-deps $(STAMP)
	$(BIN)/python -m pytest -q --durations=25

# The inner loop: everything except the tests that run Snakemake in a subprocess.
test-fast: system-deps $(STAMP)
	$(BIN)/python -m pytest -q -m "not workflow"

lint: $(STAMP)
	$(BIN)/ruff check inilora tests
	$(BIN)/snakemake --lint

# config/README.md is generated from the schema's descriptions (a test checks it is current).
config-docs: $(STAMP)
	$(BIN)/python -m inilora.config.docs > config/README.md

# A one-machine SLURM 22.05 cluster on loopback (controller, node, accounting on MariaDB, 2 placeholder
# GPUs) that the cluster tests submit the workflow to; needs root, installs its packages with apt-get.
slurm-up:
	bash scripts/slurm.sh up

slurm-down:
	bash scripts/slurm.sh down

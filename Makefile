# Fresh machine to results in one command. Each target creates .venv in the checkout if there is
# none and installs the project with the CPU torch wheel (torch==2.13.0), not a multi-GB CUDA build.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cpfd-installed
OUT    ?= runs/experiment
# Left empty, cpfd chooses: one torch thread per step for the tiny default models (as fast as two
# on a 2-core machine, several times faster when other jobs share it: docs/benchmarks.md), and as
# many steps at once as the cores this process may use hold (--jobs). Set either to override.
THREADS ?=
JOBS    ?=

.PHONY: install test test-all experiment clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

test-all: $(STAMP)
	$(BIN)/python -m pytest -m ''

experiment: $(STAMP)
	$(BIN)/cpfd experiment --out $(OUT)$(if $(THREADS), --threads $(THREADS))$(if $(JOBS), --jobs $(JOBS))

clean:
	rm -rf $(VENV) runs

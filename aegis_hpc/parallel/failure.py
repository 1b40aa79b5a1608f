"""Turn an exception on any rank into a one-line report and a job-wide abort.

Without this, a rank that raises exits while its peers sit in a collective
waiting for it: the job hangs until the scheduler's wall-clock limit.
`MPI.COMM_WORLD.Abort(1)` makes the launcher kill every rank at once.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback


def _world():
    from mpi4py import MPI

    return MPI.COMM_WORLD


def report_and_abort(exc: BaseException, code: int = 1):
    world = _world()
    message = " ".join(str(exc).split()) or "(no message)"
    if os.environ.get("AEGIS_TRACEBACK"):
        traceback.print_exception(exc, file=sys.stderr)
    # one write, one line: interleaving with other ranks' output stays readable
    sys.stderr.write(f"rank {world.Get_rank()}: {type(exc).__name__}: {message}\n")
    sys.stderr.flush()
    world.Abort(code)


class abort_on_error(contextlib.ContextDecorator):
    """`with abort_on_error():` or `@abort_on_error()`. A clean `sys.exit(0)`
    passes through; anything else aborts the whole job."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or (isinstance(exc, SystemExit) and exc.code in (0, None)):
            return False
        report_and_abort(exc)
        return False  # not reached: Abort does not return

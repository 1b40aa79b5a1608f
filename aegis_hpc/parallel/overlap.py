"""Overlap scheduler: collectives start as soon as their inputs exist, and
independent polynomial work (NTT, basis conversion of the next items) runs
while they are in flight.

Tasks form a DAG by name. The loop: start every collective whose inputs are
done; run the next ready compute task (in submission order, so the caller
decides the reordering the maths allows); poll in-flight collectives between
compute tasks (host MPI makes progress only inside MPI calls, so polling is
what moves the data); when no compute is ready, block on the oldest
collective.

Hidden fraction = 1 - (time blocked in wait) / (time collectives were in
flight). A collective's flight ends when its completion is first observed, so
with coarse compute tasks the flight time is an upper bound and the fraction
optimistic; tasks finer than the transfer keep the bound tight.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class _Task:
    name: str
    fn: object
    after: tuple
    is_comm: bool
    result: object = None
    done: bool = False
    started: float | None = None
    finished: float | None = None
    blocked: float = 0.0


@dataclass
class OverlapReport:
    comm_in_flight_s: float
    comm_blocked_s: float
    compute_s: float
    wall_s: float
    per_comm: dict = field(default_factory=dict)

    @property
    def hidden_fraction(self) -> float:
        if self.comm_in_flight_s <= 0:
            return 1.0
        return max(0.0, 1.0 - self.comm_blocked_s / self.comm_in_flight_s)

    def summary(self) -> str:
        return (f"communication in flight {self.comm_in_flight_s:.4f} s, blocked {self.comm_blocked_s:.4f} s "
                f"-> {100 * self.hidden_fraction:.1f} % hidden; compute {self.compute_s:.4f} s, "
                f"wall {self.wall_s:.4f} s")


class OverlapScheduler:
    def __init__(self):
        self._tasks: dict[str, _Task] = {}

    def _add(self, name, fn, after, is_comm):
        if name in self._tasks:
            raise ValueError(f"task {name!r} defined twice")
        missing = [a for a in after if a not in self._tasks]
        if missing:
            raise ValueError(f"task {name!r} depends on unknown {missing} (define inputs first)")
        self._tasks[name] = _Task(name, fn, tuple(after), is_comm)

    def comm(self, name: str, start, after=()):
        """start(*input results) -> object with test() and wait() (a Request or PendingTensor)."""
        self._add(name, start, after, True)

    def compute(self, name: str, fn, after=()):
        """fn(*input results) -> result."""
        self._add(name, fn, after, False)

    def result(self, name: str):
        return self._tasks[name].result

    def _ready(self, t):
        return not t.done and t.started is None and all(self._tasks[a].done for a in t.after)

    def _inputs(self, t):
        return [self._tasks[a].result for a in t.after]

    def _complete(self, t, result):
        t.result, t.done, t.finished = result, True, time.perf_counter()

    def _poll(self, flight):
        for t in list(flight):
            if t.result.test():
                self._complete(t, t.result.wait())
                flight.remove(t)

    def run(self) -> OverlapReport:
        t0, compute_s = time.perf_counter(), 0.0
        flight: list[_Task] = []
        while not all(t.done for t in self._tasks.values()):
            for t in self._tasks.values():
                if t.is_comm and self._ready(t):
                    # the clock starts once the call returns: packing the send
                    # buffer is local work, not communication that could hide
                    t.result = t.fn(*self._inputs(t))
                    t.started = time.perf_counter()
                    flight.append(t)
            work = next((t for t in self._tasks.values() if not t.is_comm and self._ready(t)), None)
            if work is not None:
                work.started = time.perf_counter()
                self._complete(work, work.fn(*self._inputs(work)))
                compute_s += work.finished - work.started
                self._poll(flight)
            elif flight:
                oldest = flight.pop(0)
                b0 = time.perf_counter()
                res = oldest.result.wait()
                oldest.blocked = time.perf_counter() - b0
                self._complete(oldest, res)
            else:
                raise RuntimeError("dependency cycle: nothing ready and nothing in flight")
        comms = [t for t in self._tasks.values() if t.is_comm]
        return OverlapReport(
            comm_in_flight_s=sum(t.finished - t.started for t in comms),
            comm_blocked_s=sum(t.blocked for t in comms),
            compute_s=compute_s, wall_s=time.perf_counter() - t0,
            per_comm={t.name: (t.finished - t.started, t.blocked) for t in comms})

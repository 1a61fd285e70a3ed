"""Thread pools that take CPU arg-max solves off the training thread.

``--solver-workers N`` (``TrainConfig.solver_workers``) gives the estimator a :class:`SolverPool`
of ``N`` threads. The direct estimator submits its ``z*`` solve there as soon as the noise is
drawn (:meth:`~structvae.estimators.Estimator.begin`), and the model computes its KL term in the
training thread meanwhile; ``z_eps`` cannot start before the candidate losses exist, so it
stays in line. Solvers that parallelise over the samples of a batch themselves (``ilp``,
plain-function solvers: attribute ``workers``) are sized to ``N`` threads too.

Graph cut (PyMaxflow) and CP-SAT release the GIL while they run, and torch releases it inside
its kernels, so the solve and the KL overlap on two cores; see
``experiments/bench_overlap.py`` for the measured split.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

__all__ = ["SolverPool", "attach_pool", "check_workers", "completed"]

_SHARED: dict[int, ThreadPoolExecutor] = {}
_LOCK = threading.Lock()


def check_workers(workers) -> int:
    """``workers`` as an int >= 0, else ``ValueError`` (the CLI's ``--solver-workers``)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"--solver-workers must be an integer >= 0, got {workers!r}")
    return workers


def completed(fn: Callable, *args, **kw) -> Future:
    """Run ``fn`` now and wrap its result (or exception) in a finished ``Future``."""
    fut: Future = Future()
    try:
        fut.set_result(fn(*args, **kw))
    except BaseException as e:  # re-raised by fut.result(), like a pool's future
        fut.set_exception(e)
    return fut


class SolverPool:
    """``workers`` threads for solver calls, shared by every pool of the same size.

    ``submit(fn, *args)`` returns a ``Future``; with ``workers=0`` the call runs at once in the
    calling thread (the result is the same, only the timing differs).
    """

    def __init__(self, workers: int = 1) -> None:
        self.workers = check_workers(workers)
        self._executor = None
        if self.workers:
            with _LOCK:
                ex = _SHARED.get(self.workers)
                if ex is None:
                    ex = _SHARED[self.workers] = ThreadPoolExecutor(
                        self.workers, thread_name_prefix="structvae-solver"
                    )
            self._executor = ex

    def submit(self, fn: Callable, *args, **kw) -> Future:
        if self._executor is None:
            return completed(fn, *args, **kw)
        return self._executor.submit(fn, *args, **kw)

    def __repr__(self) -> str:
        return f"SolverPool(workers={self.workers})"


def attach_pool(estimator, workers: int) -> None:
    """Give ``estimator`` (when it has a ``pool`` attribute) a :class:`SolverPool` of ``workers``
    threads, and size its solver's own per-sample threads (``solver.workers``) to match.
    ``workers=0`` leaves both as they are."""
    if not check_workers(workers):
        return
    if hasattr(estimator, "pool"):
        estimator.pool = SolverPool(workers)
    solver = getattr(estimator, "solver", None)
    if solver is not None and hasattr(solver, "workers"):
        solver.workers = workers

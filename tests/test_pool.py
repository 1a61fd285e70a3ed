"""Solver thread pools: the overlapped z* solve changes timing only, never results."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch

from structvae.estimators import DirectEstimator
from structvae.models import StructuredVAE
from structvae.solvers import Solver, get_solver
from structvae.solvers.pool import SolverPool, attach_pool, check_workers, completed
from structvae.train import TrainConfig, train


class _ThreadRecorder(Solver):
    """Delegates to graph cut and records the thread of each call."""

    name = "recorder"
    num_states = 2

    def __init__(self) -> None:
        super().__init__()
        self.inner = get_solver("graphcut")
        self.threads: list[str] = []

    def solve(self, potentials, hint=None):
        self.threads.append(threading.current_thread().name)
        return self.inner.solve(potentials)


def _objective(workers: int):
    torch.manual_seed(0)
    model = StructuredVAE(6, pairwise="supermodular", graph="complete")
    solver = _ThreadRecorder()
    est = DirectEstimator(eps=0.1, solver=solver)
    attach_pool(est, workers)
    x = torch.rand(8, 784).round()
    torch.manual_seed(1)
    total, stats = model.objective(x, est)
    total.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    return total.detach(), stats, grads, solver.threads


def test_overlapped_z_star_gives_the_same_step():
    t0, s0, g0, th0 = _objective(0)
    t1, s1, g1, th1 = _objective(2)
    assert torch.equal(t0, t1) and all(torch.equal(a, b) for a, b in zip(g0, g1, strict=True))
    assert s0["loss"] == s1["loss"]
    main = threading.main_thread().name
    assert th0 == [main, main]  # z*, then z_eps, in the training thread
    assert th1[0].startswith("structvae-solver") and th1[1] == main  # z* on the pool


def test_pool_and_inline_futures_carry_results_and_errors():
    def boom():
        raise KeyError("x")

    for pool in (SolverPool(0), SolverPool(2)):
        assert pool.submit(lambda a: a + 1, 1).result() == 2
        with pytest.raises(KeyError):
            pool.submit(boom).result()
    assert SolverPool(2)._executor is SolverPool(2)._executor  # shared per size
    with pytest.raises(KeyError):
        completed(boom).result()


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_worker_count_is_checked(bad):
    with pytest.raises(ValueError, match="--solver-workers"):
        check_workers(bad)


def test_attach_pool_sizes_solver_threads():
    est = DirectEstimator(solver=get_solver("ilp"))
    attach_pool(est, 0)
    assert est.pool is None
    attach_pool(est, 3)
    assert est.pool.workers == 3 and est.solver.workers == 3


def test_training_with_solver_workers_matches_without(tmp_path):
    common = dict(model="structured", latent="5", batch_size=500, epochs=1, max_steps=3)
    common.update(quiet=True, eval_samples=2)
    runs = []
    for w in (0, 2):
        out = tmp_path / f"w{w}"
        runs.append(train(TrainConfig(out=str(out), solver_workers=w, **common)))
        rows = [json.loads(r) for r in Path(out, "metrics.jsonl").read_text().splitlines()]
        for r in rows:
            r.pop("time_s")
        runs[-1]["rows"] = rows
    assert runs[0]["rows"] == runs[1]["rows"]
    assert runs[0]["test_loss"] == runs[1]["test_loss"]

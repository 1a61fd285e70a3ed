"""The CP-SAT solver against brute-force enumeration, and its options."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from structvae.potentials import Potentials
from structvae.solvers import get_solver
from structvae.solvers.base import SolverWarning
from structvae.solvers.exact import enumerate_scores
from structvae.solvers.ilp import ILPSolver, _icm, _scores

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _edges(n: int, kind: str, rng: np.random.Generator) -> torch.Tensor:
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    if kind == "empty" or not pairs:
        pairs = []
    elif kind == "chain":
        pairs = [(i, i + 1) for i in range(n - 1)]
    elif kind == "random":
        pairs = [pr for pr in pairs if rng.random() < 0.5]
    return torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)


def _random_potentials(
    seed: int, B: int, n: int, K: int, kind: str, log_mag: float, ties: bool, dtype=torch.float64
) -> Potentials:
    rng = np.random.default_rng(seed)
    edges = _edges(n, kind, rng)
    E = edges.shape[0]
    if ties:  # small integers: many tied maximisers
        unary = rng.integers(-2, 3, size=(B, n, K)).astype(np.float64)
        pairwise = rng.integers(-2, 3, size=(B, E, K, K)).astype(np.float64)
    else:  # arbitrary (non-supermodular) tables, magnitudes 1e-3 .. 1e3
        mag = 10.0**log_mag
        unary = rng.normal(size=(B, n, K)) * mag
        pairwise = (
            rng.normal(size=(B, E, K, K)) * mag * 10.0 ** rng.uniform(-1, 1, size=(B, E, 1, 1))
        )
    return Potentials(torch.tensor(unary, dtype=dtype), edges, torch.tensor(pairwise, dtype=dtype))


def _assert_max(p: Potentials, z: torch.Tensor, tol: torch.Tensor) -> None:
    """``z`` scores within ``tol`` (+ float64 round-off) of the brute-force maximum."""
    p64 = p.to(torch.float64)
    best = enumerate_scores(p64).max(dim=1).values
    got = p64.score(z)
    slack = tol.to(best) + 1e-12 * (1.0 + best.abs())
    assert bool((got >= best - slack).all()), (got - best, tol)


@FAST
@given(
    seed=st.integers(0, 2**32 - 1),
    B=st.integers(1, 3),
    n=st.integers(1, 6),
    K=st.integers(1, 4),
    kind=st.sampled_from(["empty", "chain", "complete", "random"]),
    log_mag=st.floats(-3, 3),
    ties=st.booleans(),
)
def test_matches_brute_force(seed, B, n, K, kind, log_mag, ties):
    p = _random_potentials(seed, B, n, K, kind, log_mag, ties)
    solver = ILPSolver(workers=1)
    z = solver(p)
    assert z.dtype == torch.long and z.shape == (B, n)
    assert bool(solver.last_optimal.all())
    assert solver.last_tolerance.shape == (B,)
    # the stated bound: tol = (n + E) / scale, scale ~ 2**30 / max|coefficient|
    _assert_max(p, z, solver.last_tolerance)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2, 5),
    K=st.integers(2, 3),
    kind=st.sampled_from(["chain", "complete", "random"]),
)
def test_rounding_bound_holds_with_coarse_precision(seed, n, K, kind):
    """With 8 bits the rounding matters; the stated tolerance must still cover it."""
    p = _random_potentials(seed, 2, n, K, kind, 0.0, False)
    solver = ILPSolver(workers=1, precision_bits=8)
    z = solver(p)
    tol = solver.last_tolerance
    if p.has_edges:
        assert bool((tol > 1e-4).all())  # coarse: the bound is not vacuous here
    _assert_max(p, z, tol)


def test_registered_and_declared():
    s = get_solver("ilp", workers=1)
    assert isinstance(s, ILPSolver) and s.exact and s.uses_hint
    assert not ILPSolver(time_limit=1.0).exact


@pytest.mark.parametrize(
    "kwargs",
    [
        {"time_limit": 0},
        {"backend": "gurobi"},
        {"on_not_optimal": "ignore"},
        {"precision_bits": 60},
        {"workers": 0},
        {"parameters": {"no_such_parameter": 1}},
    ],
)
def test_bad_options(kwargs):
    with pytest.raises(ValueError):
        ILPSolver(**kwargs)


def test_trivial_cases():
    s = ILPSolver(workers=1)
    p = Potentials(torch.randn(3, 4, 1), torch.tensor([[0, 1], [2, 3]]), torch.randn(3, 2, 1, 1))
    assert torch.equal(s(p), torch.zeros(3, 4, dtype=torch.long))
    assert bool(s.last_optimal.all()) and bool((s.last_tolerance == 0).all())
    u = torch.randn(5, 1, 4)
    assert torch.equal(s(Potentials(u)), u.argmax(-1))


def test_hint_accepted_and_checked():
    p = _random_potentials(1, 4, 6, 3, "complete", 0.0, False)
    s = ILPSolver(workers=1)
    z = s(p)
    z_hinted = s(p, hint=z)
    assert bool(s.last_optimal.all())
    assert torch.equal(z_hinted, z)  # continuous random tables: the maximiser is unique
    wrong = torch.randint(0, 3, (4, 6))
    assert torch.equal(s(p, hint=wrong), z)
    with pytest.raises(ValueError, match="shape"):
        s(p, hint=torch.zeros(4, 5, dtype=torch.long))
    with pytest.raises(ValueError):
        s(p, hint=torch.full((4, 6), 3, dtype=torch.long))  # value out of range


def _hard(B: int = 2) -> Potentials:
    return _random_potentials(7, B, 30, 3, "complete", 0.0, False)


def test_time_limit_warns_and_is_not_optimal():
    p = _hard()
    s = ILPSolver(time_limit=1e-3, workers=1)
    hint = torch.randint(0, 3, (2, 30), generator=torch.Generator().manual_seed(0))
    with pytest.warns(SolverWarning, match="not proven optimal"):
        z = s(p, hint=hint)
    assert not bool(s.last_optimal.any())
    assert all(st_ in ("FEASIBLE", "UNKNOWN") for st_ in s.last_status)
    assert z.shape == (2, 30) and z.dtype == torch.long
    # the best known assignment is returned: never worse than the hint
    assert bool((p.score(z) >= p.score(hint)).all())
    with pytest.warns(SolverWarning):  # no hint: CP-SAT's incumbent or a local search
        z = s(p)
    assert z.shape == (2, 30) and not bool(s.last_optimal.any())


def test_time_limit_raise():
    s = ILPSolver(time_limit=1e-3, workers=1, on_not_optimal="raise")
    with pytest.raises(ValueError, match=r"not proven optimal.*samples \[0, 1\]"):
        s(_hard())


def test_workers_agree():
    p = _random_potentials(3, 6, 6, 2, "complete", 1.0, False)
    z1 = ILPSolver(workers=1)(p)
    z2 = ILPSolver(workers=3)(p)
    assert torch.equal(z1, z2)
    p = _random_potentials(4, 6, 5, 3, "random", -1.0, False)
    assert torch.equal(ILPSolver(workers=1)(p), ILPSolver(workers=2)(p))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_dtypes(dtype):
    p = _random_potentials(5, 3, 5, 3, "random", 0.5, False, dtype=dtype)
    s = ILPSolver(workers=1)
    z = s(p)
    assert z.dtype == torch.long and z.device == p.device
    _assert_max(p, z, s.last_tolerance)


def test_icm_never_decreases():
    p = _random_potentials(9, 4, 6, 3, "complete", 0.0, False)
    u, e, pw = p.numpy()
    z0 = np.random.default_rng(0).integers(0, 3, size=(4, 6))
    z1 = _icm(u, e, pw, z0)
    assert np.all(_scores(u, e, pw, z1) >= _scores(u, e, pw, z0))
    assert np.allclose(_scores(u, e, pw, z1), p.score(torch.as_tensor(z1)).numpy())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda():
    p = _random_potentials(2, 3, 5, 3, "complete", 0.0, False).to("cuda")
    s = ILPSolver(workers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        z = s(p, hint=torch.zeros(3, 5, dtype=torch.long, device="cuda"))
    assert z.device.type == "cuda" and s.last_optimal.device.type == "cuda"
    _assert_max(p, z, s.last_tolerance)

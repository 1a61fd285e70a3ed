"""Roof-duality persistencies (QPBO) and their use in the CP-SAT solver, against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from structvae.potentials import Potentials
from structvae.solvers.exact import all_assignments, enumerate_scores
from structvae.solvers.ilp import ILPSolver
from structvae.solvers.qpbo import qpbo_persistencies, reduce_potentials

FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_problems = dict(
    seed=st.integers(0, 2**32 - 1),
    B=st.integers(1, 4),
    n=st.integers(1, 8),
    density=st.sampled_from([0.0, 0.3, 0.7, 1.0]),
    log_mag=st.floats(-3, 3),
    kind=st.sampled_from(["normal", "ties", "binary"]),
)


def _problem(
    seed: int, B: int, n: int, density: float, log_mag: float, kind: str, supermodular: bool
) -> Potentials:
    """Random binary problems: arbitrary tables, small integers (ties), or theta_ij z_i z_j."""
    rng = np.random.default_rng(seed)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if rng.random() < density]
    edges = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)
    E = len(pairs)
    mag = 10.0**log_mag
    if kind == "ties":
        unary = rng.integers(-2, 3, size=(B, n, 2)).astype(np.float64)
        pairwise = rng.integers(-2, 3, size=(B, E, 2, 2)).astype(np.float64)
        unary[rng.random(size=(B, n)) < 0.3] = 0.0  # indifferent variables
    elif kind == "binary":  # the paper's form, weakly or strongly coupled
        unary = np.zeros((B, n, 2))
        unary[..., 1] = rng.normal(size=(B, n)) * 3.0 * mag
        pairwise = np.zeros((B, E, 2, 2))
        pairwise[..., 1, 1] = rng.normal(size=(B, E)) * mag * 10.0 ** rng.uniform(-1.5, 0.5)
    else:
        unary = rng.normal(size=(B, n, 2)) * mag
        pairwise = (
            rng.normal(size=(B, E, 2, 2)) * mag * 10.0 ** rng.uniform(-1, 1, size=(B, E, 1, 1))
        )
    if supermodular:  # raise theta11 until theta00 + theta11 >= theta01 + theta10
        margin = (
            pairwise[..., 0, 0] + pairwise[..., 1, 1] - pairwise[..., 0, 1] - pairwise[..., 1, 0]
        )
        pairwise[..., 1, 1] -= np.minimum(margin, 0.0)
    return Potentials(torch.tensor(unary), edges, torch.tensor(pairwise))


def _slack(best: torch.Tensor) -> torch.Tensor:
    return 1e-9 * (1.0 + best.abs())


def _masked_max(p: Potentials, fixed: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Brute-force maximum over the assignments that agree with the fixed values: ``[B]``."""
    scores = enumerate_scores(p)  # [B, 2**n]
    z = all_assignments(p.num_vars, 2)  # [2**n, n]
    agree = ((z[None] == values[:, None]) | ~fixed[:, None]).all(-1)
    return scores.masked_fill(~agree, -torch.inf).max(1).values


@FAST
@given(**_problems)
def test_supermodular_all_fixed_and_optimal(seed, B, n, density, log_mag, kind):
    p = _problem(seed, B, n, density, log_mag, kind, supermodular=True)
    fixed, values = qpbo_persistencies(p)
    assert fixed.dtype == torch.bool and values.dtype == torch.long
    assert fixed.shape == values.shape == (B, n)
    assert bool(fixed.all())
    best = enumerate_scores(p).max(1).values
    assert bool((p.score(values) >= best - _slack(best)).all())


@FAST
@given(**_problems, extend=st.booleans())
def test_weak_persistency(seed, B, n, density, log_mag, kind, extend):
    p = _problem(seed, B, n, density, log_mag, kind, supermodular=False)
    fixed, values = qpbo_persistencies(p, extend=extend)
    assert int(values.min()) >= 0 and int(values.max()) <= 1
    best = enumerate_scores(p).max(1).values
    restricted = _masked_max(p, fixed, values)
    assert bool((restricted >= best - _slack(best)).all()), (best - restricted, fixed)
    # the fixed variables' terms fold into the free ones without changing any score
    reduced, offset = reduce_potentials(p, fixed, values)
    z = all_assignments(n, 2)[None].expand(B, -1, -1)
    z = torch.where(fixed[:, None], values[:, None], z)
    assert torch.allclose(p.score(z), reduced.score(z) + offset[:, None], rtol=1e-12, atol=1e-9)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**_problems, persistencies=st.booleans(), hinted=st.booleans())
def test_ilp_optimal_with_and_without_persistencies(
    seed, B, n, density, log_mag, kind, persistencies, hinted
):
    p = _problem(seed, B, n, density, log_mag, kind, supermodular=False)
    s = ILPSolver(workers=1, persistencies=persistencies)
    hint = torch.randint(0, 2, (B, n), generator=torch.Generator().manual_seed(seed % 2**31))
    z = s(p, hint=hint if hinted else None)
    assert bool(s.last_optimal.all())
    best = enumerate_scores(p).max(1).values
    slack = s.last_tolerance + _slack(best)
    assert bool((p.score(z) >= best - slack).all())
    frac = s.last_fixed_fraction
    assert frac.shape == (B,) and bool(((frac >= 0) & (frac <= 1)).all())
    if not p.has_edges:
        assert bool((frac == 1).all())
    elif persistencies:
        fixed, _ = qpbo_persistencies(p)
        assert torch.allclose(frac, fixed.double().mean(1))
    else:
        assert bool((frac == 0).all())


def test_ilp_skips_cp_sat_when_all_fixed(monkeypatch):
    """Weakly coupled problems are solved by persistencies alone; CP-SAT is not called."""
    p = _problem(3, 6, 10, 1.0, 0.0, "binary", supermodular=True)
    s = ILPSolver(workers=1)
    calls = []
    monkeypatch.setattr(s, "_run", lambda *a: calls.append(a) or [None] * p.batch_size)
    z = s(p)
    assert bool((s.last_fixed_fraction == 1).all())
    assert bool(s.last_optimal.all()) and s.last_status == ["OPTIMAL"] * 6
    assert all(c[3] == [None] * 6 for c in calls)  # every sample skipped
    best = enumerate_scores(p).max(1).values
    assert bool((p.score(z) >= best - _slack(best)).all())


def test_ilp_ignores_persistencies_for_k3():
    rng = np.random.default_rng(0)
    p = Potentials(
        torch.tensor(rng.normal(size=(2, 4, 3))),
        torch.tensor([[0, 1], [1, 2], [2, 3]]),
        torch.tensor(rng.normal(size=(2, 3, 3, 3))),
    )
    s = ILPSolver(workers=1)
    z = s(p)
    assert bool((s.last_fixed_fraction == 0).all())
    assert torch.allclose(p.score(z), enumerate_scores(p).max(1).values)


def test_reduce_potentials_any_k_and_gradients():
    rng = np.random.default_rng(1)
    B, n, K = 3, 5, 3
    edges = torch.tensor([[0, 1], [0, 3], [1, 2], [2, 4], [3, 4]])
    unary = torch.tensor(rng.normal(size=(B, n, K)), requires_grad=True)
    pairwise = torch.tensor(rng.normal(size=(B, 5, K, K)), requires_grad=True)
    p = Potentials(unary, edges, pairwise)
    fixed = torch.tensor(rng.random(size=(B, n)) < 0.5)
    values = torch.tensor(rng.integers(0, K, size=(B, n)))
    reduced, offset = reduce_potentials(p, fixed, values)
    z = all_assignments(n, K)[None].expand(B, -1, -1)
    z = torch.where(fixed[:, None], values[:, None], z)
    lhs, rhs = p.score(z), reduced.score(z) + offset[:, None]
    assert torch.allclose(lhs, rhs)
    # the reduced problem does not depend on the fixed variables
    assert bool((reduced.unary[fixed] == 0).all())
    touch = fixed[:, edges[:, 0]] | fixed[:, edges[:, 1]]
    assert bool((reduced.pairwise[touch] == 0).all())
    (rhs.sum() - lhs.sum()).backward()
    assert unary.grad.abs().max() < 1e-12 and pairwise.grad.abs().max() < 1e-12


def test_errors_and_edge_cases():
    p3 = Potentials(torch.randn(2, 3, 3))
    with pytest.raises(ValueError, match="K = 2"):
        qpbo_persistencies(p3)
    with pytest.raises(ValueError, match="shape"):
        reduce_potentials(p3, torch.zeros(2, 2, dtype=torch.bool), torch.zeros(2, 2))
    empty = Potentials(torch.zeros(0, 4, 2), torch.tensor([[0, 1]]), torch.zeros(0, 1, 2, 2))
    fixed, values = qpbo_persistencies(empty)
    assert fixed.shape == values.shape == (0, 4)
    # no edges, ties included: every variable fixed, each to a maximiser of its unary terms
    u = torch.tensor([[[0.0, 1.0], [2.0, -1.0], [0.5, 0.5]]])
    fixed, values = qpbo_persistencies(Potentials(u))
    assert bool(fixed.all())
    assert torch.equal(values[0, :2], torch.tensor([1, 0]))
    # plain QPBO leaves a tied variable unlabelled; the extension labels it
    fixed, _ = qpbo_persistencies(Potentials(u), extend=False)
    assert fixed.tolist() == [[True, True, False]]
    # a frustrated triangle (each edge prefers disagreement): nothing is persistent
    anti = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).expand(1, 3, 2, 2)
    tri = Potentials(torch.zeros(1, 3, 2), torch.tensor([[0, 1], [0, 2], [1, 2]]), anti)
    fixed, _ = qpbo_persistencies(tri)
    assert not bool(fixed.any())

"""Fuzz every registered solver with random and adversarial potentials against brute force.

Each solver must either return a maximiser (its exactly-summed score equals the brute-force
maximum up to float64 round-off and the solver's stated tolerance) or refuse with a clear
``ValueError`` / ``SolverError`` naming it; never another exception, never a wrong answer.
"""

from __future__ import annotations

import itertools
import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from structvae import Potentials
from structvae.errors import SolverError
from structvae.solvers import get_solver

BUILT_IN = ("independent", "exact", "graphcut", "ilp", "tree")

KINDS = ("normal", "huge", "tiny", "mixed", "zeros", "ties", "integers", "overflow")


def values(rng: np.random.Generator, kind: str, shape) -> np.ndarray:
    if kind == "normal":
        return rng.standard_normal(shape)
    if kind == "huge":
        return rng.standard_normal(shape) * 1e30
    if kind == "tiny":
        return rng.standard_normal(shape) * 1e-30
    if kind == "mixed":  # magnitudes 1e-30 ... 1e30 side by side
        return rng.standard_normal(shape) * 10.0 ** rng.integers(-30, 31, size=shape)
    if kind == "overflow":  # near the float64 limit: sums of a few entries overflow
        return rng.uniform(-1.0, 1.0, size=shape) * 1.7e308
    if kind == "zeros":
        return np.zeros(shape)
    if kind == "ties":  # a few repeated values
        return rng.choice(np.array([-1.0, 0.0, 1.0]), size=shape)
    return rng.integers(-3, 4, size=shape).astype(np.float64)


@st.composite
def problems(draw):
    n = draw(st.integers(1, 5))
    K = draw(st.integers(1, 3))
    B = draw(st.integers(1, 3))
    pairs = list(itertools.combinations(range(n), 2))
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True)) if pairs else []
    kind = draw(st.sampled_from(KINDS))
    supermodular = draw(st.booleans())
    dtype = draw(st.sampled_from([torch.float64, torch.float32]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    unary = values(rng, kind, (B, n, K))
    pairwise = values(rng, kind, (B, len(chosen), K, K))
    if supermodular and K == 2 and chosen:  # d = b + c - a + |m|: margin >= 0
        a, b, c = pairwise[..., 0, 0], pairwise[..., 0, 1], pairwise[..., 1, 0]
        with np.errstate(over="ignore", invalid="ignore"):  # clipped below
            pairwise[..., 1, 1] = b + c - a + np.abs(values(rng, kind, a.shape))
    edges = torch.tensor(sorted(chosen), dtype=torch.long).reshape(-1, 2)
    limit = 1e38 if dtype == torch.float32 else 1e308  # d = b + c - a may have overflowed
    unary, pairwise = np.clip(unary, -limit, limit), np.clip(pairwise, -limit, limit)
    return Potentials(
        torch.from_numpy(unary).to(dtype), edges, torch.from_numpy(pairwise).to(dtype)
    )


def exact_scores(p: Potentials, z: np.ndarray) -> list[Fraction]:
    """Scores of ``z [B, n]`` in exact rational arithmetic (no round-off, no overflow)."""
    u, e, pw = p.numpy()
    out = []
    for b in range(z.shape[0]):
        terms = [u[b, i, z[b, i]] for i in range(z.shape[1])]
        terms += [pw[b, k, z[b, i], z[b, j]] for k, (i, j) in enumerate(e)]
        out.append(sum(map(Fraction, map(float, terms)), Fraction(0)))
    return out


def brute_max(p: Potentials) -> list[Fraction]:
    B, n, K = p.unary.shape
    scores = [
        exact_scores(p, np.tile(np.asarray(a), (B, 1)))
        for a in itertools.product(range(K), repeat=n)
    ]
    return [max(s[b] for s in scores) for b in range(B)]


def tolerance(p: Potentials, solver) -> list[Fraction]:
    """Round-off of a score (relative to the magnitudes summed, exactly) + the solver's bound."""
    u, _, pw = p.numpy()
    rel = Fraction(1, 10**13) if p.dtype == torch.float64 else Fraction(1, 10**5)
    tol = []
    for b in range(u.shape[0]):
        mag = sum(map(Fraction, np.abs(np.concatenate([u[b].ravel(), pw[b].ravel()])).tolist()))
        t = rel * mag
        if getattr(solver, "last_tolerance", None) is not None:  # ilp: its rounding bound
            t += Fraction(float(solver.last_tolerance[b]))
        if getattr(solver, "tol", None) is not None and pw.size:  # graphcut: tolerated margins
            t += Fraction(solver.tol) * max(1, Fraction(float(np.abs(pw[b]).max())))
        tol.append(t)
    return tol


def run_solver(name: str, p: Potentials, hint=None):
    solver = get_solver(name)
    supported = solver.supports(p)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a "not proven optimal" warning would be a failure
        try:
            z = solver(p, hint=hint)
        except (ValueError, SolverError) as err:
            msg = str(err)
            assert msg and (name in msg or "Potentials" in msg or "K^n" in msg), msg
            assert not supported or name == "ilp", f"{name} accepted then failed: {msg}"
            return None
    assert supported, f"{name} solved potentials its check() refuses"
    assert z.shape == p.unary.shape[:2] and z.dtype == torch.long
    got = exact_scores(p, z.numpy())
    best = brute_max(p)
    tol = tolerance(p, solver)
    for b in range(len(got)):
        assert got[b] >= best[b] - tol[b], (name, b, float(got[b]), float(best[b]))
    return z


@pytest.mark.parametrize("name", BUILT_IN)
@given(p=problems())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_solver_is_optimal_or_refuses(name, p):
    run_solver(name, p)


@given(p=problems(), hint_seed=st.integers(0, 1000))
@settings(max_examples=30, deadline=None)
def test_ilp_with_any_hint_is_optimal(p, hint_seed):
    g = torch.Generator().manual_seed(hint_seed)
    hint = torch.randint(p.num_states, p.unary.shape[:2], generator=g)
    run_solver("ilp", p, hint=hint)


@pytest.mark.parametrize("name", BUILT_IN)
def test_trivial_sizes(name):
    """n = 1, K = 1, an empty batch: solved or refused clearly."""
    for B, n, K in ((1, 1, 1), (2, 1, 3), (2, 4, 1), (1, 1, 2)):
        run_solver(name, Potentials(torch.randn(B, n, K, dtype=torch.float64)))
    p = Potentials(torch.zeros(0, 3, 2), torch.tensor([[0, 1], [1, 2]]), torch.zeros(0, 2, 2, 2))
    solver = get_solver(name)
    if solver.supports(p):
        assert solver(p).shape == (0, 3)


@pytest.mark.parametrize("name", BUILT_IN)
def test_scores_that_would_overflow_are_refused(name):
    """Regression: float32 tables of 1e38 sum past float32's range; ``exact`` used to compare
    infinite scores and return a non-maximiser. Every solver now refuses them, naming itself."""
    edges = torch.tensor([[0, 1], [1, 2]])
    unary = torch.tensor([[[0.0, 1e38], [0.0, 1e38], [0.0, -1e38]]])
    pairwise = torch.zeros(1, 2, 2, 2)
    pairwise[..., 1, 1] = 1e38
    p = Potentials(
        unary, edges if name != "independent" else None, None if name == "independent" else pairwise
    )
    with pytest.raises(ValueError, match=f"solver '{name}': the scores of sample 0 may overflow"):
        get_solver(name)(p)
    z = get_solver(name)(p.to(torch.float64))  # the same values in float64 are fine
    assert z.tolist() == [[1, 1, 0]]

"""The solver protocol, registry, custom solvers, and the independent/exact solvers."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import structvae as sv
from structvae.graphs import make_edges
from structvae.solvers import (
    ExactSolver,
    FunctionSolver,
    Solver,
    all_assignments,
    enumerate_scores,
    get_solver,
    register,
)
from structvae.solvers.auto import auto_solver_name


def problem(B, n, K, graph, seed, scale=1.0, integer=False, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    e = make_edges(graph, n)
    u = torch.randn(B, n, K, generator=g, dtype=dtype) * scale
    pw = torch.randn(B, e.shape[0], K, K, generator=g, dtype=dtype) * scale
    if integer:  # many ties
        u, pw = u.round().clamp(-2, 2), pw.round().clamp(-2, 2)
    return sv.Potentials(u, e, pw)


def brute_max(p):
    return enumerate_scores(p).max(1).values


def assert_optimal(p, z, rtol=1e-9):
    best = brute_max(p)
    got = p.score(z).to(best.dtype)
    tol = rtol * (1 + best.abs())
    assert torch.all(got >= best - tol), (got, best)


@given(
    n=st.integers(1, 6),
    K=st.integers(1, 4),
    graph=st.sampled_from(["none", "chain", "complete", "grid", "tree"]),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    integer=st.booleans(),
    seed=st.integers(0, 10_000),
)
@settings(max_examples=60, deadline=None)
def test_exact_solver_matches_brute_force(n, K, graph, scale, integer, seed):
    p = problem(3, n, K, graph, seed, scale, integer)
    z = ExactSolver()(p)
    assert z.shape == (3, n) and z.dtype == torch.long
    assert_optimal(p, z)
    # the enumerated order and score agree with Potentials.score
    A = all_assignments(n, K)
    assert torch.allclose(p.score(A[None].expand(3, -1, -1)), enumerate_scores(p))


def test_exact_solver_chunks_agree_with_one_block(monkeypatch):
    p = problem(4, 8, 3, "complete", 1)
    z_full = ExactSolver()(p)
    import structvae.solvers.exact as ex

    monkeypatch.setattr(ex, "_CHUNK_ELEMENTS", 1000)  # many small chunks
    z_chunked = ExactSolver()(p)
    assert torch.allclose(p.score(z_full), p.score(z_chunked))


def test_exact_solver_refuses_large_spaces_with_a_stated_limit():
    p = problem(1, 5, 3, "chain", 0)
    with pytest.raises(ValueError, match="exceeds the limit of 100"):
        ExactSolver(max_assignments=100)(p)
    assert ExactSolver(max_assignments=243).supports(p)


@given(n=st.integers(1, 6), K=st.integers(1, 5), seed=st.integers(0, 1000))
@settings(max_examples=30, deadline=None)
def test_independent_solver(n, K, seed):
    p = problem(3, n, K, "none", seed)
    assert_optimal(p, get_solver("independent")(p))


def test_independent_refuses_edges():
    with pytest.raises(ValueError, match="independent variables only"):
        get_solver("independent")(problem(1, 3, 2, "chain", 0))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes(dtype):
    p = problem(2, 4, 3, "complete", 3, dtype=dtype)
    for name in ["exact"]:
        z = get_solver(name)(p)
        assert z.dtype == torch.long
        assert_optimal(p.to(torch.float64), z, rtol=1e-2)


def test_registry_and_errors():
    assert {"exact", "independent"} <= set(sv.available_solvers())
    with pytest.raises(ValueError, match="unknown solver 'nope'; available:"):
        get_solver("nope")
    with pytest.raises(ValueError, match="already registered"):
        register("exact")(sv.solvers.IndependentSolver)  # a different class under a taken name
    register("exact")(ExactSolver)  # the same definition again replaces it (a re-run cell)
    assert type(get_solver("exact")) is ExactSolver
    s = ExactSolver()
    assert get_solver(s) is s
    with pytest.raises(ValueError, match="expects a structvae.Potentials"):
        s(torch.zeros(1, 2, 2))


def test_auto_dispatch_is_by_structure():
    assert auto_solver_name(5, 2, None) == "independent"
    assert auto_solver_name(40, 3, make_edges("chain", 40)) == "tree"
    assert auto_solver_name(15, 2, make_edges("complete", 15)) == "exact"
    assert auto_solver_name(30, 2, make_edges("complete", 30)) == "ilp"


# ------------------------------------------------------------------ custom solvers
def brute_force_fn(unary, edges, pairwise):
    """A per-problem numpy solver: enumerate everything (small n)."""
    n, K = unary.shape
    best, arg = -np.inf, None
    for z in np.ndindex(*([K] * n)):
        z = np.array(z)
        s = (
            unary[np.arange(n), z].sum()
            + pairwise[np.arange(len(edges)), z[edges[:, 0]], z[edges[:, 1]]].sum()
        )
        if s > best:
            best, arg = s, z
    return arg


@pytest.mark.parametrize("workers", [1, 3])
def test_function_solver_runs_batch(workers):
    p = problem(5, 4, 3, "complete", 7)
    z = FunctionSolver(brute_force_fn, workers=workers)(p)
    assert_optimal(p, z)


def test_register_plain_function_and_subclass():
    @register("test-brute-fn", overwrite=True)
    def brute(unary, edges, pairwise):
        return brute_force_fn(unary, edges, pairwise)

    @register("test-first-state", overwrite=True)
    class FirstState(Solver):
        exact = False

        def solve(self, potentials, hint=None):
            return torch.zeros(potentials.batch_size, potentials.num_vars, dtype=torch.long)

    p = problem(2, 3, 2, "chain", 0)
    assert_optimal(p, get_solver("test-brute-fn", workers=2)(p))
    s = get_solver("test-first-state")
    assert s.name == "test-first-state" and not s.exact
    assert s(p).sum() == 0


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda u, e, p: np.zeros(len(u) + 1, dtype=int), r"returned shape \[4\]"),
        (lambda u, e, p: np.full(len(u), 7), r"values outside \[0, 1\]"),
        (lambda u, e, p: np.full(len(u), 0.5), "non-integer"),
    ],
)
def test_malformed_custom_solver_output_is_a_clear_error(bad, match):
    p = problem(2, 3, 2, "chain", 0)
    with pytest.raises(ValueError, match=match):
        FunctionSolver(bad, name="bad")(p)


def test_custom_solver_exception_names_solver_and_sample():
    def boom(unary, edges, pairwise):
        raise RuntimeError("no licence")

    with pytest.raises(RuntimeError, match="solver 'boom' failed on sample 0: no licence"):
        FunctionSolver(boom)(problem(2, 3, 2, "chain", 0))


def test_hint_shape_is_checked():
    p = problem(2, 3, 2, "chain", 0)
    with pytest.raises(ValueError, match="hint given to solver 'exact'"):
        ExactSolver()(p, hint=torch.zeros(2, 4, dtype=torch.long))


@pytest.mark.cuda
def test_exact_on_cuda():
    p = problem(8, 10, 2, "complete", 0, dtype=torch.float32).to("cuda")
    z = ExactSolver()(p)
    assert z.device.type == "cuda"
    assert_optimal(p.to("cpu", torch.float64), z.cpu(), rtol=1e-5)

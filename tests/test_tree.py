"""TreeSolver and tree_log_partition against brute-force enumeration on random forests."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from structvae.graphs import chain_edges
from structvae.potentials import Potentials
from structvae.solvers import get_solver
from structvae.solvers.exact import enumerate_scores
from structvae.solvers.tree import TreeSolver, forest_schedule, tree_log_partition

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# one instance for all examples: exercises the schedule cache across many edge sets
SOLVER = TreeSolver()


# ------------------------------------------------------------------- strategies
@st.composite
def forests(draw) -> tuple[int, int, torch.Tensor]:
    """``(n, K, edges)``: a random forest, relabelled and with its edge rows shuffled."""
    K = draw(st.integers(1, 4))
    n = draw(st.integers(1, 8))
    kind = draw(st.sampled_from(["random", "random", "random", "chain", "star", "empty"]))
    if kind == "random":
        parents = [draw(st.integers(0, v - 1)) for v in range(1, n)]
        keep = draw(st.lists(st.booleans(), min_size=n - 1, max_size=n - 1))
        if draw(st.booleans()):  # half the time a spanning tree, else a forest
            keep = [True] * (n - 1)
        pairs = [(u, v) for v, u, k in zip(range(1, n), parents, keep, strict=True) if k]
    elif kind == "chain":
        pairs = [(v, v + 1) for v in range(n - 1)]
    elif kind == "star":
        pairs = [(0, v) for v in range(1, n)]
    else:
        pairs = []
    perm = draw(st.permutations(range(n)))
    pairs = [tuple(sorted((perm[a], perm[b]))) for a, b in pairs]
    pairs = draw(st.permutations(pairs)) if pairs else pairs
    edges = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)
    return n, K, edges


def tables(seed: int, mode: str, B: int, n: int, K: int, E: int, dtype=torch.float64):
    """Unary ``[B, n, K]`` and pairwise ``[B, E, K, K]``: small integers (ties), reals or zeros."""
    rng = np.random.default_rng(seed)
    if mode == "int":
        u = rng.integers(-2, 3, size=(B, n, K))
        w = rng.integers(-2, 3, size=(B, E, K, K))
    elif mode == "zeros":
        u, w = np.zeros((B, n, K)), np.zeros((B, E, K, K))
    else:
        scale = {"real": 1.0, "small": 1e-3, "large": 30.0}[mode]
        u = rng.normal(size=(B, n, K)) * scale
        w = rng.normal(size=(B, E, K, K)) * scale
    return torch.tensor(u, dtype=dtype), torch.tensor(w, dtype=dtype)


problems = st.tuples(
    forests(),
    st.integers(1, 3),
    st.integers(0, 2**32 - 1),
    st.sampled_from(["int", "int", "real", "small", "large", "zeros"]),
)


def make(problem, dtype=torch.float64) -> Potentials:
    (n, K, edges), B, seed, mode = problem
    u, w = tables(seed, mode, B, n, K, edges.shape[0], dtype)
    return Potentials(u, edges, w)


def tol(p: Potentials) -> float:
    big = float(p.unary.abs().sum((1, 2)).max() + p.pairwise.abs().sum((1, 2, 3)).max())
    eps = 1e-12 if p.dtype == torch.float64 else 1e-6
    return eps * (1.0 + big)


# ------------------------------------------------------------------- arg max
@SETTINGS
@given(problems, st.sampled_from([torch.float64, torch.float32]))
def test_argmax_equals_brute_force(problem, dtype):
    p = make(problem, dtype)
    z = SOLVER(p)
    assert z.dtype == torch.long and z.shape == (p.batch_size, p.num_vars)
    best = enumerate_scores(p).max(1).values
    torch.testing.assert_close(p.score(z).to(best.dtype), best, rtol=0, atol=tol(p))


@settings(max_examples=25, deadline=None)
@given(problems, st.sampled_from([torch.float16, torch.bfloat16]))
def test_argmax_half_precision(problem, dtype):
    p = make(problem, dtype)
    z = SOLVER(p)
    best = enumerate_scores(p).max(1).values  # float32 scores of the half tables
    p32 = p.to(torch.float32)
    torch.testing.assert_close(p32.score(z), best, rtol=0, atol=1e-5 * (1 + best.abs().max()))
    logz = tree_log_partition(p)
    assert logz.dtype == torch.float32
    torch.testing.assert_close(logz, enumerate_scores(p32).logsumexp(1), rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------- log partition
@SETTINGS
@given(problems)
def test_log_partition_and_marginals(problem):
    p = make(problem, torch.float64)
    u1 = p.unary.clone().requires_grad_()
    w1 = p.pairwise.clone().requires_grad_()
    logz = tree_log_partition(Potentials(u1, p.edges, w1))
    u2 = p.unary.clone().requires_grad_()
    w2 = p.pairwise.clone().requires_grad_()
    ref = enumerate_scores(Potentials(u2, p.edges, w2)).logsumexp(1)
    assert logz.shape == (p.batch_size,)
    torch.testing.assert_close(logz, ref, rtol=1e-10, atol=1e-10)
    # gradient = marginals; weight samples differently so mixing them up would show
    weights = torch.arange(1, p.batch_size + 1, dtype=torch.float64)
    (logz * weights).sum().backward()
    (ref * weights).sum().backward()
    torch.testing.assert_close(u1.grad, u2.grad, rtol=1e-9, atol=1e-10)
    if p.has_edges:  # without edges the (empty) pairwise tables take no part
        torch.testing.assert_close(w1.grad, w2.grad, rtol=1e-9, atol=1e-10)
    marg = u1.grad / weights[:, None, None]
    torch.testing.assert_close(marg.sum(-1), torch.ones(p.batch_size, p.num_vars).double())


def test_large_forest_max_and_log_partition_agree():
    """log Z(beta h) / beta -> max h: 0 <= log Z(beta h)/beta - max h <= n log K / beta."""
    g = torch.Generator().manual_seed(0)
    n, K, B, beta = 300, 3, 4, 200.0
    parents = [int(torch.randint(0, v, (1,), generator=g)) for v in range(1, n)]
    perm = torch.randperm(n, generator=g).tolist()
    pairs = sorted(
        tuple(sorted((perm[u], perm[v]))) for v, u in zip(range(1, n), parents, strict=True)
    )
    edges = torch.tensor(pairs[:-7])  # drop a few edges: a forest
    u = torch.randn(B, n, K, generator=g, dtype=torch.float64)
    w = torch.randn(B, edges.shape[0], K, K, generator=g, dtype=torch.float64)
    p = Potentials(u, edges, w)
    top = p.score(TreeSolver()(p))
    gap = tree_log_partition(Potentials(u * beta, edges, w * beta)) / beta - top
    assert bool((gap >= -1e-9).all()) and bool((gap <= n * math.log(K) / beta).all()), gap


# --------------------------------------------------------------- edge cases
def test_cycle_is_refused():
    edges = torch.tensor([[0, 1], [1, 4], [2, 3], [0, 4], [4, 5]])
    p = Potentials(torch.zeros(2, 6, 2), edges, torch.zeros(2, 5, 2, 2))
    solver = TreeSolver()
    with pytest.raises(ValueError, match="cycle") as info:
        solver(p)
    msg = str(info.value)
    assert "'exact'" in msg and "'graphcut'" in msg and "'ilp'" in msg
    i, j = map(int, re.search(r"edge \((\d+), (\d+)\)", msg).groups())
    assert (i, j) in {(0, 1), (1, 4), (0, 4)}
    assert not solver.supports(p)
    with pytest.raises(ValueError, match="cycle"):
        tree_log_partition(p)


def test_registered_and_schedule():
    assert isinstance(get_solver("tree"), TreeSolver)
    # components {0, 1, 2} (0-2-1), {3}, {4, 5}: each rooted at its lowest node
    s = forest_schedule(torch.tensor([[1, 2], [0, 2], [4, 5]]), 6)
    assert s.roots.tolist() == [0, 3, 4]
    assert s.depth == 2
    assert sorted(s.child.tolist()) == [1, 2, 5]


def test_cache_follows_in_place_edge_changes():
    solver = TreeSolver()
    edges = chain_edges(4)
    u = torch.zeros(1, 4, 2)
    w = torch.zeros(1, 3, 2, 2)
    w[0, :, 0, 1] = 1.0  # z_i = 0, z_j = 1 rewarded on every edge
    p = Potentials(u, edges, w)
    assert p.edges is edges  # the identity fast path of the schedule cache is in use
    z = solver(p)
    assert float(p.score(z)) == float(enumerate_scores(p).max())
    p.edges[2] = torch.tensor([0, 3])  # same tensor, new forest: 0-1, 1-2, 0-3
    z = solver(p)
    assert float(p.score(z)) == float(enumerate_scores(p).max())


def test_does_not_modify_inputs():
    p = make(((5, 3, torch.tensor([[0, 1], [1, 2], [3, 4]])), 2, 7, "real"), torch.float32)
    u, w = p.unary.clone(), p.pairwise.clone()
    SOLVER(p)
    tree_log_partition(p)
    assert torch.equal(u, p.unary) and torch.equal(w, p.pairwise)


# ------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(1)
    n, K, B = 7, 3, 16
    edges = torch.tensor([[0, 4], [1, 4], [2, 6], [4, 5], [3, 5]])
    u = torch.randint(-2, 3, (B, n, K), generator=g).float()
    w = torch.randint(-2, 3, (B, edges.shape[0], K, K), generator=g).float()
    p = Potentials(u, edges, w).to("cuda")
    best = enumerate_scores(p).max(1).values
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        z = TreeSolver()(p.to(dtype))
        assert z.device.type == "cuda" and z.dtype == torch.long
        torch.testing.assert_close(p.score(z), best, rtol=0, atol=1e-5)
    uu = p.unary.clone().requires_grad_()
    logz = tree_log_partition(Potentials(uu, p.edges, p.pairwise))
    logz.sum().backward()
    ref = enumerate_scores(p.to("cpu").to(torch.float64)).logsumexp(1)
    torch.testing.assert_close(logz.cpu().double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(uu.grad.sum(-1).cpu(), torch.ones(B, n))

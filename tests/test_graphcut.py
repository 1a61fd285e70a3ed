"""The graph-cut solver against brute force, its checks, dtypes and devices."""

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import structvae as sv
from structvae.solvers import enumerate_scores, get_solver
from structvae.solvers.graphcut import GraphCutSolver


# ---------------------------------------------------------------------- helpers
def supermodular(B, n, edges, seed, scale=1.0, zero_margin=0.0, integer=False):
    """Random general tables [[a, b], [c, d]] with d = b + c - a + margin, margin >= 0.

    ``zero_margin`` is the fraction of tables whose margin is exactly 0; ``integer`` rounds
    everything to small integers (many ties).
    """
    rng = np.random.default_rng(seed)
    E = edges.shape[0]
    unary = rng.normal(size=(B, n, 2)) * scale
    abc = rng.normal(size=(B, E, 3)) * scale
    margin = rng.exponential(size=(B, E)) * scale * (rng.random((B, E)) >= zero_margin)
    if integer:
        unary, abc, margin = unary.round(), abc.round(), margin.round()
    a, b, c = abc[..., 0], abc[..., 1], abc[..., 2]
    pairwise = np.stack([a, b, c, b + c - a + margin], axis=-1).reshape(B, E, 2, 2)
    return sv.Potentials(torch.tensor(unary), edges, torch.tensor(pairwise))


def assert_optimal(p, z):
    """z's score equals the brute-force maximum (scores, not z: ties are allowed)."""
    assert z.shape == (p.batch_size, p.num_vars) and z.dtype == torch.long
    assert z.device == p.device
    p64 = p.to(torch.float64)
    best = enumerate_scores(p64).max(1).values
    got = p64.score(z.to(p64.device))
    size = p64.unary.abs().amax() + (p64.pairwise.abs().amax() if p64.has_edges else 0)
    atol = 1e-9 * float(size) * (p.num_vars + 4 * p.num_edges + 1)
    assert torch.all(got >= best - atol), (got - best).min()


edge_sets = st.sampled_from(["none", "chain", "complete", "random"])


def make_edges(kind, n, seed):
    if kind != "random":
        return sv.make_edges(kind, n)
    pairs = list(itertools.combinations(range(n), 2))
    keep = np.random.default_rng(seed).random(len(pairs)) < 0.5
    return torch.tensor(list(itertools.compress(pairs, keep)), dtype=torch.long).reshape(-1, 2)


# ------------------------------------------------------------ brute-force checks
@given(
    B=st.integers(1, 4),
    n=st.integers(1, 8),
    kind=edge_sets,
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    zero_margin=st.sampled_from([0.0, 0.5, 1.0]),
    integer=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
@settings(max_examples=100, deadline=None)
def test_general_supermodular_tables_match_brute_force(
    B, n, kind, scale, zero_margin, integer, seed
):
    p = supermodular(B, n, make_edges(kind, n, seed), seed, scale, zero_margin, integer)
    assert_optimal(p, GraphCutSolver()(p))


@given(
    B=st.integers(1, 4),
    n=st.integers(1, 8),
    kind=edge_sets,
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    seed=st.integers(0, 2**31 - 1),
)
@settings(max_examples=60, deadline=None)
def test_binary_form_with_nonnegative_couplings(B, n, kind, scale, seed):
    edges = make_edges(kind, n, seed)
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(B, n, generator=g, dtype=torch.float64) * scale
    coupling = torch.rand(B, edges.shape[0], generator=g, dtype=torch.float64) * scale
    coupling[coupling < 0.2 * scale] = 0.0  # some exactly-zero couplings (dropped arcs)
    p = sv.Potentials.binary(theta, edges, coupling)
    assert_optimal(p, get_solver("graphcut")(p))


def test_all_ties_give_zeros_and_a_maximiser():
    edges = sv.make_edges("complete", 5)
    p = sv.Potentials(torch.zeros(3, 5, 2), edges, torch.zeros(3, edges.shape[0], 2, 2))
    z = GraphCutSolver()(p)
    assert torch.equal(z, torch.zeros(3, 5, dtype=torch.long))


def test_batch_of_one_and_single_variable():
    p = supermodular(1, 6, sv.make_edges("complete", 6), seed=3)
    assert_optimal(p, GraphCutSolver()(p))
    for value, expected in [(2.0, 1), (-2.0, 0)]:
        single = sv.Potentials(torch.tensor([[[0.0, value]]]))
        assert GraphCutSolver()(single).tolist() == [[expected]]


def test_empty_batch():
    p = sv.Potentials(torch.zeros(0, 4, 2), sv.make_edges("chain", 4), torch.zeros(0, 3, 2, 2))
    assert GraphCutSolver()(p).shape == (0, 4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_input_dtypes(dtype):
    p = supermodular(4, 7, sv.make_edges("complete", 7), seed=5).to(dtype)
    z = GraphCutSolver()(p)
    # exact for the potentials as given: the float64 solve sees the rounded values exactly
    assert_optimal(p, z)


def test_build_graph_exposes_the_bare_maxflow():
    p = supermodular(8, 10, sv.make_edges("complete", 10), seed=7)
    s = GraphCutSolver()
    graph, nodes = s.build_graph(p)
    assert nodes.shape == (8, 10)
    graph.maxflow()
    z = torch.from_numpy(graph.get_grid_segments(nodes)).long()
    assert torch.equal(p.score(z), p.score(s(p)))


def test_reuse_between_check_and_solve_is_safe():
    s = GraphCutSolver()
    edges = sv.make_edges("complete", 6)
    p, q = supermodular(3, 6, edges, seed=1), supermodular(3, 6, edges, seed=2)
    s.check(p)  # leaves p's tables for the next solve; solving q must not use them
    assert_optimal(q, s.solve(q))
    s.check(p)
    with torch.no_grad():
        p.unary.neg_()  # in-place change after check: the tables are rebuilt
    assert_optimal(p, s.solve(p))
    # layouts are cached per (B, n, edges): a new batch size or edge set gets its own
    assert_optimal(supermodular(5, 6, edges, seed=3), s(supermodular(5, 6, edges, seed=3)))
    chain = supermodular(3, 6, sv.make_edges("chain", 6), seed=4)
    assert_optimal(chain, s(chain))
    longer = supermodular(3, 8, chain.edges, seed=5)  # the very same edges tensor, larger n
    assert_optimal(longer, s(longer))


def test_unsorted_edges():
    edges = torch.tensor([[2, 3], [0, 3], [1, 2], [0, 1], [0, 2]])
    p = supermodular(4, 4, edges, seed=11)
    assert_optimal(p, GraphCutSolver()(p))


def test_hint_is_accepted_and_ignored():
    p = supermodular(2, 5, sv.make_edges("chain", 5), seed=9)
    s = GraphCutSolver()
    assert torch.equal(s(p, hint=torch.zeros(2, 5, dtype=torch.long)), s(p))


# ------------------------------------------------------------------------ errors
def test_non_supermodular_edge_names_sample_and_edge():
    edges = sv.make_edges("complete", 4)  # edge 2 is (0, 3)
    pairwise = torch.zeros(3, edges.shape[0], 2, 2)
    pairwise[1, 2, 0, 1] = 0.5  # margin -0.5 at sample 1, edge 2
    pairwise[2, 0, 1, 0] = 1.0  # a later offender
    p = sv.Potentials(torch.zeros(3, 4, 2), edges, pairwise)
    with pytest.raises(ValueError, match=r"sample 1, edge 2 = \(0, 3\) has margin -0\.5") as err:
        GraphCutSolver()(p)
    assert "'ilp'" in str(err.value) and "softplus" in str(err.value)
    assert not GraphCutSolver().supports(p)
    # the paper's form with a negative coupling is refused the same way
    coupling = torch.tensor([[0.3, -0.2]])
    bad = sv.Potentials.binary(torch.zeros(1, 3), sv.make_edges("chain", 3), coupling)
    with pytest.raises(ValueError, match=r"sample 0, edge 1 = \(1, 2\)"):
        GraphCutSolver()(bad)


def test_tolerance_is_scaled_by_the_table_magnitude():
    edges = sv.make_edges("chain", 3)
    pairwise = torch.zeros(1, 2, 2, 2, dtype=torch.float64)
    pairwise[0, 0, 0, 1] = 1e-9  # margin -1e-9: within the default tolerance
    assert GraphCutSolver().supports(sv.Potentials(torch.zeros(1, 3, 2), edges, pairwise.float()))
    big = pairwise.clone()
    big[0, 1] = torch.tensor([[1e3, 0.0], [0.0, 1e3]])
    big[0, 1, 0, 1] = 2e3 + 5e-4  # margin -5e-4 on entries ~2e3: within 1e-6 * 2e3
    p = sv.Potentials(torch.zeros(1, 3, 2, dtype=torch.float64), edges, big)
    assert_optimal(p, GraphCutSolver()(p))
    with pytest.raises(ValueError, match="sample 0, edge 1"):
        GraphCutSolver(tol=1e-9)(p)
    with pytest.raises(ValueError, match="tol must be >= 0"):
        GraphCutSolver(tol=-1.0)


def test_refuses_more_than_two_states():
    p = sv.Potentials(torch.zeros(2, 3, 3), sv.make_edges("chain", 3), torch.zeros(2, 2, 3, 3))
    with pytest.raises(ValueError, match="K = 2"):
        GraphCutSolver()(p)


# -------------------------------------------------------------------------- cuda
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_potentials_come_back_on_cuda():
    p = supermodular(16, 8, sv.make_edges("complete", 8), seed=13).to("cuda")
    for dtype in (torch.float32, torch.float16):
        z = GraphCutSolver()(p.to(dtype))
        assert z.device.type == "cuda"
        assert_optimal(p.to(dtype), z)

import itertools

import networkx as nx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import structvae as sv
from structvae.graphs import is_forest, make_edges
from structvae.solvers import all_assignments, enumerate_scores


def random_potentials(B=3, n=4, K=3, edges="complete", dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    e = make_edges(edges, n)
    return sv.Potentials(
        torch.randn(B, n, K, generator=g, dtype=dtype),
        e,
        torch.randn(B, e.shape[0], K, K, generator=g, dtype=dtype),
    )


def manual_score(p, z):
    u, e, pw = p.numpy()
    out = []
    for b in range(p.batch_size):
        s = sum(u[b, i, z[b, i]] for i in range(p.num_vars))
        s += sum(pw[b, k, z[b, i], z[b, j]] for k, (i, j) in enumerate(e))
        out.append(s)
    return torch.tensor(out)


@given(
    n=st.integers(1, 5),
    K=st.integers(1, 4),
    graph=st.sampled_from(["none", "chain", "complete", "grid", "tree"]),
    seed=st.integers(0, 10_000),
)
@settings(max_examples=40, deadline=None)
def test_score_matches_manual_sum(n, K, graph, seed):
    p = random_potentials(2, n, K, graph, torch.float64, seed)
    z = torch.randint(0, K, (2, n), generator=torch.Generator().manual_seed(seed))
    assert torch.allclose(p.score(z), manual_score(p, z.numpy()))


def test_score_with_sample_dim_and_gradient():
    p = random_potentials(2, 3, 2)
    A = all_assignments(3, 2)
    s = p.score(A[None].expand(2, -1, -1))
    assert s.shape == (2, 8)
    assert torch.allclose(s, enumerate_scores(p), atol=1e-5)
    unary = p.unary.clone().requires_grad_()
    q = sv.Potentials(unary, p.edges, p.pairwise)
    z = torch.tensor([[0, 1, 1], [1, 0, 0]])
    q.score(z).sum().backward()
    assert torch.equal(unary.grad, torch.nn.functional.one_hot(z, 2).float())


def test_binary_form():
    theta = torch.tensor([[1.0, -2.0, 0.5]])
    e = sv.complete_edges(3)
    c = torch.tensor([[0.3, 0.0, 2.0]])
    p = sv.Potentials.binary(theta, e, c)
    for z in itertools.product([0, 1], repeat=3):
        zt = torch.tensor([z])
        want = (theta * zt).sum() + sum(
            c[0, k] * z[i] * z[j] for k, (i, j) in enumerate(e.tolist())
        )
        assert torch.allclose(p.score(zt), want.reshape(1))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(unary=torch.randn(3, 2)), r"unary must have shape \[B, n, K\]"),
        (dict(unary=torch.ones(1, 2, 2, dtype=torch.long)), "floating"),
        (dict(unary=torch.tensor([[[0.0, float("nan")]]])), "unary contains NaN"),
        (dict(unary=torch.tensor([[[0.0, float("inf")]]])), "unary contains NaN or inf"),
        (
            dict(unary=torch.zeros(1, 2, 2), edges=torch.tensor([[0, 1]])),
            "pairwise is missing",
        ),
        (
            dict(
                unary=torch.zeros(1, 2, 2),
                edges=torch.tensor([[1, 0]]),
                pairwise=torch.zeros(1, 1, 2, 2),
            ),
            "i < j",
        ),
        (
            dict(
                unary=torch.zeros(1, 2, 2),
                edges=torch.tensor([[0, 2]]),
                pairwise=torch.zeros(1, 1, 2, 2),
            ),
            "out of range",
        ),
        (
            dict(
                unary=torch.zeros(1, 3, 2),
                edges=torch.tensor([[0, 1], [0, 1]]),
                pairwise=torch.zeros(1, 2, 2, 2),
            ),
            "duplicate",
        ),
        (
            dict(
                unary=torch.zeros(1, 2, 2),
                edges=torch.tensor([[0, 1]]),
                pairwise=torch.zeros(1, 1, 2, 3),
            ),
            r"pairwise must have shape \[B, E, K, K\]",
        ),
        (
            dict(
                unary=torch.zeros(1, 2, 2),
                edges=torch.tensor([0, 1]),
                pairwise=torch.zeros(1, 1, 2, 2),
            ),
            r"edges must have shape \[E, 2\]",
        ),
        (
            dict(
                unary=torch.zeros(1, 2, 2),
                edges=torch.tensor([[0, 1]]),
                pairwise=torch.full((1, 1, 2, 2), float("nan")),
            ),
            "pairwise contains NaN",
        ),
    ],
)
def test_invalid_input_names_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sv.Potentials(**kwargs)


def test_with_unary_checks_shape_and_finiteness():
    p = random_potentials()
    with pytest.raises(ValueError, match="keep shape"):
        p.with_unary(torch.zeros(1, 1, 1))
    with pytest.raises(ValueError, match="NaN"):
        p.with_unary(torch.full_like(p.unary, float("nan")))


def test_score_rejects_wrong_shape():
    p = random_potentials()
    with pytest.raises(ValueError, match="z must have shape"):
        p.score(torch.zeros(3, 5, dtype=torch.long))


def test_indexing_and_to():
    p = random_potentials(B=4)
    assert p[1].batch_size == 1 and torch.equal(p[1].unary, p.unary[1:2])
    assert p[-1].batch_size == 1 and torch.equal(p[-1].unary, p.unary[3:])
    q = p.to(torch.float64)
    assert q.dtype == torch.float64 and q.edges.dtype == torch.long


def test_edge_builders():
    assert sv.complete_edges(4).shape == (6, 2)
    assert sv.chain_edges(4).tolist() == [[0, 1], [1, 2], [2, 3]]
    assert sv.grid_edges(2, 3).shape == (7, 2)
    g = nx.cycle_graph(4)
    assert sv.edges_from_graph(g).tolist() == [[0, 1], [0, 3], [1, 2], [2, 3]]
    assert is_forest(make_edges("tree", 9), 9) and not is_forest(make_edges("complete", 3), 3)
    assert make_edges("none", 3).shape == (0, 2)
    with pytest.raises(ValueError, match="unknown graph"):
        make_edges("ring", 3)
    with pytest.raises(ValueError, match="integers"):
        sv.edges_from_graph(nx.Graph([("a", "b")]))
    for spec in ["complete", "chain", "grid", "tree"]:
        e = make_edges(spec, 6)
        sv.Potentials(torch.zeros(1, 6, 2), e, torch.zeros(1, e.shape[0], 2, 2))  # canonical


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_gumbel_is_finite_and_standard(dtype):
    g = sv.sample_gumbel((200_000,), dtype=dtype, generator=torch.Generator().manual_seed(0))
    assert g.dtype == dtype and torch.isfinite(g).all()
    # standard Gumbel: mean = Euler-Mascheroni constant, variance = pi^2 / 6
    assert abs(g.double().mean().item() - 0.5772) < 0.02
    assert abs(g.double().var().item() - 1.6449) < 0.05


def test_gumbel_never_infinite_at_uniform_extremes(monkeypatch):
    def extreme(shape, **kw):
        return torch.tensor([0.0, 1.0 - 2**-24, 0.5]).to(kw.get("dtype") or torch.float32)

    monkeypatch.setattr(torch, "rand", extreme)
    assert torch.isfinite(sv.sample_gumbel((3,))).all()

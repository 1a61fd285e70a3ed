"""binary_gibbs_kl (split enumeration) against brute force, and the structured model's KL option."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from structvae.gibbs import MAX_GIBBS_VARS, binary_gibbs_kl
from structvae.graphs import make_edges
from structvae.models import StructuredVAE
from structvae.potentials import Potentials
from structvae.solvers import all_assignments


def _brute_kl(p: Potentials) -> torch.Tensor:
    """KL(q || uniform), q ∝ exp h, from every assignment's score (Potentials.score)."""
    n = p.num_vars
    z = all_assignments(n, 2)[None].expand(p.batch_size, -1, -1)
    q = torch.softmax(p.score(z), 1)
    return (q * torch.log(q)).sum(1) + n * math.log(2)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 9),
    graph=st.sampled_from([None, "complete", "chain", "grid", "random"]),
    batch=st.integers(1, 5),
    scale=st.sampled_from([0.1, 1.0, 5.0]),
    seed=st.integers(0, 2**16),
)
def test_kl_and_gradient_match_brute_force(n, graph, batch, scale, seed):
    g = torch.Generator().manual_seed(seed)
    if graph == "random":
        all_e = make_edges("complete", n)
        keep = torch.rand(len(all_e), generator=g) < 0.5
        edges = all_e[keep]
    else:
        edges = make_edges(graph, n)
    E = len(edges)
    u = (scale * torch.randn(batch, n, 2, generator=g, dtype=torch.float64)).requires_grad_()
    pw = (scale * torch.randn(batch, E, 2, 2, generator=g, dtype=torch.float64)).requires_grad_()
    p = Potentials(u, edges if E else None, pw if E else None)
    ours, ref = binary_gibbs_kl(p), _brute_kl(p)
    assert torch.allclose(ours, ref, atol=1e-9, rtol=1e-9)
    assert (ours > -1e-9).all()  # a KL is non-negative
    w = torch.randn(batch, generator=g, dtype=torch.float64)  # a random upstream gradient
    inputs = [u, pw] if E else [u]
    g1 = torch.autograd.grad((ours * w).sum(), inputs)
    g2 = torch.autograd.grad((ref * w).sum(), inputs)
    for a, b in zip(g1, g2, strict=True):
        assert torch.allclose(a, b, atol=1e-8, rtol=1e-7)


def test_many_chunks_and_float32_n15():
    torch.manual_seed(0)
    edges = make_edges("complete", 15)
    u = torch.randn(40, 15, dtype=torch.float64)
    c = torch.rand(40, len(edges), dtype=torch.float64)
    p64 = Potentials.binary(u, edges, c)
    p32 = Potentials.binary(u.float(), edges, c.float())
    ref = _brute_kl(p64)
    assert torch.allclose(binary_gibbs_kl(p64), ref, atol=1e-9)
    assert torch.allclose(binary_gibbs_kl(p32).double(), ref, atol=1e-3)


def test_no_grad_path_and_errors():
    p = Potentials.binary(torch.randn(3, 4), make_edges("chain", 4), torch.randn(3, 3))
    with torch.no_grad():
        assert torch.allclose(binary_gibbs_kl(p).double(), _brute_kl(p).double(), atol=1e-5)
    with pytest.raises(ValueError, match="K = 2"):
        binary_gibbs_kl(Potentials(torch.randn(2, 3, 3)))
    n = MAX_GIBBS_VARS + 1
    with pytest.raises(ValueError, match="limit"):
        binary_gibbs_kl(
            Potentials.binary(torch.zeros(1, n), make_edges("chain", n), torch.zeros(1, n - 1))
        )


def test_structured_kl_option():
    kw = dict(pairwise="general", graph="complete", hidden=(8,), input_dim=10)
    x = (torch.rand(6, 10) > 0.5).float()
    exact = StructuredVAE(5, kl="auto", **kw)
    fact = StructuredVAE(5, kl="factorised", **kw)
    fact.load_state_dict(exact.state_dict())
    assert exact.kl_kind == "exact-gibbs" and fact.kl_kind == "factorised-approx"
    p = exact.encode(x)
    assert torch.allclose(exact.kl(p), _brute_kl(p), atol=1e-5)
    logq = torch.log_softmax(p.unary, -1)
    assert torch.allclose(fact.kl(p), (logq.exp() * logq).sum((1, 2)) + 5 * math.log(2))
    assert exact.loss_is_bound is False and StructuredVAE(5, pairwise="none").loss_is_bound
    # without edges every choice is the closed-form exact KL
    assert StructuredVAE(5, pairwise="none", kl="factorised").kl_kind == "exact-gibbs"
    with pytest.raises(ValueError, match="kl='exact'"):
        StructuredVAE(22, kl="exact", **kw)
    with pytest.raises(ValueError, match="kl must be one of"):
        StructuredVAE(5, kl="gibbs", **kw)


def test_train_reports_kl_kind_and_bound(tmp_path):
    from structvae.train import TrainConfig, train

    cfg = TrainConfig(
        model="structured",
        latent="6",
        kl="factorised",
        epochs=1,
        max_steps=3,
        eval_samples=2,
        out=str(tmp_path / "run"),
        quiet=True,
    )
    res = train(cfg)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["kl_kind"] == saved["kl_kind"] == "factorised-approx"
    assert saved["test_loss_is_bound"] is False
    with pytest.raises(ValueError, match="only applies to --model structured"):
        train(TrainConfig(kl="exact", max_steps=1, out=str(tmp_path / "r2"), quiet=True))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 10), seed=st.integers(0, 2**16), ties=st.booleans())
def test_split_argmax_is_a_maximiser(n, seed, ties):
    from structvae.gibbs import split_argmax

    g = torch.Generator().manual_seed(seed)
    edges = make_edges("complete", n)
    u = torch.randn(4, n, 2, generator=g, dtype=torch.float64)
    pw = torch.randn(4, len(edges), 2, 2, generator=g, dtype=torch.float64)
    if ties:  # integer potentials: many assignments share the best score
        u, pw = u.round(), pw.round()
    p = Potentials(u, edges if len(edges) else None, pw if len(edges) else None)
    z_all = all_assignments(n, 2)
    scores = p.score(z_all[None].expand(4, -1, -1))
    best = split_argmax(p) if n >= 2 else scores.argmax(1)
    assert torch.equal(scores.gather(1, best[:, None])[:, 0], scores.max(1).values)

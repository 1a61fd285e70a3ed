"""The structured binary VAE: shapes, solver checks, exact Gibbs KL, IWAE and a short training."""

from __future__ import annotations

import math

import networkx as nx
import pytest
import torch

from structvae.estimators import get_estimator
from structvae.models import StructuredVAE, build_model
from structvae.potentials import Potentials
from structvae.solvers import all_assignments, get_solver

D = 20


def _x(B: int, seed: int = 0, d: int = D) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, d, generator=g) > 0.5).float()


def _model(n=4, pairwise="general", graph="complete", **kw) -> StructuredVAE:
    torch.manual_seed(0)
    return StructuredVAE(n, pairwise=pairwise, graph=graph, hidden=(16,), input_dim=D, **kw)


def _brute_kl(p: Potentials) -> torch.Tensor:
    """KL(q || uniform) with q ∝ exp h computed from every assignment's score."""
    n = p.num_vars
    z = all_assignments(n, 2)[None].expand(p.batch_size, -1, -1)  # [B, 2^n, n]
    h = p.score(z)  # [B, 2^n]
    q = torch.softmax(h, 1)
    return (q * torch.log(q)).sum(1) + n * math.log(2)


@pytest.mark.parametrize("pairwise", ["supermodular", "general", "none"])
@pytest.mark.parametrize("graph", ["complete", "chain", "grid", "tree", "nx"])
def test_shapes(pairwise, graph):
    n = 6
    g = nx.cycle_graph(n) if graph == "nx" else graph
    m = _model(n, pairwise, g)
    expected_edges = {"complete": 15, "chain": 5, "grid": 7, "tree": 5, "nx": 6}[graph]
    E = 0 if pairwise == "none" else expected_edges
    assert m.num_edges == E
    assert m.encoder[-1].out_features == n + E and m.decoder[0].in_features == 2 * n
    x = _x(3)
    p = m.encode(x)
    assert p.unary.shape == (3, n, 2) and p.pairwise.shape == (3, E, 2, 2) and p.num_edges == E
    assert m.kl(p).shape == (3,) and m.kl_kind == "exact-gibbs"
    out = m.one_sample_loss(x, generator=torch.Generator().manual_seed(0))
    assert set(out) == {"loss", "recon", "kl"} and out["loss"].shape == (3,)
    assert torch.allclose(out["loss"], out["recon"] + out["kl"])
    assert m.iwae_nll(x, samples=5).shape == (3,)
    assert m.sample(4).shape == (4, D) and m.reconstruct(x).shape == (3, D)
    assert m.loss_fn(x)(
        torch.nn.functional.one_hot(torch.randint(2, (3, 5, n)), 2).float()
    ).shape == (
        3,
        5,
    )
    if pairwise == "none":
        assert m.default_solver == "independent"
    elif pairwise == "supermodular":
        assert m.default_solver == "graphcut"
    else:
        assert m.default_solver == ("tree" if graph in ("chain", "tree") else "exact")
    assert m.solver.name == m.default_solver


def test_supermodular_couplings_nonnegative_and_graphcut_exact():
    m = _model(6, "supermodular")
    with torch.no_grad():
        m.encoder[-1].bias[6:] = -3.0  # softplus of negative raw values stays >= 0
    p = m.encode(_x(8)).detach()
    assert float(p.pairwise[..., 1, 1].min()) >= 0
    assert float(p.supermodular_margin().min()) >= 0
    gc = get_solver("graphcut")
    gc.check(p)
    assert torch.equal(gc(p), get_solver("exact")(p))


def test_solver_family_mismatch_is_a_clear_error():
    m = _model(5, "general")
    with pytest.raises(ValueError, match="supermodular"):
        m.check_solver("graphcut")
    with pytest.raises(ValueError, match="supermodular"):
        m.check_solver(get_solver("graphcut"))
    with pytest.raises(ValueError, match="supermodular"):
        _model(5, "general", solver="graphcut")
    with pytest.raises(ValueError, match="independent"):
        m.check_solver("independent")
    with pytest.raises(ValueError, match="forest"):
        m.check_solver("tree")
    with pytest.raises(ValueError, match="unknown solver"):
        m.check_solver("nope")
    for ok in ("exact", "ilp"):
        m.check_solver(ok)
    _model(5, "supermodular").check_solver("graphcut")
    _model(5, "none").check_solver("graphcut")
    # the objective checks the estimator's solver before it runs
    est = get_estimator("direct", solver="graphcut", eps=0.5)
    with pytest.raises(ValueError, match="supermodular"):
        m.objective(_x(2), est)


def test_objective_gives_the_model_solver_to_an_estimator_without_one():
    m = _model(5, "supermodular")
    est = get_estimator("direct", eps=0.5)
    total, stats = m.objective(_x(4), est)
    assert est.solver is m.solver and est.solver.name == "graphcut"
    total.backward()
    assert {"loss", "recon", "kl", "eps"} <= set(stats)


def test_exact_gibbs_kl_matches_brute_force_n4():
    m = _model(4, "general").double()
    p = m.encode(_x(5).double())
    assert m.kl_kind == "exact-gibbs" and m.solver.name == "exact"
    kl = m.kl(p)
    assert torch.allclose(kl, _brute_kl(p), atol=1e-10)
    assert float(kl.detach().min()) >= 0
    w = m.encoder[-1].weight
    (g1,) = torch.autograd.grad(kl.sum(), w)
    (g2,) = torch.autograd.grad(_brute_kl(m.encode(_x(5).double())).sum(), w)
    assert torch.allclose(g1, g2, atol=1e-10)


def test_forest_kl_matches_enumeration_n6_chain():
    m = _model(6, "general", "chain").double()
    assert m._forest and m.solver.name == "tree"
    x = _x(4).double()
    kl = m.kl(m.encode(x))
    ref = _brute_kl(m.encode(x))
    assert torch.allclose(kl, ref, atol=1e-9)
    w = m.encoder[-1].weight
    (g1,) = torch.autograd.grad(kl.sum(), w)
    (g2,) = torch.autograd.grad(ref.sum(), w)
    assert torch.allclose(g1, g2, atol=1e-9)
    with torch.no_grad():  # evaluation path (no graph) gives the same numbers
        assert torch.allclose(m.kl(m.encode(x)), ref.detach(), atol=1e-9)


def test_factorised_approx_when_too_large_and_iwae_refuses():
    m = _model(6, "general", "complete", exact_kl_max_vars=4)
    assert m.kl_kind == "factorised-approx"
    p = m.encode(_x(3))
    q = torch.sigmoid(p.unary[..., 1])
    ref = (q * q.log() + (1 - q) * (1 - q).log()).sum(1) + 6 * math.log(2)
    assert torch.allclose(m.kl(p), ref, atol=1e-5)
    with pytest.raises(ValueError, match="Gibbs"):
        m.iwae_nll(_x(3), samples=4)


@pytest.mark.parametrize("pairwise", ["general", "none"])
def test_iwae_approaches_exact_nll(pairwise):
    m = _model(4, pairwise).double()
    x = _x(3).double()
    z = torch.nn.functional.one_hot(all_assignments(4, 2), 2).double()[None].expand(3, -1, -1, -1)
    log_px = torch.logsumexp(-m.loss_fn(x)(z), 1) - 4 * math.log(2)
    est = m.iwae_nll(x, samples=4000, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(est, -log_px, atol=0.05)


def test_latent_spec_parsing():
    assert build_model("structured", latent=7, input_dim=D, hidden=(8,)).num_latents == 7
    assert build_model("structured", latent="7", input_dim=D, hidden=(8,)).num_latents == 7
    assert build_model("structured", latent="7x2", input_dim=D, hidden=(8,)).num_latents == 7
    m = build_model("structured", input_dim=D, hidden=(8,), pairwise="general", graph="chain")
    assert m.num_latents == 15 and m.num_edges == 14
    for bad in ("1x10", "x", "0"):
        with pytest.raises(ValueError, match="latent"):
            build_model("structured", latent=bad, input_dim=D)
    with pytest.raises(ValueError, match="pairwise"):
        build_model("structured", latent=5, input_dim=D, pairwise="submodular")


def _prototype_data(N=200, d=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    protos = (torch.rand(3, d, generator=g) > 0.5).float()
    x = protos[torch.randint(3, (N,), generator=g)]
    flip = torch.rand(N, d, generator=g) < 0.05
    return torch.where(flip, 1 - x, x)


@pytest.mark.parametrize("pairwise", ["supermodular", "general", "none"])
def test_training_lowers_the_loss(pairwise):
    torch.manual_seed(0)
    m = StructuredVAE(6, pairwise=pairwise, hidden=(32,), input_dim=64)
    est = get_estimator("direct", solver=m.default_solver, eps=0.5)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    data = _prototype_data()
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(30):
        x = data[torch.randint(len(data), (50,), generator=g)]
        total, stats = m.objective(x, est, generator=g)
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(float(stats["loss"]))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 5, (first, last)

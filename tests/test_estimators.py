"""Estimators against the exact gradient by enumeration on small problems."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import structvae as sv
from structvae.estimators import (
    ExponentialDecay,
    coordinate_candidates,
    evaluate_losses,
    get_estimator,
    one_hot,
    paper_eps,
    paper_temperature,
)
from structvae.graphs import make_edges


def quadratic_loss(W, V=None):
    """A non-linear, non-separable loss of a one-hot z [B, C, n, K] -> [B, C]."""

    def loss_fn(z):
        lin = (z * W[:, None]).sum((-1, -2))
        out = lin**2 + lin
        if V is not None:
            out = out + torch.einsum("bcik,bcjl,ijkl->bc", z, z, V)
        return out

    return loss_fn


def exact_grad(theta, loss_fn):
    """∇_θ mean_b Σ_z q_b(z) L_b(z), q = Π softmax(θ_i), by explicit enumeration."""
    B, n, K = theta.shape
    theta = theta.detach().requires_grad_()
    logq = torch.log_softmax(theta, -1)
    total = 0.0
    for z in itertools.product(range(K), repeat=n):
        zt = torch.tensor(z)
        lq = logq[:, torch.arange(n), zt].sum(1)
        L = loss_fn(one_hot(zt, K, theta.dtype)[None, None].expand(B, 1, n, K))[:, 0]
        total = total + lq.exp() * L
    (g,) = torch.autograd.grad(total.mean(), theta)
    return g


def grad_of(est, theta, loss_fn, **kw):
    theta = theta.detach().requires_grad_()
    r = est(sv.Potentials(theta), loss_fn, **kw)
    (g,) = torch.autograd.grad(r.surrogate, theta)
    return g, r


def cosine(a, b):
    return F.cosine_similarity(a.flatten(), b.flatten(), 0).item()


@pytest.mark.parametrize("n, K", [(1, 5), (2, 3), (3, 2)])
def test_exact_estimator_equals_enumerated_gradient(n, K):
    torch.manual_seed(0)
    theta = torch.randn(4, n, K, dtype=torch.float64)
    loss_fn = quadratic_loss(
        torch.randn(4, n, K, dtype=torch.float64), torch.randn(n, n, K, K, dtype=torch.float64)
    )
    g, r = grad_of(get_estimator("exact"), theta, loss_fn)
    assert torch.allclose(g, exact_grad(theta, loss_fn), atol=1e-10)
    assert r.z.shape == (4, n) and r.loss.shape == (4,)


def test_exact_estimator_refuses_large_spaces():
    with pytest.raises(ValueError, match="above max_assignments = 1024"):
        get_estimator("exact")(sv.Potentials(torch.zeros(1, 11, 2)), lambda z: z.sum((-1, -2)))


@pytest.mark.parametrize("direction", ["towards-better", "away-from-worse"])
def test_direct_approaches_exact_gradient_n1(direction):
    torch.manual_seed(0)
    theta = torch.randn(3, 1, 6)
    loss_fn = quadratic_loss(torch.randn(3, 1, 6))
    g_exact = exact_grad(theta, loss_fn)
    est = get_estimator("direct", eps=0.1, samples=40_000, direction=direction)
    g, _ = grad_of(est, theta, loss_fn)
    assert cosine(g, g_exact) >= 0.95
    assert (g - g_exact).norm() <= 0.3 * g_exact.norm()


def test_direct_coordinate_candidates_exact_for_separable_loss():
    """With a loss that is a sum over coordinates, L̃ is L up to a constant: direct → exact."""
    torch.manual_seed(1)
    theta = torch.randn(2, 3, 3)
    W = torch.randn(2, 3, 3)

    def separable(z):
        return ((z * W[:, None]) ** 2 * 3 + z * W[:, None]).sum((-1, -2))

    g_exact = exact_grad(theta, separable)
    g, _ = grad_of(get_estimator("direct", eps=0.1, samples=30_000), theta, separable)
    assert cosine(g, g_exact) >= 0.95


def test_direct_all_candidates_for_non_separable_loss():
    torch.manual_seed(2)
    theta = torch.randn(2, 2, 3)
    loss_fn = quadratic_loss(torch.randn(2, 2, 3), 2 * torch.randn(2, 2, 3, 3))
    g_exact = exact_grad(theta, loss_fn)
    g, _ = grad_of(
        get_estimator("direct", eps=0.1, samples=30_000, candidates="all"), theta, loss_fn
    )
    assert cosine(g, g_exact) >= 0.95


def test_direct_bias_shrinks_with_eps():
    torch.manual_seed(3)
    theta = torch.randn(2, 1, 4)
    loss_fn = quadratic_loss(2 * torch.randn(2, 1, 4))
    g_exact = exact_grad(theta, loss_fn)
    errs = []
    for eps in [3.0, 0.3]:
        g, _ = grad_of(get_estimator("direct", eps=eps, samples=40_000), theta, loss_fn)
        errs.append((g - g_exact).norm().item())
    assert errs[1] < errs[0]


def test_direct_surrogate_is_the_batch_mean_of_phi_differences():
    torch.manual_seed(4)
    B, n, K, eps = 5, 3, 4, 0.5
    theta = torch.randn(B, n, K)
    g, r = grad_of(get_estimator("direct", eps=eps), theta, quadratic_loss(torch.randn(B, n, K)))
    want = (one_hot(r.z, K) - one_hot(r.info["z_eps"], K)) / (eps * B)
    assert torch.allclose(g, want)


def test_direct_labels_set_z_eps_with_their_own_eps():
    torch.manual_seed(5)
    B, K, eps, leps = 4, 5, 1.0, 0.05
    theta = torch.randn(B, 1, K)
    labels = torch.tensor([2, -1, 0, -1])
    est = get_estimator("direct", eps=eps, label_eps=leps)
    g, r = grad_of(est, theta, quadratic_loss(torch.randn(B, 1, K)), labels=labels)
    z_eps = r.info["z_eps"][:, 0]
    assert z_eps[0] == 2 and z_eps[2] == 0
    scale = torch.tensor([leps, eps, leps, eps])[:, None, None]
    want = (one_hot(r.z, K) - one_hot(r.info["z_eps"], K)) / (scale * B)
    assert torch.allclose(g, want)
    with pytest.raises(ValueError, match="labels must have shape"):
        est(sv.Potentials(theta), quadratic_loss(torch.randn(B, 1, K)), labels=torch.zeros(3))


def test_direct_decoder_gradient_is_the_loss_gradient_at_the_sample():
    torch.manual_seed(6)
    B, n, K = 3, 2, 3
    W = torch.randn(B, n, K, requires_grad=True)
    est = get_estimator("direct", eps=1.0)
    gen = torch.Generator().manual_seed(0)
    r = est(sv.Potentials(torch.randn(B, n, K)), quadratic_loss(W), generator=gen)
    (gw,) = torch.autograd.grad(r.surrogate, W)
    (want,) = torch.autograd.grad(quadratic_loss(W)(one_hot(r.z, K)[:, None]).mean(), W)
    assert torch.allclose(gw, want)


def test_direct_with_pairwise_potentials_and_solvers():
    torch.manual_seed(7)
    B, n = 6, 4
    e = make_edges("complete", n)
    unary = torch.randn(B, n, 2, requires_grad=True)
    pw = torch.randn(B, e.shape[0], 2, 2, requires_grad=True)
    est = get_estimator("direct", eps=0.5)
    r = est(sv.Potentials(unary, e, pw), quadratic_loss(torch.randn(B, n, 2)))
    assert est.solver.name == "exact"
    r.surrogate.backward()
    assert unary.grad.abs().sum() > 0 and pw.grad is not None


def test_direct_refuses_unsupported_solver_before_work():
    e = make_edges("chain", 3)
    p = sv.Potentials(torch.zeros(1, 3, 2), e, torch.zeros(1, 2, 2, 2))
    called = []
    with pytest.raises(ValueError, match="independent variables only"):
        get_estimator("direct", solver="independent")(p, lambda z: called.append(1))
    assert not called


def test_direct_nan_loss_is_a_clear_error():
    def nan_loss(z):
        return torch.full(z.shape[:2], float("nan"))

    with pytest.raises(ValueError, match="NaN or inf"):
        get_estimator("direct", eps=1.0)(sv.Potentials(torch.zeros(2, 1, 3)), nan_loss)


def test_gumbel_softmax():
    torch.manual_seed(8)
    theta = torch.randn(3, 2, 4)
    loss_fn = quadratic_loss(torch.randn(3, 2, 4))
    gen = torch.Generator().manual_seed(1)
    st = get_estimator("gumbel-softmax", temperature=0.5, straight_through=True)
    g, r = grad_of(st, theta, loss_fn, generator=gen)
    assert torch.allclose(r.loss, loss_fn(one_hot(r.z, 4)[:, None])[:, 0])
    assert g.abs().sum() > 0
    relaxed = get_estimator("gumbel-softmax", temperature=0.5)
    assert relaxed.relaxed and not st.relaxed
    e = make_edges("chain", 2)
    with pytest.raises(ValueError, match="independent latent variables only"):
        relaxed(sv.Potentials(theta, e, torch.zeros(3, 1, 4, 4)), loss_fn)


def test_gumbel_softmax_low_temperature_agrees_in_direction_with_exact():
    torch.manual_seed(9)
    R = 4000
    theta = torch.randn(2, 1, 4)
    W = torch.randn(2, 1, 4)
    g_exact = exact_grad(theta, quadratic_loss(W))
    # R replicas of the batch: the mean over all rows is the mean over the 2 problems
    g, _ = grad_of(
        get_estimator("gumbel-softmax", temperature=0.3),
        theta.repeat(R, 1, 1),
        quadratic_loss(W.repeat(R, 1, 1)),
    )
    g = g.unflatten(0, (R, 2)).sum(0)
    assert cosine(g, g_exact) > 0.8


def test_evaluate_losses_chunks_and_checks_shape():
    z = torch.randn(2, 7, 3, 2)
    f = lambda t: t.sum((-1, -2))  # noqa: E731
    assert torch.allclose(evaluate_losses(f, z, chunk=3), f(z))
    with pytest.raises(ValueError, match=r"loss_fn must map z of shape \[B, C, n, K\]"):
        evaluate_losses(lambda t: t.sum(), z)


def test_coordinate_candidates():
    z = torch.tensor([[0, 2]])
    c = coordinate_candidates(z, 3)
    assert c.shape == (1, 2, 2, 2)
    assert c[0, 0].tolist() == [[1, 2], [2, 2]]
    assert c[0, 1].tolist() == [[0, 0], [0, 1]]


def test_schedules():
    s = paper_eps()
    assert s(0) == 1.0 and s(499) == 1.0
    assert s(500) == pytest.approx(math.exp(-5e-3))
    assert s(10**7) == 0.1
    assert paper_temperature()(999) == 1.0
    assert ExponentialDecay(2.0, 0.0, 1, 0.5)(123) == 2.0
    with pytest.raises(ValueError, match="eps must be a positive"):
        get_estimator("direct", eps=-1.0)
    with pytest.raises(ValueError, match="unknown estimator"):
        get_estimator("nope")


def test_direct_through_pairwise_solver_matches_exact_when_couplings_vanish():
    """With edges present but zero tables, the perturb-max law is the factorised softmax, so
    direct (solved by enumeration over the structured problem) approaches the exact gradient."""
    torch.manual_seed(10)
    B, n = 2, 3
    e = make_edges("complete", n)
    unary = torch.randn(B, n, 2)
    loss_fn = quadratic_loss(torch.randn(B, n, 2), torch.randn(n, n, 2, 2))
    g_exact = exact_grad(unary, loss_fn)
    u = unary.clone().requires_grad_()
    pot = sv.Potentials(u, e, torch.zeros(B, e.shape[0], 2, 2))
    est = get_estimator("direct", eps=0.1, samples=30_000, candidates="all", solver="exact")
    (g,) = torch.autograd.grad(est(pot, loss_fn).surrogate, u)
    assert cosine(g, g_exact) >= 0.95


def test_direct_pairwise_gradient_is_the_batch_mean_of_pair_indicator_differences():
    torch.manual_seed(11)
    B, n, eps = 4, 4, 0.5
    e = make_edges("complete", n)
    pw = torch.randn(B, e.shape[0], 2, 2, requires_grad=True)
    pot = sv.Potentials(torch.randn(B, n, 2), e, pw)
    r = get_estimator("direct", eps=eps, solver="exact")(pot, quadratic_loss(torch.randn(B, n, 2)))
    (g,) = torch.autograd.grad(r.surrogate, pw)

    def pair_onehot(z):  # [B, E, 2, 2] indicator of (z_i, z_j) per edge
        return one_hot(z[:, e[:, 0]] * 2 + z[:, e[:, 1]], 4).unflatten(-1, (2, 2))

    want = (pair_onehot(r.z) - pair_onehot(r.info["z_eps"])) / (eps * B)
    assert torch.allclose(g, want)

"""The baseline estimators (REINFORCE family, MuProp, REBAR, RELAX, ARM, straight-through, DAB)
against the exact gradient by enumeration, their provable properties, errors and training."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import structvae as sv
from structvae.estimators import (
    GumbelSoftmaxEstimator,
    ModuleEstimator,
    get_estimator,
    one_hot,
)
from structvae.estimators.rebar import conditional_gumbel
from structvae.estimators.straight_through import NOISES, noise_cdf
from structvae.train import TrainConfig, load_checkpoint, train

BINARY_ONLY = ("arm", "st-noise")
NEW = (
    "reinforce",
    "reinforce-loo",
    "nvil",
    "muprop",
    "rebar",
    "relax",
    "arm",
    "st-identity",
    "st-noise",
    "st-deterministic",
    "st-gumbel-softmax",
    "dab",
)


# --------------------------------------------------------------------------- helpers
def quadratic_problem(n: int, K: int, seed: int = 0):
    """A fixed non-linear loss of z [B, C, n, K] (shared by all rows) and logits [1, n, K]."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(1, n, K, generator=g, dtype=torch.float64)
    W = torch.randn(n, K, generator=g, dtype=torch.float64)
    V = torch.randn(n, n, K, K, generator=g, dtype=torch.float64)

    def loss_fn(z):
        lin = (z * W).sum((-1, -2))
        return lin**2 + lin + torch.einsum("bcik,bcjl,ijkl->bc", z, z, V)

    return theta, loss_fn


def exact_gradient(theta, loss_fn):
    """∇_θ E_q[L] for one row ``theta`` [1, n, K] by enumeration (the ``exact`` estimator,
    itself checked against explicit enumeration in tests/test_estimators.py)."""
    th = theta.detach().requires_grad_()
    r = get_estimator("exact")(sv.Potentials(th), loss_fn)
    (g,) = torch.autograd.grad(r.surrogate, th)
    return g[0]


def per_sample_gradients(est, theta, loss_fn, R: int, seed: int):
    """R independent estimates of ∇_θ E_q[L] for the single row ``theta``, batched as B = R.

    The surrogate estimates the gradient of the batch mean, so row r's gradient times R is
    the r-th estimate."""
    th = theta.expand(R, -1, -1).clone().requires_grad_()
    r = est(sv.Potentials(th), loss_fn, generator=torch.Generator().manual_seed(seed))
    (g,) = torch.autograd.grad(r.surrogate, th)
    return g * R, r


def z_scores(samples, target):
    """``(mean − target) / standard error`` per entry."""
    R = samples.shape[0]
    se = samples.std(0) / math.sqrt(R)
    return (samples.mean(0) - target) / (se + 1e-12)


def warm_up(est, theta, loss_fn, steps: int = 30, lr: float = 0.02):
    """Run ``steps`` optimisation steps of the estimator's own parameters (baselines, η, λ, φ)
    on the problem, so that the unbiasedness check also covers trained, non-trivial states."""
    params = (
        [p for p in est.parameters() if p.requires_grad] if isinstance(est, ModuleEstimator) else []
    )
    opt = torch.optim.Adam(params, lr=lr) if params else None
    for s in range(steps):
        th = theta.expand(64, -1, -1).clone().requires_grad_()
        r = est(sv.Potentials(th), loss_fn, generator=torch.Generator().manual_seed(1000 + s))
        if opt is not None:
            opt.zero_grad()
            r.surrogate.backward()
            opt.step()
    return est


# --------------------------------------------------------------------------- unbiasedness
UNBIASED = [
    ("reinforce", {"baseline": "none"}),
    ("reinforce", {"baseline": "moving-average", "decay": 0.5}),
    ("reinforce", {"baseline": "leave-one-out", "samples": 3}),
    ("reinforce", {"baseline": "nvil", "normalise": False}),
    ("nvil", {}),
    ("muprop", {}),
    ("rebar", {}),
    ("relax", {}),
    ("relax", {"rebar_term": False}),
    ("arm", {}),
]


@pytest.mark.parametrize("n, K", [(2, 3), (3, 2)], ids=["categorical", "binary"])
@pytest.mark.parametrize("name, options", UNBIASED, ids=lambda v: str(v))
def test_unbiased_estimators_match_the_exact_gradient(name, options, n, K):
    torch.manual_seed(0)
    theta, loss_fn = quadratic_problem(n, K, seed=n)
    est = get_estimator(name, **options)
    if name in BINARY_ONLY and K != 2:
        with pytest.raises(ValueError, match="binary latents only"):
            est(sv.Potentials(theta), loss_fn)
        return
    assert est.unbiased
    warm_up(est, theta, loss_fn)
    g, r = per_sample_gradients(est, theta, loss_fn, R=20000, seed=7)
    scale = r.info.get("signal_scale", 1.0)  # NVIL: the gradient divided by a known scale
    if name == "nvil":
        assert scale > 1.0  # the warm-up made the scaling non-trivial
    z = z_scores(g * scale, exact_gradient(theta, loss_fn))
    assert z.abs().max() < 4.5, (z, r.info)


def test_z_test_detects_a_biased_estimator():
    """The check above has power: a biased estimator fails it on the same problem."""
    theta, loss_fn = quadratic_problem(2, 3, seed=2)
    g, _ = per_sample_gradients(get_estimator("st-identity"), theta, loss_fn, R=20000, seed=7)
    assert z_scores(g, exact_gradient(theta, loss_fn)).abs().max() > 10


def test_baselines_reduce_variance():
    theta, loss_fn = quadratic_problem(2, 3, seed=2)

    def shifted(z):  # a large constant offset: what baselines and control variates remove
        return loss_fn(z) + 50.0

    var = {}
    for key, est in (
        ("none", get_estimator("reinforce", baseline="none")),
        ("moving-average", warm_up(get_estimator("reinforce"), theta, shifted, steps=5)),
        ("leave-one-out", get_estimator("reinforce-loo")),
        ("muprop", get_estimator("muprop")),
        ("rebar", get_estimator("rebar")),
    ):
        g, _ = per_sample_gradients(est, theta, shifted, R=4000, seed=3)
        var[key] = g.var(0).sum().item()
    for key in ("moving-average", "leave-one-out", "muprop", "rebar"):
        assert var[key] < 0.1 * var["none"], var


def test_conditional_gumbel_has_the_conditional_law():
    """z̃ | b reproduces the law of z = logp + g given argmax z = b (max value and argmax)."""
    g = torch.Generator().manual_seed(0)
    logp = torch.log_softmax(torch.tensor([0.3, -1.0, 1.2], dtype=torch.float64), -1)
    R = 200000
    z = logp - torch.log(-torch.log(torch.rand(R, 3, generator=g, dtype=torch.float64)))
    b = z.argmax(-1)
    v = torch.rand(R, 3, generator=g, dtype=torch.float64)
    zt = conditional_gumbel(logp.expand(R, 3), b, v)
    assert torch.equal(zt.argmax(-1), b)
    for k in range(3):  # the sorted values given b = k agree in mean
        a, c = z[b == k].sort(-1).values, zt[b == k].sort(-1).values
        se = (a.std(0) ** 2 / len(a) + c.std(0) ** 2 / len(c)).sqrt()
        assert ((a.mean(0) - c.mean(0)).abs() < 4.5 * se).all()


# --------------------------------------------------------------------------- gradient routing
@pytest.mark.parametrize("name", [e for e in NEW if e not in ("arm", "reinforce-loo")])
def test_decoder_gets_the_loss_gradient_at_the_sample(name):
    """Whatever the encoder-side estimate, loss_fn's own parameters (the decoder) get the
    ordinary gradient of the batch-mean loss at the returned hard sample."""
    K = 2 if name in BINARY_ONLY else 3
    torch.manual_seed(1)
    theta = torch.randn(16, 3, K, dtype=torch.float64, requires_grad=True)
    W = torch.randn(3, K, dtype=torch.float64, requires_grad=True)

    def loss_fn(z):
        lin = (z * W.to(z.dtype)).sum((-1, -2))
        return lin**2 + torch.sin(lin)

    r = get_estimator(name)(
        sv.Potentials(theta), loss_fn, generator=torch.Generator().manual_seed(0)
    )
    (g_w,) = torch.autograd.grad(r.surrogate, W)
    at_sample = loss_fn(one_hot(r.z, K, torch.float64)[:, None])[:, 0]
    assert torch.allclose(r.loss.double(), at_sample.detach())
    (expected,) = torch.autograd.grad(at_sample.mean(), W)
    atol = 1e-5 if r.loss.dtype == torch.float32 else 1e-10  # gumbel-softmax computes in float32
    assert torch.allclose(g_w, expected, atol=atol), name


def test_arm_decoder_gradient_is_the_mean_over_its_two_antithetic_samples():
    theta = torch.randn(8, 4, 2, dtype=torch.float64, requires_grad=True)
    w = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    loss_fn = lambda z: (w * z[..., 1].sum(-1)) ** 2  # noqa: E731
    est = get_estimator("arm")
    r = est(sv.Potentials(theta), loss_fn, generator=torch.Generator().manual_seed(0))
    (g_w,) = torch.autograd.grad(r.surrogate, w)
    u = torch.rand(8, 1, 4, generator=torch.Generator().manual_seed(0)).clamp(1e-7, 1 - 1e-7)
    a = (theta[..., 1] - theta[..., 0]).detach()[:, None]
    b1, b2 = (u > torch.sigmoid(-a)).double(), (u < torch.sigmoid(a)).double()
    assert torch.equal(r.z, b2[:, 0].long())
    expected = (2 * w * (b1.sum(-1) ** 2 + b2.sum(-1) ** 2) / 2).mean()
    assert torch.allclose(g_w, expected)


@pytest.mark.parametrize("name", ["nvil", "rebar", "relax"])
def test_tuned_parameters_reduce_their_objective(name):
    """NVIL's baseline regression loss / REBAR-RELAX's gradient-variance surrogate falls when the
    estimator's parameters are trained through surrogate.backward() alone."""
    theta, loss_fn = quadratic_problem(2, 3, seed=4)
    key = "baseline_mse" if name == "nvil" else "grad_variance"
    est = get_estimator(name)

    def measure():
        vals = []
        for s in range(20):
            th = theta.expand(256, -1, -1).clone()
            r = est(sv.Potentials(th), loss_fn, generator=torch.Generator().manual_seed(s))
            vals.append(r.info[key])
        return sum(vals) / len(vals)

    before = measure()
    warm_up(est, theta, loss_fn, steps=150, lr=0.03)
    after = measure()
    assert after < 0.9 * before, (before, after)


def test_nvil_baseline_sees_only_detached_logits():
    """The baseline network's regression loss reaches its parameters but not the encoder."""
    est = get_estimator("nvil")
    theta, loss_fn = quadratic_problem(2, 3)
    th = theta.expand(32, -1, -1).clone().requires_grad_()
    r = est(sv.Potentials(th), loss_fn, generator=torch.Generator().manual_seed(0))
    r.surrogate.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in est.net.parameters())
    est2 = get_estimator("reinforce", baseline="none")
    th2 = theta.expand(32, -1, -1).clone().requires_grad_()
    r2 = est2(sv.Potentials(th2), loss_fn, generator=torch.Generator().manual_seed(0))
    r2.surrogate.backward()
    # first NVIL step: no centring, scale 1, so the encoder gradient is REINFORCE's minus b_psi's
    b = est.net(theta.flatten(1).float()).double().detach()
    logq_grad = one_hot(r.z, 3, torch.float64) - torch.softmax(th.detach(), -1)
    assert torch.allclose(th.grad, th2.grad - b[:, :, None] * logq_grad / 32, atol=1e-6)


# --------------------------------------------------------------------------- straight-through
def linear_problem(n, K, seed=0):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(5, n, K, generator=g, dtype=torch.float64)
    c = torch.randn(n, K, generator=g, dtype=torch.float64)
    return theta, c, (lambda z: (z * c).sum((-1, -2)) + 3.0)


@pytest.mark.parametrize("K", [2, 4])
def test_identity_st_is_exact_for_linear_losses(K):
    theta, c, loss_fn = linear_problem(3, K)
    th = theta.clone().requires_grad_()
    r = get_estimator("st-identity")(sv.Potentials(th), loss_fn)
    (g,) = torch.autograd.grad(r.surrogate, th)
    # E_q[c·z] = c·softmax(θ), differentiated
    expected = torch.autograd.functional.jacobian(
        lambda t: ((torch.softmax(t, -1) * c).sum((-1, -2)) + 3).mean(), theta
    )
    assert torch.allclose(g, expected, atol=1e-12)
    # and with respect to the logits the naive identity rule is not exact
    r = get_estimator("st-identity", on="logits")(sv.Potentials(th), loss_fn)
    (g_logits,) = torch.autograd.grad(r.surrogate, th)
    assert torch.allclose(g_logits, c.expand_as(th) / 5)
    assert not torch.allclose(g_logits, expected, atol=1e-3)


@pytest.mark.parametrize("noise", NOISES)
def test_noise_st_backward_factor_and_sampling_law(noise):
    """For z_i = [a_i − ζ ≥ 0], E[z_i] = F(a_i); ST's backward F′(a) (factor 1 in the {0, 1}
    encoding) is then the exact gradient of E[L] for linear L."""
    theta, c, loss_fn = linear_problem(4, 2, seed=1)
    th = theta.clone().requires_grad_()
    est = get_estimator("st-noise", noise=noise)
    r = est(sv.Potentials(th), loss_fn)
    (g,) = torch.autograd.grad(r.surrogate, th)

    def expected_loss(t):
        p1 = noise_cdf(noise, t[..., 1] - t[..., 0])
        return ((1 - p1) * c[:, 0] + p1 * c[:, 1]).sum(-1).mean() + 3.0

    expected = torch.autograd.functional.jacobian(expected_loss, theta)
    assert torch.allclose(g, expected, atol=1e-12)
    # the forward sample's law is F(a): check E[z_i] on many draws of one row
    R = 40000
    one = theta[:1].expand(R, -1, -1)
    r = est(sv.Potentials(one), loss_fn, generator=torch.Generator().manual_seed(3))
    freq = r.z.double().mean(0)
    p = noise_cdf(noise, theta[0, :, 1] - theta[0, :, 0])
    assert ((freq - p).abs() < 4.5 * (p * (1 - p) / R).sqrt()).all(), (freq, p)


def test_noise_cdfs_are_scaled_alike_and_logistic_st_equals_identity_st():
    a = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    for noise in NOISES:
        (d,) = torch.autograd.grad(noise_cdf(noise, a).sum(), a)
        assert d.item() == pytest.approx(0.25)
    theta = torch.randn(6, 3, 2, dtype=torch.float64)
    _, loss_fn = quadratic_problem(3, 2)
    grads = []
    for est in (get_estimator("st-noise"), get_estimator("st-identity")):
        th = theta.clone().requires_grad_()
        r = est(sv.Potentials(th), loss_fn, generator=torch.Generator().manual_seed(5))
        grads.append((r.z, torch.autograd.grad(r.surrogate, th)[0]))
    assert torch.equal(grads[0][0], grads[1][0])
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-12)


@pytest.mark.parametrize("K", [2, 3])
def test_deterministic_st(K):
    theta, c, loss_fn = linear_problem(3, K, seed=2)
    th = theta.clone().requires_grad_()
    est = get_estimator("st-deterministic")
    r1 = est(sv.Potentials(th), loss_fn, generator=torch.Generator().manual_seed(0))
    r2 = est(sv.Potentials(th), loss_fn, generator=torch.Generator().manual_seed(1))
    assert torch.equal(r1.z, theta.argmax(-1)) and torch.equal(r2.z, r1.z)  # the mode, no noise
    (g,) = torch.autograd.grad(r1.surrogate, th)
    expected = torch.autograd.functional.jacobian(
        lambda t: ((torch.softmax(t, -1) * c).sum((-1, -2)) + 3).mean(), theta
    )
    assert torch.allclose(g, expected, atol=1e-12)  # linear loss: the exact gradient
    # a non-linear loss with a peaked q: still an ascent-compatible direction (cosine > 0.9)
    peaked, qloss = quadratic_problem(2, K, seed=5)
    peaked = peaked * 4
    th = peaked.clone().requires_grad_()
    (g,) = torch.autograd.grad(est(sv.Potentials(th), qloss).surrogate, th)
    exact = exact_gradient(peaked, qloss)
    assert torch.nn.functional.cosine_similarity(g.flatten(), exact.flatten(), 0) > 0.9


def test_st_gumbel_softmax_alias_is_the_gumbel_softmax_estimator():
    est = get_estimator("st-gumbel-softmax", temperature=0.7)
    assert isinstance(est, GumbelSoftmaxEstimator) and est.straight_through
    assert type(est).estimate is GumbelSoftmaxEstimator.estimate  # no duplicated code
    ref = get_estimator("gumbel-softmax", temperature=0.7, straight_through=True)
    theta, loss64 = quadratic_problem(2, 3)
    theta = theta.float()

    def loss_fn(z):
        return loss64(z.double()).float()

    out = []
    for e in (est, ref):
        th = theta.expand(4, -1, -1).clone().requires_grad_()
        r = e(sv.Potentials(th), loss_fn, generator=torch.Generator().manual_seed(0))
        out.append(torch.autograd.grad(r.surrogate, th)[0])
    assert torch.equal(out[0], out[1])


# --------------------------------------------------------------------------- DAB
def test_dab_forward_is_hard_and_backward_is_the_bridge_jacobian():
    torch.manual_seed(0)
    est = get_estimator("dab", gamma=2.0)
    theta, loss_fn = quadratic_problem(2, 3)
    th = theta.expand(6, -1, -1).clone().requires_grad_()
    r = est(sv.Potentials(th), loss_fn, generator=torch.Generator().manual_seed(0))
    th.grad = None
    r.surrogate.backward()
    # redo by hand with the same noise
    g = sv.sample_gumbel(th.shape, dtype=th.dtype, generator=torch.Generator().manual_seed(0))
    x = (theta.expand(6, -1, -1) + g).detach().requires_grad_()
    hard = one_hot(x.argmax(-1), 3, torch.float64)
    assert torch.equal(r.z, x.argmax(-1))
    zz = hard.detach().requires_grad_()
    (dL,) = torch.autograd.grad(loss_fn(zz[:, None]).mean(), zz)
    soft = est.bridge(x.float()).double()
    (expected,) = torch.autograd.grad(soft, x, grad_outputs=dL)
    assert torch.allclose(th.grad, expected, atol=1e-6)
    # the bridge's parameters get gamma * the L2 penalty's gradient, nothing from the loss
    fit = ((est.bridge(x.detach().float()).double() - hard) ** 2).sum((-1, -2)).mean()
    for p, gp in zip(
        est.bridge.parameters(),
        torch.autograd.grad(2.0 * fit, list(est.bridge.parameters())),
        strict=True,
    ):
        assert torch.allclose(p.grad, gp, atol=1e-5)


def test_dab_bridge_learns_the_hard_function():
    torch.manual_seed(0)
    est = get_estimator("dab", gamma=1.0)
    theta, loss_fn = quadratic_problem(3, 4, seed=1)
    est.setup(3, 4)
    opt = torch.optim.Adam(est.parameters(), lr=0.01)
    l2 = []
    for s in range(200):
        th = (theta + torch.randn(128, 3, 4, dtype=torch.float64)).requires_grad_()
        r = est(sv.Potentials(th), loss_fn, generator=torch.Generator().manual_seed(s))
        opt.zero_grad()
        r.surrogate.backward()
        opt.step()
        l2.append(r.info["bridge_l2"])
    first, last = sum(l2[:10]) / 10, sum(l2[-10:]) / 10
    assert last < 0.3 * first, (first, last)


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("name", ["arm", "st-noise"])
def test_binary_only_estimators_refuse_categorical_latents(name):
    with pytest.raises(ValueError, match=r"binary latents only \(K = 2.*got K = 3"):
        get_estimator(name)(sv.Potentials(torch.zeros(2, 3, 3)), lambda z: z.sum((-1, -2)))
    with pytest.raises(ValueError, match="binary only"):
        get_estimator("st-deterministic", noise="uniform")(
            sv.Potentials(torch.zeros(2, 3, 3)), lambda z: z.sum((-1, -2))
        )


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("reinforce", {"baseline": "mean"}, "baseline must be one of"),
        (
            "reinforce",
            {"baseline": "leave-one-out", "samples": 1},
            "samples must be an integer >= 2",
        ),
        ("reinforce", {"decay": 1.0}, r"decay must be in \[0, 1\)"),
        ("reinforce", {"normalise": True}, "NVIL's signal scaling"),
        ("reinforce-loo", {"samples": 1}, ">= 2"),
        ("nvil", {"hidden": (0,)}, "hidden sizes"),
        ("muprop", {"samples": 0}, "samples must be"),
        ("rebar", {"init_temperature": 0.0}, "init_temperature must be a positive"),
        ("rebar", {"eta": float("nan")}, "eta must be a finite"),
        ("relax", {"samples": 2.5}, "samples must be an integer"),
        ("arm", {"samples": -1}, "samples must be"),
        ("st-noise", {"noise": "gaussian"}, "noise must be one of"),
        ("st-identity", {"on": "weights"}, "on must be"),
        ("dab", {"gamma": -1}, "gamma must be a positive"),
    ],
)
def test_bad_hyper_parameters_are_clear_errors(name, options, message):
    with pytest.raises(ValueError, match=message):
        get_estimator(name, **options)


def test_module_estimators_refuse_a_changed_latent_shape():
    est = get_estimator("relax").setup(2, 3)
    with pytest.raises(ValueError, match="set up for latents n x K = 2 x 3, got 4 x 3"):
        est(sv.Potentials(torch.zeros(1, 4, 3)), lambda z: z.sum((-1, -2)))


def test_every_estimator_builds_with_defaults_and_module_ones_are_modules():
    for name in NEW:
        est = get_estimator(name)
        assert est.name == name
    for name in ("reinforce", "nvil", "rebar", "relax", "dab"):
        assert isinstance(get_estimator(name), torch.nn.Module)


# --------------------------------------------------------------------------- property test
@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(NEW),
    B=st.integers(1, 5),
    n=st.integers(1, 4),
    K=st.integers(2, 5),
    seed=st.integers(0, 2**31 - 1),
)
def test_shapes_and_finite_surrogate(name, B, n, K, seed):
    if name in BINARY_ONLY:
        K = 2
    g = torch.Generator().manual_seed(seed)
    theta = (3 * torch.randn(B, n, K, generator=g)).requires_grad_()
    W = torch.randn(n, K, generator=g)
    loss_fn = lambda z: torch.nn.functional.softplus((z * W).sum((-1, -2)))  # noqa: E731
    r = get_estimator(name)(sv.Potentials(theta), loss_fn, generator=g)
    assert r.z.shape == (B, n) and r.z.dtype == torch.long
    assert ((r.z >= 0) & (r.z < K)).all()
    assert r.loss.shape == (B,) and torch.isfinite(r.loss).all()
    assert r.surrogate.dim() == 0 and torch.isfinite(r.surrogate)
    (grad,) = torch.autograd.grad(r.surrogate, theta)
    assert grad.shape == theta.shape and torch.isfinite(grad).all()
    assert all(isinstance(v, float) for v in r.info.values())


# --------------------------------------------------------------------------- training
def _config(tmp_path, name, **kw) -> TrainConfig:
    base = dict(out=str(tmp_path / name), quiet=True, eval_samples=2, batch_size=1000)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("estimator, latent", [("nvil", "2x3"), ("relax", "3x2")])
def test_training_with_parameterised_estimators_and_resume(tmp_path, estimator, latent):
    """The estimator's parameters and running statistics are trained, checkpointed and resumed:
    a run split in two reproduces the uninterrupted one exactly."""
    # 4 steps per epoch (4,000 training images, batch 1,000); stop one step into epoch 2
    # (--max-steps is the budget of one call: the resumed call takes the fifth step)
    common = dict(estimator=estimator, latent=latent)
    full = train(_config(tmp_path, "full", epochs=2, max_steps=5, **common))
    train(_config(tmp_path, "split", epochs=1, **common))
    resumed = train(_config(tmp_path, "split", epochs=2, resume=True, max_steps=1, **common))
    assert math.isfinite(full["test_loss"]) and full["epochs"] == 2 and full["iterations"] == 5
    for key in ("test_loss", "best_val_loss", "iterations"):
        assert full[key] == resumed[key], key
    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "last.pt")
    if isinstance(get_estimator(estimator), torch.nn.Module):
        assert a["estimator"] and set(a["estimator"]) == set(b["estimator"])
        for k, v in a["estimator"].items():
            assert torch.equal(v, b["estimator"][k]), k
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k


@pytest.mark.parametrize(
    "estimator, latent", [("rebar", "2x3"), ("dab", "2x3"), ("arm", "3x2"), ("st-noise", "3x2")]
)
def test_training_runs_with_the_cli_names(tmp_path, estimator, latent):
    res = train(
        _config(tmp_path, estimator, estimator=estimator, latent=latent, epochs=1, max_steps=2)
    )
    assert res["iterations"] == 2 and math.isfinite(res["test_loss"])
    state = load_checkpoint(tmp_path / estimator / "last.pt")["estimator"]
    if estimator == "rebar":  # eta and the temperature were optimised with the model
        assert float(state["eta"]) != 1.0 and float(state["log_temperature"]) != math.log(0.5)
    if estimator == "dab":  # the bridge was built for K = 3 before the optimiser, and saved
        assert state["bridge.0.weight"].shape == (64, 3)


@pytest.mark.cuda
@pytest.mark.parametrize("name", NEW)
def test_estimators_on_cuda(name):
    K = 2 if name in BINARY_ONLY else 3
    est = get_estimator(name)
    if isinstance(est, torch.nn.Module):
        est.setup(4, K).to("cuda")
    theta = torch.randn(8, 4, K, device="cuda", requires_grad=True)
    W = torch.randn(4, K, device="cuda")
    r = est(
        sv.Potentials(theta),
        lambda z: ((z * W).sum((-1, -2))) ** 2,
        generator=torch.Generator("cuda").manual_seed(0),
    )
    assert r.z.device.type == "cuda" and r.surrogate.device.type == "cuda"
    r.surrogate.backward()
    assert torch.isfinite(theta.grad).all()


@pytest.mark.cuda
def test_cuda_training_with_a_module_estimator(tmp_path):
    res = train(
        _config(tmp_path, "cu", estimator="relax", latent="2x3", device="cuda", max_steps=2)
    )
    assert math.isfinite(res["test_loss"])

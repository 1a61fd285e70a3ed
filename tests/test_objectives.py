"""``--objective elbo|paper``: which terms are trained, checked on a small model.

Under ``paper`` the direct estimator's encoder gradient is its reconstruction part alone; the
reference is both the estimator's own surrogate (no KL) and a brute-force
``(φ(z*) − φ(z_ε)) / ε`` built here from the same Gumbel noise and every category's loss.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from structvae.estimators import ExponentialDecay, get_estimator
from structvae.gumbel import sample_gumbel
from structvae.models import CategoricalVAE
from structvae.models.reference import (
    check_objective,
    default_eps0,
    set_objective,
    trains_kl,
)
from structvae.train import DEFAULT_EPS, TrainConfig, build_estimator, check_config

B, D, K, EPS = 16, 12, 5, 4.0


def _model(objective: str) -> CategoricalVAE:
    torch.manual_seed(0)
    model = CategoricalVAE(1, K, hidden=(7,), input_dim=D).double()
    return set_objective(model, objective)


def _x() -> torch.Tensor:
    return torch.bernoulli(torch.full((B, D), 0.4, dtype=torch.float64), generator=_gen(3))


def _gen(seed: int = 11) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _grads(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in module.parameters()]


def _objective_grads(model, estimator, x):
    model.zero_grad()
    total, stats = model.objective(x, estimator, generator=_gen())
    total.backward()
    return _grads(model.encoder), _grads(model.decoder), stats


def test_paper_direct_encoder_gradient_is_the_reconstruction_part_alone():
    model, x = _model("paper"), _x()
    est = get_estimator("direct", eps=EPS)
    enc, dec, stats = _objective_grads(model, est, x)

    # the estimator's surrogate alone (no KL) on the same noise
    model.zero_grad()
    res = est(model.encode(x), model.loss_fn(x), generator=_gen())
    res.surrogate.backward()
    for a, b in zip(enc, _grads(model.encoder), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(dec, _grads(model.decoder), strict=True):
        assert torch.equal(a, b)

    # brute force: d surrogate / d theta = (onehot(z*) - onehot(z_eps)) / (eps B)
    with torch.no_grad():
        theta = model.encode(x).unary  # [B, 1, K]
        gamma = sample_gumbel(theta.shape, dtype=theta.dtype, generator=_gen())
        every = F.one_hot(torch.arange(K), K).double()[None, :, None].expand(B, K, 1, K)
        losses = model.loss_fn(x)(every)  # [B, K]: L at every category
        z_star = (theta + gamma).argmax(-1)[:, 0]
        z_eps = (theta + gamma - EPS * losses[:, None]).argmax(-1)[:, 0]
    assert bool((z_star != z_eps).any()), "the check needs rows where z_eps moved"
    g_theta = (F.one_hot(z_star, K) - F.one_hot(z_eps, K)).double() / (EPS * B)
    model.zero_grad()
    theta = model.encode(x).unary[:, 0]
    (theta * g_theta).sum().backward()
    for a, b in zip(enc, _grads(model.encoder), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)

    # the KL is still computed and reported
    with torch.no_grad():
        kl = model.kl(model.encode(x)).mean()
    torch.testing.assert_close(stats["kl"], kl.float())


def test_elbo_direct_adds_the_kl_gradient():
    x = _x()
    est = get_estimator("direct", eps=EPS)
    paper_enc, paper_dec, _ = _objective_grads(_model("paper"), est, x)
    model = _model("elbo")
    elbo_enc, elbo_dec, _ = _objective_grads(model, est, x)
    model.zero_grad()
    model.kl(model.encode(x)).mean().backward()
    kl_enc = _grads(model.encoder)
    assert any(float(g.abs().max()) > 1e-6 for g in kl_enc)
    for e, p, k in zip(elbo_enc, paper_enc, kl_enc, strict=True):
        torch.testing.assert_close(e, p + k, rtol=1e-10, atol=1e-12)
    for a, b in zip(elbo_dec, paper_dec, strict=True):  # the KL does not touch the decoder
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["gumbel-softmax", "st-gumbel-softmax", "exact"])
def test_paper_keeps_the_kl_trained_for_the_baselines(name):
    x = _x()
    est = get_estimator(name)
    paper_enc, _, _ = _objective_grads(_model("paper"), est, x)
    elbo_enc, _, _ = _objective_grads(_model("elbo"), est, x)
    for a, b in zip(paper_enc, elbo_enc, strict=True):
        assert torch.equal(a, b)
    assert trains_kl("paper", name) and not trains_kl("paper", "direct")


def test_objective_config_defaults_and_errors():
    paper = build_estimator(TrainConfig(estimator="direct", objective="paper")).eps
    assert paper == ExponentialDecay(start=1.0, rate=1e-5, every=500, minimum=0.1)
    assert paper(0) == 1.0 and paper(10**6) == 0.1
    assert build_estimator(TrainConfig(estimator="direct")).eps(0) == DEFAULT_EPS
    given = build_estimator(TrainConfig(estimator="direct", objective="paper", eps=0.3)).eps
    assert given(0) == 0.3  # --eps wins over the objective's default
    assert default_eps0("elbo", 0.25) == 0.25 and default_eps0("paper", 0.25) == 1.0
    with pytest.raises(ValueError, match="--objective must be one of elbo, paper"):
        check_objective("reference")
    with pytest.raises(ValueError, match="--objective"):
        check_config(TrainConfig(objective="ELBO"))


def test_cli_parses_objective():
    from structvae.cli import build_parser

    args = build_parser().parse_args(["train", "--objective", "paper"])
    assert args.objective == "paper"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--objective", "nope"])


def test_objective_kind_argument_overrides_the_models_objective():
    """``model.objective(..., kind="paper")`` for one call equals a model set to ``paper``."""
    from structvae.models import build_model
    from structvae.models.reference import set_objective

    torch.manual_seed(0)
    model = build_model("categorical", latent="1x4", input_dim=12)
    x = torch.rand(6, 12).round()
    grads = []
    for kind, objective in ((None, "paper"), ("paper", "elbo")):
        set_objective(model, objective)
        model.zero_grad()
        est = get_estimator("direct", eps=0.5)
        total, _ = model.objective(x, est, kind=kind, generator=torch.Generator().manual_seed(3))
        total.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="--objective must be one of"):
        model.objective(x, get_estimator("direct", eps=0.5), kind="nope")

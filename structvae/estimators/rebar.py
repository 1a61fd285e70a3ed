"""REBAR (Tucker et al. 2017) and RELAX (Grathwohl et al. 2018) for categorical and binary latents.

With ``z = log softmax(θ) + g`` (g Gumbel), ``b = argmax z`` and ``z̃ ~ p(z | b)`` reparameterised
by fresh uniforms ``v`` (``z̃_b = −log(−log v_b)``, ``z̃_k = −log(−log v_k / p_k − log v_b)``),
for a control variate ``c`` of the continuous relaxation,

    ĝ = [L(b) − c(z̃)] ∇_θ log q(b) + ∇_θ c(z) − ∇_θ c(z̃)

is unbiased for ``∇_θ E_q[L(b)]``. REBAR: ``c(z) = η·L(softmax(z/λ))``; RELAX:
``c(z) = η·L(softmax(z/λ)) + r_φ(softmax(z/λ))`` (or ``r_φ`` alone) with a small network
``r_φ``. The control's parameters (η, log λ, φ) minimise the single-sample variance surrogate
``mean_b ||ĝ_b||²`` (the gradient w.r.t. the logits, built with ``create_graph=True``); its
gradient is routed to them alone through the returned surrogate. Binary latents are ``K = 2``
(``softmax`` of two logits is the sigmoid of their difference, REBAR's binary relaxation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..nn import mlp
from ..options import Option, boolean, int_tuple
from ..potentials import Potentials
from .base import EstimatorResult, LossFn, evaluate_losses, one_hot, register_estimator
from .common import (
    ModuleEstimator,
    check_hidden,
    check_positive,
    check_samples,
    uniform_noise,
)

__all__ = ["RebarEstimator", "RelaxEstimator", "conditional_gumbel"]


def conditional_gumbel(logp: torch.Tensor, b: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``z̃ ~ p(z | argmax z = b)`` for ``z = logp + Gumbel``, reparameterised by uniforms ``v``.

    ``logp`` normalised log-probabilities ``[..., K]``, ``b`` long ``[...]``, ``v`` ``[..., K]``
    in (0, 1). Differentiable in ``logp`` (the arg max coordinate does not depend on it).
    """
    log_v = torch.log(v)
    hot = torch.nn.functional.one_hot(b, logp.shape[-1]).bool()
    log_vb = log_v.masked_fill(~hot, 0.0).sum(-1, keepdim=True)
    top = -torch.log(-log_v)
    others = -torch.log(-log_v * torch.exp(-logp) - log_vb)
    return torch.where(hot, top, others)


_REBAR_OPTIONS = (
    Option("eta", float, 1.0, "initial control-variate scale eta"),
    Option("init_temperature", float, 0.5, "initial relaxation temperature lambda"),
    Option("learn_eta", boolean, True, "learn eta"),
    Option("learn_temperature", boolean, True, "learn the temperature"),
    Option("samples", int, 1, "samples per data point (independent estimates, averaged)"),
    Option("chunk_size", int, 512, "candidates per loss_fn call (bounds memory)", identity=False),
)


@register_estimator("rebar")
class RebarEstimator(ModuleEstimator):
    """REBAR: score function with a conditional Gumbel-softmax control variate, η and λ tuned.

    Unbiased for any η, λ. Independent latents, any ``K >= 2`` (binary: ``K = 2``). ``loss_fn``
    must accept relaxed inputs.

    Args:
        eta: initial control-variate scale η.
        init_temperature: initial relaxation temperature λ (learned as ``log λ``).
        learn_eta, learn_temperature: tune η / λ by minimising the gradient-variance surrogate.
        samples: samples per data point (independent REBAR estimates, averaged).
        chunk_size: candidates per ``loss_fn`` call.

    Cost per step: one ``loss_fn`` call on 3 candidates per sample (``b``, ``softmax(z/λ)``,
    ``softmax(z̃/λ)``), one backward of the two relaxed losses to the logits with
    ``create_graph=True``, and a second-order backward to the tuned parameters.
    """

    name = "rebar"
    options = (*_REBAR_OPTIONS,)
    relaxed = True
    unbiased = True
    uses_loss_in_control = True

    def __init__(
        self,
        eta: float = 1.0,
        init_temperature: float = 0.5,
        learn_eta: bool = True,
        learn_temperature: bool = True,
        samples: int = 1,
        chunk_size: int = 512,
    ) -> None:
        super().__init__()
        eta = float(eta)
        if not math.isfinite(eta):
            raise ValueError(f"eta must be a finite number, got {eta!r}")
        lam = check_positive(init_temperature, "init_temperature")
        self.eta = nn.Parameter(torch.tensor(eta), requires_grad=bool(learn_eta))
        self.log_temperature = nn.Parameter(
            torch.tensor(math.log(lam)), requires_grad=bool(learn_temperature)
        )
        self.samples = check_samples(samples)
        self.chunk_size = int(chunk_size)

    def control(self, relaxed: torch.Tensor, relaxed_losses: torch.Tensor | None) -> torch.Tensor:
        """``c`` ``[B, S]`` from relaxed samples ``[B, S, n, K]`` and their losses ``[B, S]``."""
        return self.eta.to(relaxed_losses.dtype) * relaxed_losses

    def estimate(
        self, potentials: Potentials, loss_fn: LossFn, generator: torch.Generator | None = None
    ) -> EstimatorResult:
        self.ensure_built(potentials)
        theta = potentials.unary
        B, n, K = theta.shape
        S = self.samples
        # a leaf standing in for the logits: the estimate is built as a tensor ĝ [B, n, K]
        th = theta.detach().to(torch.promote_types(theta.dtype, torch.float32)).requires_grad_()
        dtype = th.dtype
        shape = (B, S, n, K)
        with torch.enable_grad():
            logp = torch.log_softmax(th, -1)[:, None].expand(shape)
            u = uniform_noise(shape, th, generator)
            z = logp - torch.log(-torch.log(u))
            b = z.detach().argmax(-1)  # [B, S, n]
            z_tilde = conditional_gumbel(logp, b, uniform_noise(shape, th, generator))
            lam = self.log_temperature.exp().to(dtype)
            soft, soft_tilde = torch.softmax(z / lam, -1), torch.softmax(z_tilde / lam, -1)
            hard = one_hot(b, K, dtype)
            if self.uses_loss_in_control:
                cands = torch.cat([hard, soft, soft_tilde], 1)  # [B, 3S, n, K]
                f_b, f_z, f_zt = evaluate_losses(loss_fn, cands, self.chunk_size).split(S, 1)
            else:
                f_b, f_z, f_zt = evaluate_losses(loss_fn, hard, self.chunk_size), None, None
            c_z, c_zt = self.control(soft, f_z), self.control(soft_tilde, f_zt)
            (d_control,) = torch.autograd.grad((c_z - c_zt).sum(), th, create_graph=True)
            score = hard - torch.softmax(th, -1).detach()[:, None]  # ∇ log q(b), [B, S, n, K]
            g_hat = ((f_b.detach() - c_zt)[..., None, None] * score).mean(1) + d_control / S
            variance = g_hat.pow(2).sum((-1, -2)).mean()
            tuning = self._tuning_term(variance)
        g = g_hat.detach().to(theta.dtype)
        surrogate = (g * theta).sum() / B + f_b.mean() + tuning
        info = {
            "eta": float(self.eta.detach()),
            "temperature": float(lam.detach()),
            "grad_variance": float(variance.detach()),
        }
        return EstimatorResult(z=b[:, 0], loss=f_b.detach()[:, 0], surrogate=surrogate, info=info)

    def _tuning_term(self, variance: torch.Tensor) -> torch.Tensor:
        """A term whose gradient w.r.t. each tuned parameter is ``∂ variance / ∂ parameter``
        (and zero for everything else: encoder, decoder)."""
        params = [p for p in self.parameters() if p.requires_grad]
        if not params or not torch.is_grad_enabled():
            return variance.new_zeros(())
        grads = torch.autograd.grad(variance, params, retain_graph=True, allow_unused=True)
        total = variance.new_zeros(())
        for p, g in zip(params, grads, strict=True):
            if g is not None:
                total = total + (p * g.detach()).sum().to(total.dtype)
        return total


@register_estimator("relax")
class RelaxEstimator(RebarEstimator):
    """RELAX: REBAR's estimator with a learned control variate ``c_φ`` on the relaxed sample.

    ``c(z) = η·L(softmax(z/λ)) + r_φ(softmax(z/λ))`` (``rebar_term=True``, RELAX's discrete-VAE
    form) or ``r_φ(softmax(z/λ))`` alone, with ``r_φ`` an MLP ``n·K → hidden… → 1`` (ELU) built
    by :meth:`setup`. Unbiased for any φ, η, λ; all are tuned by the variance surrogate.
    Independent latents, any ``K >= 2``.

    Args:
        hidden: widths of ``r_φ``'s hidden layers.
        rebar_term: include REBAR's ``η·L(softmax(z/λ))`` in the control.
        eta, init_temperature, learn_eta, learn_temperature, samples, chunk_size: as REBAR.

    Cost per step: as REBAR (3 candidates per sample in one ``loss_fn`` call) with
    ``rebar_term``; without it one candidate per sample, and ``r_φ``'s forward/backward only.
    """

    name = "relax"
    options = (
        Option("hidden", int_tuple, (64,), "widths of r_phi's hidden layers"),
        Option("rebar_term", boolean, True, "include REBAR's term in the control"),
        *_REBAR_OPTIONS,
    )

    def __init__(
        self,
        hidden: Sequence[int] = (64,),
        rebar_term: bool = True,
        eta: float = 1.0,
        init_temperature: float = 0.5,
        learn_eta: bool = True,
        learn_temperature: bool = True,
        samples: int = 1,
        chunk_size: int = 512,
    ) -> None:
        super().__init__(eta, init_temperature, learn_eta, learn_temperature, samples, chunk_size)
        self.hidden = check_hidden(hidden)
        self.uses_loss_in_control = bool(rebar_term)
        if not self.uses_loss_in_control:
            self.eta.requires_grad_(False)
        self.net: nn.Module | None = None

    def build(self, num_latents: int, num_categories: int) -> None:
        self.net = mlp([num_latents * num_categories, *self.hidden, 1], nn.ELU)

    def control(self, relaxed: torch.Tensor, relaxed_losses: torch.Tensor | None) -> torch.Tensor:
        B, S = relaxed.shape[:2]
        learned = self.net(relaxed.reshape(B, S, -1).to(self.param_dtype()))[..., 0]
        learned = learned.to(relaxed.dtype)
        if relaxed_losses is None:
            return learned
        return super().control(relaxed, relaxed_losses) + learned

"""MuProp (Gu, Levine, Sutskever, Mnih 2016): REINFORCE with a first-order Taylor control variate
around the mean-field point.

With ``μ = softmax(θ)`` ``[B, n, K]`` (``E_q[one_hot(z)] = μ``) and the expansion
``h(z) = L(μ̄) + ∇L(μ̄)·(z − μ̄)`` at ``μ̄ = μ`` held fixed,

    ∇_θ E_q[L(z)] = E_q[(L(z) − h(z)) ∇_θ log q(z)] + ∇L(μ̄) · ∂μ/∂θ

exactly (``E_q[h] = L(μ̄) + ∇L(μ̄)·(μ − μ̄)`` is linear in ``μ``), so the estimator is unbiased.
"""

from __future__ import annotations

import torch

from ..options import Option
from ..potentials import Potentials
from .base import (
    Estimator,
    EstimatorResult,
    LossFn,
    evaluate_losses,
    one_hot,
    register_estimator,
)
from .common import check_samples, log_q, sample_q, surrogate_dtype

__all__ = ["MuPropEstimator", "mean_field_expansion"]


def mean_field_expansion(loss_fn: LossFn, mu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``L(μ)`` ``[B]`` and ``∇_μ L(μ)`` ``[B, n, K]`` at the relaxed point ``μ`` ``[B, n, K]``,
    both detached (one ``loss_fn`` call and one backward through it to its input only)."""
    with torch.enable_grad():
        point = mu.detach().requires_grad_(True)
        value = evaluate_losses(loss_fn, point[:, None])[:, 0]
        (grad,) = torch.autograd.grad(value.sum(), point)
    return value.detach(), grad.detach()


@register_estimator("muprop")
class MuPropEstimator(Estimator):
    """MuProp: score function with a first-order Taylor control variate at the mean field.

    Unbiased. Independent latents, any ``K``. ``loss_fn`` must accept relaxed inputs (the mean
    field ``softmax(θ)`` is not one-hot); it must treat batch rows independently.

    Args:
        samples: samples per data point (the gradient averages over them).
        chunk_size: candidates per ``loss_fn`` call.

    Cost per step: ``samples`` loss evaluations per data point with gradient (the decoder's),
    plus one at the mean field with a backward pass to its input (two ``loss_fn`` calls).
    """

    name = "muprop"
    options = (
        Option("samples", int, 1, "samples per data point (the gradient averages over them)"),
        Option(
            "chunk_size", int, 512, "candidates per loss_fn call (bounds memory)", identity=False
        ),
    )
    relaxed = True
    unbiased = True

    def __init__(self, samples: int = 1, chunk_size: int = 512) -> None:
        super().__init__()
        self.samples = check_samples(samples)
        self.chunk_size = int(chunk_size)

    def estimate(
        self, potentials: Potentials, loss_fn: LossFn, generator: torch.Generator | None = None
    ) -> EstimatorResult:
        theta = potentials.unary
        B, n, K = theta.shape
        dtype = surrogate_dtype(theta)
        z = sample_q(theta, self.samples, generator)  # [B, S, n]
        hard = one_hot(z, K, dtype)  # [B, S, n, K]
        losses = evaluate_losses(loss_fn, hard, self.chunk_size)  # [B, S]
        mu = torch.softmax(theta.to(dtype), dim=-1)
        mu_bar, grad_bar = mean_field_expansion(loss_fn, mu)  # [B], [B, n, K]
        taylor = mu_bar[:, None] + (grad_bar[:, None] * (hard - mu.detach()[:, None])).sum((-1, -2))
        residual = (losses.detach() - taylor).detach()  # [B, S]
        score = (residual * log_q(theta, z)).mean()
        analytic = (grad_bar * mu).sum((-1, -2)).mean()
        surrogate = score + analytic + losses.mean()
        return EstimatorResult(
            z=z[:, 0],
            loss=losses.detach()[:, 0],
            surrogate=surrogate,
            info={"mean_field_loss": float(mu_bar.mean())},
        )

"""Gumbel-softmax / Concrete relaxation (Jang et al. 2017; Maddison et al. 2017)."""

from __future__ import annotations

import torch

from ..gumbel import sample_gumbel
from ..options import Option, boolean
from ..potentials import Potentials
from .base import Estimator, EstimatorResult, LossFn, evaluate_losses, one_hot, register_estimator
from .schedules import Schedule, as_schedule, paper_temperature

__all__ = ["GumbelSoftmaxEstimator"]


@register_estimator("gumbel-softmax")
class GumbelSoftmaxEstimator(Estimator):
    """Relaxed sample ``y = softmax((θ + γ) / τ)`` fed to ``loss_fn``; independent potentials only.

    Args:
        temperature: τ, a float or a Schedule (default: τ₀ = 1 · exp(−1e-5·t) every 1000
            iterations, ≥ 0.1, as in the reference code).
        straight_through: forward the hard one-hot ``argmax(θ + γ)``, backward through ``y``.

    Biased (the relaxed loss is not the loss at a discrete sample; ST's backward is not the
    gradient of the forward). One ``loss_fn`` call with gradient per step. ``.loss`` is the
    loss at the relaxed sample (relaxed) or at the hard sample (straight-through).
    """

    name = "gumbel-softmax"
    options = (
        Option("temperature", float, None, "the temperature tau (default: the paper's schedule)"),
        Option(
            "straight_through", boolean, False, "forward the hard sample, backward the relaxed one"
        ),
    )
    relaxed = True

    def __init__(
        self, temperature: float | Schedule = None, straight_through: bool = False
    ) -> None:
        super().__init__()
        self.temperature = (
            paper_temperature() if temperature is None else as_schedule(temperature, "temperature")
        )
        self.straight_through = bool(straight_through)
        self.relaxed = not self.straight_through

    def estimate(
        self, potentials: Potentials, loss_fn: LossFn, generator: torch.Generator | None = None
    ) -> EstimatorResult:
        theta = potentials.unary
        tau = float(self.temperature(self.iteration))
        gamma = sample_gumbel(
            theta.shape, device=theta.device, dtype=theta.dtype, generator=generator
        )
        logits = theta + gamma
        y = torch.softmax(logits.float() / tau, dim=-1)
        z = logits.argmax(-1)
        if self.straight_through:
            y = one_hot(z, theta.shape[-1]) + y - y.detach()
        loss = evaluate_losses(loss_fn, y[:, None])[:, 0]
        return EstimatorResult(
            z=z, loss=loss.detach(), surrogate=loss.mean(), info={"temperature": tau}
        )

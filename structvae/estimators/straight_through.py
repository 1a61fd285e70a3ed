"""Straight-through estimators, following "Reintroducing Straight-Through Estimators as
Principled Methods for Stochastic Binary Networks" (Shekhovtsov & Yanush).

Every variant feeds the hard one-hot sample to ``loss_fn`` (so the decoder gets the ordinary
gradient at the sample) and replaces the sample's zero derivative by a proxy's:
``z = hard + P − P.detach()``.

Binary latents use the ``{0, 1}`` encoding ``z_i = [a_i − ζ_i ≥ 0]`` with pre-activation
``a_i = θ_i1 − θ_i0`` and symmetric noise ``ζ`` of cdf ``F``, so ``p(z_i = 1) = F(a_i)``. The
paper's derivation (local expectation, then linearising ``L(z) − L(z with bit i flipped)``)
gives the backward factor ``2F′(a)`` for the ±1 encoding because ``x − (−x) = 2x``; with
``{0, 1}`` the flip changes ``z_i`` by ±1, so the factor is ``F′(a)``: ``P = F(a)``. For losses
linear in ``z`` the linearisation is exact and so is the estimator, in expectation.
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
from .common import require_binary, sample_q, surrogate_dtype, uniform_noise
from .gumbel_softmax import GumbelSoftmaxEstimator
from .schedules import Schedule

__all__ = [
    "IdentitySTEstimator",
    "NoiseSTEstimator",
    "DeterministicSTEstimator",
    "StraightThroughGumbelSoftmax",
    "NOISES",
    "noise_cdf",
    "sample_noise",
]

NOISES = ("logistic", "uniform", "triangular")

#: Half-widths of the uniform and triangular noises, chosen so that ``F′(0) = 1/4 = σ′(0)``
#: (the logistic's slope at 0, so all three laws agree to first order around a = 0).
UNIFORM_HALF_WIDTH = 2.0
TRIANGULAR_HALF_WIDTH = 4.0


def noise_cdf(noise: str, a: torch.Tensor) -> torch.Tensor:
    """``F(a)``, differentiable, for the standardised noises of :data:`NOISES`."""
    if noise == "logistic":
        return torch.sigmoid(a)
    if noise == "uniform":
        return (a / (2 * UNIFORM_HALF_WIDTH) + 0.5).clamp(0.0, 1.0)
    if noise == "triangular":
        w = TRIANGULAR_HALF_WIDTH
        x = a.clamp(-w, w)
        return 0.5 + x / w - x * x.abs() / (2 * w * w)
    raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")


def sample_noise(noise: str, shape, like: torch.Tensor, generator=None) -> torch.Tensor:
    """Draws of the symmetric noise ``ζ`` with cdf :func:`noise_cdf`."""
    u = uniform_noise(shape, like, generator)
    if noise == "logistic":
        return torch.log(u) - torch.log1p(-u)
    if noise == "uniform":
        return UNIFORM_HALF_WIDTH * (2 * u - 1)
    if noise == "triangular":  # the sum of two uniforms
        return TRIANGULAR_HALF_WIDTH * (u + uniform_noise(shape, like, generator) - 1)
    raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")


def _st_result(hard: torch.Tensor, proxy: torch.Tensor, loss_fn: LossFn, info: dict):
    """Forward ``hard`` ``[B, n, K]``, backward through ``proxy``; the shared tail."""
    z = hard + proxy - proxy.detach()
    loss = evaluate_losses(loss_fn, z[:, None])[:, 0]
    return EstimatorResult(z=hard.argmax(-1), loss=loss.detach(), surrogate=loss.mean(), info=info)


@register_estimator("st-identity")
class IdentitySTEstimator(Estimator):
    """Identity straight-through: the Gumbel-max sample forward, an identity backward; any K.

    ``on="probabilities"`` (default): identity with respect to ``p = softmax(θ)``
    (``z = hard + p − p.detach()``; Hinton's ST, the paper's identity ST under the transform
    ``T = F`` of the noise). Exact in expectation for losses linear in ``z`` (``E[z] = p``); for
    ``K = 2`` it equals ``st-noise`` with logistic noise. ``on="logits"``: identity with respect
    to ``θ`` itself (the naive "as if the identity" rule; scale-dependent, biased even for linear
    losses). Biased in general. One ``loss_fn`` call with gradient per step.
    """

    name = "st-identity"
    options = (
        Option(
            "on",
            str,
            "probabilities",
            "identity w.r.t. probabilities or logits",
            choices=("probabilities", "logits"),
        ),
    )

    def __init__(self, on: str = "probabilities") -> None:
        super().__init__()
        if on not in ("probabilities", "logits"):
            raise ValueError(f"on must be 'probabilities' or 'logits', got {on!r}")
        self.on = on

    def estimate(
        self, potentials: Potentials, loss_fn: LossFn, generator: torch.Generator | None = None
    ) -> EstimatorResult:
        theta = potentials.unary
        dtype = surrogate_dtype(theta)
        hard = one_hot(sample_q(theta, 1, generator)[:, 0], theta.shape[-1], dtype)
        th = theta.to(dtype)
        proxy = torch.softmax(th, -1) if self.on == "probabilities" else th
        return _st_result(hard, proxy, loss_fn, {})


@register_estimator("st-noise")
class NoiseSTEstimator(Estimator):
    """Straight-through derived from the noise model ``z = [a − ζ ≥ 0]``; binary only (K = 2).

    Forward: ``z_i = [a_i − ζ_i ≥ 0]``, ``a_i = θ_i1 − θ_i0``, ``ζ`` with cdf ``F``; backward:
    ``∂z_i/∂a_i := F′(a_i)`` (the paper's ``2F′`` for ±1 states, ``F′`` for our ``{0, 1}``).
    Exact in expectation for losses linear in ``z``; biased otherwise. One ``loss_fn`` call.

    The sample's law is ``p(z_i = 1) = F(a_i)``. ``noise="logistic"`` (default) is exactly the
    Gumbel-max law of the potentials, ``σ(θ_i1 − θ_i0)`` (the sample is the Gumbel-max one).
    ``"uniform"`` (half-width 2, Htanh-like proxy) and ``"triangular"`` (half-width 4) are other
    laws, scaled so that ``F′(0) = σ′(0) = 1/4``; a model whose KL assumes ``softmax(θ)`` then
    trains a slightly different distribution than it scores, so use them for comparisons only.
    ``K > 2`` is refused (use ``st-identity``, its categorical form).
    """

    name = "st-noise"
    options = (Option("noise", str, "logistic", "the noise law", choices=NOISES),)
    deterministic = False

    def __init__(self, noise: str = "logistic") -> None:
        super().__init__()
        if noise not in NOISES:
            raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
        self.noise = noise

    def check(self, potentials: Potentials) -> None:
        super().check(potentials)
        require_binary(self.name, potentials, "'st-identity' (or 'st-deterministic')")

    def _hard_binary(self, theta: torch.Tensor, a: torch.Tensor, generator) -> torch.Tensor:
        if self.deterministic:
            return (a.detach() >= 0).to(a.dtype)
        if self.noise == "logistic":  # the Gumbel-max sample: exactly the same law
            return sample_q(theta, 1, generator)[:, 0].to(a.dtype)
        return (a.detach() - sample_noise(self.noise, a.shape, a, generator) >= 0).to(a.dtype)

    def estimate(
        self, potentials: Potentials, loss_fn: LossFn, generator: torch.Generator | None = None
    ) -> EstimatorResult:
        theta = potentials.unary
        dtype = surrogate_dtype(theta)
        a = (theta[..., 1] - theta[..., 0]).to(dtype)  # [B, n]
        bit = self._hard_binary(theta, a, generator)
        prob = noise_cdf(self.noise, a)
        hard = torch.stack([1 - bit, bit], -1)
        proxy = torch.stack([1 - prob, prob], -1)
        return _st_result(hard, proxy, loss_fn, {})


@register_estimator("st-deterministic")
class DeterministicSTEstimator(NoiseSTEstimator):
    """Deterministic straight-through: the noise-free arg max forward, the noise proxy backward.

    Binary (``K = 2``): ``z_i = [a_i ≥ 0]`` (the mode), backward ``F′(a_i)`` for ``noise`` in
    logistic / uniform / triangular as ``st-noise``. Categorical (``K > 2``, logistic noise only):
    ``z = one_hot(argmax θ)``, backward through ``softmax(θ)``. Biased (no sampling at all: the
    same ``z`` every call); for losses linear in ``z`` it equals the exact gradient (the backward
    does not depend on the sample). One ``loss_fn`` call.
    """

    name = "st-deterministic"
    options = (Option("noise", str, "logistic", "the noise law", choices=NOISES),)
    deterministic = True

    def check(self, potentials: Potentials) -> None:
        Estimator.check(self, potentials)
        if potentials.num_states > 2 and self.noise != "logistic":
            raise ValueError(
                f"st-deterministic with noise={self.noise!r} is binary only (K = 2), got "
                f"K = {potentials.num_states}; use noise='logistic' (softmax proxy) for K > 2"
            )

    def estimate(
        self, potentials: Potentials, loss_fn: LossFn, generator: torch.Generator | None = None
    ) -> EstimatorResult:
        theta = potentials.unary
        if theta.shape[-1] == 2:
            return super().estimate(potentials, loss_fn, generator)
        dtype = surrogate_dtype(theta)
        th = theta.to(dtype)
        hard = one_hot(th.detach().argmax(-1), th.shape[-1], dtype)
        return _st_result(hard, torch.softmax(th, -1), loss_fn, {})


@register_estimator("st-gumbel-softmax")
class StraightThroughGumbelSoftmax(GumbelSoftmaxEstimator):
    """Straight-through Gumbel-softmax: ``gumbel-softmax`` with ``straight_through=True``.

    Forward the hard one-hot ``argmax(θ + γ)``, backward through ``softmax((θ + γ)/τ)``. Biased;
    any K; one ``loss_fn`` call. Option: ``temperature`` (float or Schedule).
    """

    name = "st-gumbel-softmax"
    options = (
        Option("temperature", float, None, "the temperature tau (default: the paper's schedule)"),
    )

    def __init__(self, temperature: float | Schedule = None) -> None:
        super().__init__(temperature=temperature, straight_through=True)

"""Pieces the baseline estimators share: sampling from q, log q, argument checks, and the base
class of estimators that own trainable networks (:class:`ModuleEstimator`).

Every baseline works with independent latents: ``q(z) = Π_i softmax(θ_i)[z_i]`` with ``θ`` the
unary potentials ``[B, n, K]``; binary latents are ``K = 2`` in the same layout (``z_i = 1`` is
category 1, and the logit of ``p(z_i = 1)`` is ``θ_i1 − θ_i0``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..inference.forest import ForestBackend
from ..potentials import Potentials
from .base import Estimator, _latent_shape

__all__ = [
    "ModuleEstimator",
    "sample_q",
    "log_q",
    "uniform_noise",
    "require_binary",
    "check_samples",
    "check_hidden",
    "check_positive",
    "check_fraction",
    "surrogate_dtype",
]


def surrogate_dtype(theta: torch.Tensor) -> torch.dtype:
    """The float dtype estimators compute in: ``theta``'s, at least float32."""
    return torch.promote_types(theta.dtype, torch.float32)


def sample_q(
    theta: torch.Tensor, samples: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``samples`` Gumbel-max draws from ``q = Π softmax(θ_i)``: long ``[B, S, n]`` (the Gibbs
    distribution of the unary potentials ``θ``, :mod:`structvae.inference`)."""
    return _factorised(theta.detach()).sample(samples, generator).transpose(0, 1)


def log_q(theta: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``log q(z)`` for ``z`` long ``[B, S, n]`` under logits ``θ`` ``[B, n, K]``: ``[B, S]``."""
    return _factorised(theta).log_prob(z)


def _factorised(theta: torch.Tensor) -> ForestBackend:
    """The exact backend of the factorised ``q = Π softmax(θ_i)`` (no edges: closed forms)."""
    return ForestBackend(Potentials(theta, validate=False))


def uniform_noise(
    shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Uniforms in ``(0, 1)`` (clamped away from both ends) with ``like``'s device and dtype."""
    u = torch.rand(shape, device=like.device, dtype=torch.float32, generator=generator)
    tiny = torch.finfo(torch.float32).eps
    return u.clamp_(tiny, 1 - tiny).to(surrogate_dtype(like))


def require_binary(name: str, potentials: Potentials, alternative: str) -> None:
    """``ValueError`` unless the latents are binary (``K = 2``)."""
    K = potentials.num_states
    if K != 2:
        raise ValueError(
            f"estimator {name!r} handles binary latents only (K = 2, the [B, n, 2] layout), "
            f"got K = {K}; for categorical latents use {alternative}"
        )


def check_samples(samples, name: str = "samples", minimum: int = 1) -> int:
    """An integer ``>= minimum`` or ``ValueError``."""
    if isinstance(samples, bool) or int(samples) != samples or int(samples) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {samples!r}")
    return int(samples)


def check_hidden(hidden) -> tuple[int, ...]:
    """Hidden-layer widths of an estimator's network: positive integers, or ``ValueError``."""
    return tuple(check_samples(h, "hidden sizes") for h in hidden)


def check_positive(value, name: str) -> float:
    """A positive finite float or ``ValueError``."""
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


def check_fraction(value, name: str) -> float:
    """A float in ``[0, 1)`` or ``ValueError`` (decay rates of running averages)."""
    v = float(value)
    if not (0.0 <= v < 1.0):
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return v


class ModuleEstimator(Estimator, nn.Module):
    """An estimator that is also an ``nn.Module``: its parameters (baselines, control variates,
    bridges, temperatures) are trained by the same optimiser as the model, and its
    ``state_dict()`` (parameters and running statistics) is checkpointed with it.

    Networks sized by the latent shape are built by :meth:`setup` ``(n, K)``. The training loop
    calls it before building the optimiser; otherwise the first call builds them (on the
    potentials' device), and an optimiser built before that call will not see them.
    Subclasses implement :meth:`build`.
    """

    def __init__(self) -> None:
        nn.Module.__init__(self)
        Estimator.__init__(self)
        self.latent_shape: tuple[int, int] | None = None

    def build(self, num_latents: int, num_categories: int) -> None:
        """Create the networks for ``n = num_latents`` variables with ``K`` categories."""

    # nn.Module's checkpointing, not the stateless default of Estimator (first in the MRO)
    state_dict = nn.Module.state_dict
    load_state_dict = nn.Module.load_state_dict

    def setup(
        self, latent_shape: tuple[int, int] | int, num_categories: int | None = None
    ) -> ModuleEstimator:
        """Build the networks for latents ``(n, K)`` once (``setup((n, K))`` or ``setup(n, K)``);
        a different shape later is an error."""
        shape = _latent_shape(latent_shape, num_categories)
        if self.latent_shape is not None:
            if shape != self.latent_shape:
                raise ValueError(
                    f"estimator {self.name!r} was set up for latents n x K = "
                    f"{self.latent_shape[0]} x {self.latent_shape[1]}, got "
                    f"{shape[0]} x {shape[1]}; build a new estimator for a new model"
                )
            return self
        self.latent_shape = shape
        self.build(*shape)
        return self

    def check(self, potentials: Potentials) -> None:
        super().check(potentials)
        if self.latent_shape is not None:
            self.setup(potentials.num_vars, potentials.num_states)  # raises on a mismatch

    def ensure_built(self, potentials: Potentials) -> None:
        """:meth:`setup` from ``potentials`` when not done yet, on their device."""
        if self.latent_shape is None:
            self.setup(potentials.num_vars, potentials.num_states)
            self.to(potentials.device)

    def param_dtype(self) -> torch.dtype:
        """The dtype of the estimator's parameters (float32 unless moved)."""
        for p in self.parameters():
            return p.dtype
        return torch.float32

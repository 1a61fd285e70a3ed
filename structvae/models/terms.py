"""The maths every VAE here shares, written once: the pixel likelihood, the KL terms, Gumbel-max
sampling and the importance-weighted average.

All functions are differentiable where their inputs are, and keep the inputs' dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..gumbel import sample_gumbel

__all__ = [
    "bernoulli_nll",
    "gaussian_kl",
    "categorical_kl",
    "gumbel_max",
    "categorical_log_prob",
    "standard_normal_log_prob",
    "diagonal_normal_log_prob",
    "iwae_from_log_weights",
    "HALF_LOG_2PI",
]

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def bernoulli_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """−log p(x|z) of Bernoulli pixels: BCE with ``logits [..., D]`` against ``target``
    (broadcast to the logits' shape, values in [0, 1]), summed over the last dim: ``[...]``."""
    target = target.to(logits.dtype).expand_as(logits)
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(μ, exp logvar) || N(0, I))`` summed over the last dim: ``[..., d] -> [...]``."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def categorical_kl(unary: torch.Tensor) -> torch.Tensor:
    """``KL(Π_i softmax(θ_i) || uniform) = n log K − H(q)`` for logits ``[B, n, K]``: ``[B]``."""
    logq = torch.log_softmax(unary, dim=-1)
    n, K = unary.shape[-2:]
    return (logq.exp() * logq).sum((-1, -2)) + n * math.log(K)


def gumbel_max(
    logits: torch.Tensor, samples: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``samples`` exact draws from ``Π_i softmax(θ_i)`` by Gumbel-max: logits ``[B, n, K]`` ->
    long ``[B, samples, n]`` (no gradient)."""
    u = logits.detach()
    B, n, K = u.shape
    g = sample_gumbel((B, int(samples), n, K), device=u.device, dtype=u.dtype, generator=generator)
    return (u[:, None] + g).argmax(-1)


def categorical_log_prob(logits: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``log Π_i softmax(θ_i)[z_i]`` for logits ``[B, n, K]`` and long ``z [B, S, n]``: ``[B, S]``."""
    table = torch.log_softmax(logits, dim=-1)
    B, S = z.shape[:2]
    return table[:, None].expand(B, S, *table.shape[1:]).gather(-1, z[..., None])[..., 0].sum(-1)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I)`` summed over the last dim."""
    return -(z.pow(2) / 2 + HALF_LOG_2PI).sum(-1)


def diagonal_normal_log_prob(noise: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``log N(μ + σ·e; μ, σ²)`` of a reparameterised draw from its standard noise ``e`` and
    ``logvar`` (broadcast), summed over the last dim."""
    return -(noise.pow(2) / 2 + HALF_LOG_2PI + logvar / 2).sum(-1)


def iwae_from_log_weights(log_w: torch.Tensor) -> torch.Tensor:
    """``−log (1/S) Σ_s exp log_w[:, s]``: the importance-weighted −log p(x) estimate ``[B]`` from
    log-weights ``log p(x, z_s) − log q(z_s|x)`` ``[B, S]``."""
    return -(torch.logsumexp(log_w, dim=1) - math.log(log_w.shape[1]))

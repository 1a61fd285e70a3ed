"""The interface every exact backend of :class:`~structvae.inference.Gibbs` implements.

A backend holds one batch of potentials and answers the Gibbs quantities of
``q(z) ∝ exp h(z)``; the defaults here derive entropy, KL and log-probabilities from the
log-partition function and the marginals.
"""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple

import torch

from ..potentials import Potentials

__all__ = ["Backend", "Marginals", "expected_score"]


class Marginals(NamedTuple):
    """Marginals of a Gibbs distribution: ``unary [B, n, K]`` (``q(z_i = k)``) and
    ``pairwise [B, E, K, K]`` (``q(z_i = a, z_j = c)`` for edge ``e = (i, j)``)."""

    unary: torch.Tensor
    pairwise: torch.Tensor


def expected_score(p: Potentials, mu: Marginals) -> torch.Tensor:
    """``E_q[h(z)]`` ``[B]`` from the marginals: ``<mu_unary, unary> + <mu_pairwise, pairwise>``."""
    dtype = torch.promote_types(mu.unary.dtype, p.dtype)
    e = (mu.unary.to(dtype) * p.unary.to(dtype)).flatten(1).sum(1)
    if p.has_edges:
        e = e + (mu.pairwise.to(dtype) * p.pairwise.to(dtype)).flatten(1).sum(1)
    return e


class Backend:
    """One exact algorithm for the Gibbs distribution of ``potentials``.

    Subclasses set :attr:`name`, implement :meth:`refusal` (why they cannot handle a
    structure, or ``None``), :meth:`log_partition`, :meth:`marginals`, :meth:`sample` and
    :meth:`argmax`, and may override the derived quantities with faster ones.
    """

    name: ClassVar[str] = ""

    def __init__(self, potentials: Potentials) -> None:
        self.p = potentials

    @classmethod
    def refusal(cls, p: Potentials, **limits) -> str | None:
        """Why this backend cannot handle ``p`` exactly (``None``: it can)."""
        raise NotImplementedError

    def log_partition(self) -> torch.Tensor:
        """``log sum_z exp h(z)`` ``[B]``, differentiable."""
        raise NotImplementedError

    def marginals(self) -> Marginals:
        """Unary ``[B, n, K]`` and pairwise ``[B, E, K, K]`` marginals."""
        raise NotImplementedError

    def sample(self, num: int, generator: torch.Generator | None) -> torch.Tensor:
        """``num`` exact independent draws per row: long ``[num, B, n]``."""
        raise NotImplementedError

    def argmax(self) -> torch.Tensor:
        """A most probable assignment per row: long ``[B, n]``."""
        raise NotImplementedError

    def entropy(self) -> torch.Tensor:
        """``H(q) = log Z - E_q[h]`` ``[B]``."""
        return self.log_partition() - expected_score(self.p, self.marginals())

    def kl_to_uniform(self) -> torch.Tensor:
        """``KL(q || uniform) = n log K - H(q)`` ``[B]``."""
        return self.p.num_vars * math.log(self.p.num_states) - self.entropy()

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log q(z)`` for ``z`` long ``[B, S, n]``: ``[B, S]``."""
        return self.p.score(z) - self.log_partition()[:, None]

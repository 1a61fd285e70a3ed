"""Gibbs quantities by full enumeration of all ``K^n`` assignments (any K, any edges).

The scores of every assignment come from :func:`structvae.solvers.enumeration.enumerate_scores`
(``[B, K^n]``, differentiable); everything else is a softmax over them. Memory and time grow
as ``B · K^n``: the backend refuses ``K^n`` above ``max_assignments`` (default ``2^22``).
"""

from __future__ import annotations

import torch

from ..potentials import Potentials
from ..solvers.enumeration import (
    DEFAULT_MAX_ASSIGNMENTS,
    all_assignments,
    chunk_size,
    design_chunks,
    enumerate_scores,
)
from .backend import Backend, Marginals

__all__ = ["EnumerateBackend", "binary_marginals"]


def binary_marginals(p: Potentials, mean: torch.Tensor, pair: torch.Tensor) -> Marginals:
    """Marginal tables from ``E[z_i]`` ``[B, n]`` and ``E[z_i z_j]`` ``[B, E]`` (K = 2)."""
    unary = torch.stack([1 - mean, mean], -1)
    mi, mj = mean[:, p.edges[:, 0]], mean[:, p.edges[:, 1]]
    table = torch.stack([1 - mi - mj + pair, mj - pair, mi - pair, pair], -1)
    return Marginals(unary, table.unflatten(-1, (2, 2)))


class EnumerateBackend(Backend):
    """Exact by scoring all ``K^n`` assignments; any ``K``, any edges.

    Args:
        potentials: the batch.
        max_assignments: refuse ``K^n`` above this (default ``2^22``).
    """

    name = "enumerate"

    def __init__(self, potentials: Potentials, max_assignments: int = DEFAULT_MAX_ASSIGNMENTS):
        super().__init__(potentials)
        self.max_assignments = int(max_assignments)
        self._scores: dict[bool, torch.Tensor] = {}

    @classmethod
    def refusal(
        cls, p: Potentials, max_assignments: int = DEFAULT_MAX_ASSIGNMENTS, **_
    ) -> str | None:
        total = p.num_states**p.num_vars
        if total > max_assignments:
            return (
                f"enumeration scores K^n = {p.num_states}^{p.num_vars} = {total} assignments, "
                f"above max_assignments = {max_assignments}"
            )
        return None

    def scores(self) -> torch.Tensor:
        """The scores ``[B, K^n]`` of all assignments (computed once per grad mode; without
        grad, the detached scores of an earlier call with grad)."""
        key = torch.is_grad_enabled()
        if not key and True in self._scores:
            return self._scores[True].detach()
        if key not in self._scores:
            self._scores[key] = enumerate_scores(self.p, self.max_assignments)
        return self._scores[key]

    def log_probs(self) -> torch.Tensor:
        """``log q`` of every assignment ``[B, K^n]`` (order of ``all_assignments``)."""
        return torch.log_softmax(self.scores(), dim=1)

    def log_partition(self) -> torch.Tensor:
        return torch.logsumexp(self.scores(), dim=1)

    def marginals(self) -> Marginals:
        p = self.p
        q = torch.softmax(self.scores(), dim=1)
        chunks = design_chunks(p, chunk_size(p), None)
        flat = sum(q[:, s : s + d.shape[0]] @ d for s, d in chunks)  # [B, width]: E[columns]
        n, K, E = p.num_vars, p.num_states, p.num_edges
        if K == 2:
            return binary_marginals(p, flat[:, :n], flat[:, n:])
        unary = flat[:, : n * K].unflatten(1, (n, K))
        return Marginals(unary, flat[:, n * K :].reshape(p.batch_size, E, K, K))

    def entropy(self) -> torch.Tensor:
        s = self.scores()
        log_q = torch.log_softmax(s, dim=1)
        return -(log_q.exp() * log_q).sum(1)

    @torch.no_grad()
    def sample(self, num: int, generator: torch.Generator | None) -> torch.Tensor:
        q = torch.softmax(self.scores(), dim=1)
        idx = torch.multinomial(q, num, replacement=True, generator=generator)  # [B, S]
        return self.decode(idx).transpose(0, 1)

    @torch.no_grad()
    def argmax(self) -> torch.Tensor:
        return self.decode(self.scores().argmax(1))

    def decode(self, idx: torch.Tensor) -> torch.Tensor:
        """Assignments ``[..., n]`` of lexicographic indices ``idx`` (``all_assignments``)."""
        p = self.p
        powers = p.num_states ** torch.arange(p.num_vars - 1, -1, -1, device=idx.device)
        return (idx[..., None] // powers) % p.num_states

    def support(self) -> torch.Tensor:
        """All ``K^n`` assignments ``[K^n, n]`` in the order of :meth:`log_probs`."""
        return all_assignments(self.p.num_vars, self.p.num_states, device=self.p.device)

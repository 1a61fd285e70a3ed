"""Exact arg max by enumerating all K^n assignments, batched and chunked on the device."""

from __future__ import annotations

import torch

from ..potentials import Potentials
from .base import Solver, register
from .enumeration import (
    DEFAULT_MAX_ASSIGNMENTS,
    DesignCache,
    all_assignments,
    check_size,
    chunk_size,
    design_chunks,
    enumerate_scores,
    flat_coefficients,
    split_argmax,
)

__all__ = ["ExactSolver", "all_assignments", "enumerate_scores", "DEFAULT_MAX_ASSIGNMENTS"]

_CHUNK_ELEMENTS = 2**23  # bound on the elements of one chunk's design matrix / score block


@register("exact")
class ExactSolver(Solver):
    """Enumerate all ``K**n`` assignments; any K and pairwise tables.

    Binary problems (K = 2, n ≥ 2) are maximised by split enumeration
    (:func:`structvae.solvers.enumeration.split_argmax`): the scores of the two halves of the variables plus a
    low-rank cross term, which needs far fewer multiply-adds than the design-matrix product.

    Scores are matrix products of the flattened potentials with one-hot design matrices
    (for K = 2, the compact ``z_i`` / ``z_i z_j`` form: ``n + E`` columns instead of ``2n + 4E``),
    computed in chunks of bounded size on the potentials' device; design matrices up to
    ``2**25`` elements are cached between calls (training reuses the same n, K, edges).

    Args:
        max_assignments: refuse problems with more than this many assignments
            (default ``2**22``).
    """

    name = "exact"

    def __init__(self, max_assignments: int = DEFAULT_MAX_ASSIGNMENTS) -> None:
        super().__init__()
        self.max_assignments = int(max_assignments)
        self._cache = DesignCache()

    def check(self, potentials: Potentials) -> None:
        super().check(potentials)
        check_size(potentials, self.max_assignments, f"solver {self.name!r}")

    @torch.no_grad()
    def solve(self, potentials: Potentials, hint: torch.Tensor | None = None) -> torch.Tensor:
        p = potentials
        powers = p.num_states ** torch.arange(p.num_vars - 1, -1, -1, device=p.device)
        if p.num_states == 2 and p.num_vars >= 2:
            best_idx = split_argmax(p)  # 2^(n/2)-sized halves: far fewer multiply-adds
            return (best_idx[:, None] // powers) % 2
        theta, _ = flat_coefficients(p)
        best = torch.full((p.batch_size,), -torch.inf, dtype=theta.dtype, device=p.device)
        best_idx = torch.zeros(p.batch_size, dtype=torch.long, device=p.device)
        for start, d in design_chunks(p, chunk_size(p, _CHUNK_ELEMENTS), self._cache):
            s = theta @ d.t()
            val, idx = s.max(dim=1)
            better = val > best
            best = torch.where(better, val, best)
            best_idx = torch.where(better, idx + start, best_idx)
        return (best_idx[:, None] // powers) % p.num_states

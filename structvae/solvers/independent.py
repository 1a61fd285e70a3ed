"""Per-variable arg max for potentials without edges."""

from __future__ import annotations

import torch

from ..potentials import Potentials
from .base import Solver, register

__all__ = ["IndependentSolver"]


@register("independent")
class IndependentSolver(Solver):
    """``z_i = argmax_k unary[i, k]``: exact when there are no edges (refuses edges)."""

    name = "independent"
    supports_edges = False

    def solve(self, potentials: Potentials, hint: torch.Tensor | None = None) -> torch.Tensor:
        return potentials.unary.argmax(-1)

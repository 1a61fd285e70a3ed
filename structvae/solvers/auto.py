"""The documented default solver for a problem's structure (never its values)."""

from __future__ import annotations

import torch

from ..graphs import is_forest
from .base import Solver, get_solver

__all__ = ["auto_solver_name", "auto_solver", "EXACT_AUTO_LIMIT"]

EXACT_AUTO_LIMIT = 2**20
"""Above this many assignments, ``auto`` leaves enumeration for the integer program."""


def auto_solver_name(n: int, K: int, edges: torch.Tensor | None) -> str:
    """Pick an exact solver from the structure alone:

    1. no edges -> ``independent``;
    2. a forest -> ``tree`` (max-product, exact, on the device);
    3. ``K**n <= 2**20`` -> ``exact`` (batched enumeration on the device);
    4. otherwise -> ``ilp``.

    ``graphcut`` is never picked automatically: whether the tables are supermodular is a
    property of the model (e.g. softplus couplings), so models that guarantee it ask for it.
    """
    if edges is None or edges.numel() == 0:
        return "independent"
    if is_forest(edges.cpu(), n):
        return "tree"
    if K**n <= EXACT_AUTO_LIMIT:
        return "exact"
    return "ilp"


def auto_solver(n: int, K: int, edges: torch.Tensor | None, **options) -> Solver:
    """``get_solver(auto_solver_name(n, K, edges), **options)``."""
    return get_solver(auto_solver_name(n, K, edges), **options)

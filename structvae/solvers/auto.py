"""The documented default solver for a problem's structure (never its values)."""

from __future__ import annotations

import torch

from ..graphs import is_forest
from ..potentials import Potentials
from .base import Solver, get_solver, register

__all__ = ["auto_solver_name", "auto_solver", "AutoSolver", "EXACT_AUTO_LIMIT"]

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


@register("auto")
class AutoSolver(Solver):
    """``get_solver("auto")``: for each batch, the solver :func:`auto_solver_name` picks from the
    potentials' structure (cached per structure). Never graph cut: whether couplings are
    supermodular is a property of the model, so a run asks :func:`~structvae.solvers.select`
    with the model's :class:`~structvae.solvers.Structure` instead, which returns the concrete
    solver. ``options`` go to every solver it builds."""

    name = "auto"

    def __init__(self, **options) -> None:
        super().__init__()
        self.options = options
        self._chosen: dict[tuple, Solver] = {}

    def choose(self, potentials: Potentials) -> Solver:
        """The concrete solver for ``potentials``' structure ``(n, K, edges)``."""
        p = potentials
        key = (p.num_vars, p.num_states, p.edges.detach().cpu().numpy().tobytes())
        if key not in self._chosen:
            name = auto_solver_name(p.num_vars, p.num_states, p.edges)
            self._chosen[key] = get_solver(name, **self.options)
        return self._chosen[key]

    def check(self, potentials: Potentials) -> None:
        super().check(potentials)
        self.choose(potentials).check(potentials)

    def solve(self, potentials: Potentials, hint: torch.Tensor | None = None) -> torch.Tensor:
        solver = self.choose(potentials)
        z = solver.solve(potentials, hint=hint if solver.uses_hint else None)
        self.last_optimal = solver.last_optimal
        return z

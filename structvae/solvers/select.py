"""The one solver decision of a run: :func:`select` over the latent structure and the request.

    structure = Structure(n=15, K=2, edges=edges, supermodular=True)   # model.structure
    solver = select(structure, "auto")        # -> GraphCutSolver (supermodular, K = 2)
    solver = select(structure, "tree")        # ValueError: the complete graph has a cycle

The run calls :func:`select` once; the same instance goes to ``model.use_solver`` and to the
estimator, for training and evaluation. It merges what used to be three places: the structural
default (:func:`~structvae.solvers.auto.auto_solver_name`), the models' ``default_solver``
(graph cut for supermodular couplings) and their ``check_solver``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..potentials import Potentials
from .auto import auto_solver_name
from .base import Solver, get_solver

__all__ = ["Structure", "select", "default_solver_name", "check_solver"]


@dataclass(frozen=True)
class Structure:
    """What a solver decision needs to know about the latents: ``n`` variables with ``K`` states,
    the edges (long ``[E, 2]``, ``i < j``; ``None`` or empty: independent variables) and whether
    every pairwise table is guaranteed supermodular (e.g. softplus couplings), which makes graph
    cut exact for ``K = 2``."""

    n: int
    K: int
    edges: torch.Tensor | None = None
    supermodular: bool = False

    @property
    def num_edges(self) -> int:
        return 0 if self.edges is None else int(self.edges.shape[0])

    def describe(self) -> str:
        kind = "supermodular" if self.supermodular else "general"
        edges = f"{self.num_edges} {kind} edges" if self.num_edges else "no edges"
        return f"n = {self.n} variables with K = {self.K} states and {edges}"

    def example(self) -> Potentials:
        """Zero potentials of this structure (one sample), for solvers' structural checks."""
        edges = self.edges if self.num_edges else None
        E = self.num_edges
        pairwise = torch.zeros(1, E, self.K, self.K) if E else None
        return Potentials(torch.zeros(1, self.n, self.K), edges, pairwise)


def default_solver_name(structure: Structure) -> str:
    """The documented choice: ``independent`` without edges; ``graphcut`` for supermodular
    ``K = 2`` couplings; else :func:`~structvae.solvers.auto.auto_solver_name` (``tree`` on a
    forest, ``exact`` up to 2^20 assignments, ``ilp`` above)."""
    if structure.num_edges == 0:
        return "independent"
    if structure.supermodular and structure.K == 2:
        return "graphcut"
    return auto_solver_name(structure.n, structure.K, structure.edges)


def check_solver(structure: Structure, solver: str | Solver, who: str | None = None) -> Solver:
    """The solver (built from its name) if it can maximise every problem of ``structure``
    exactly, else ``ValueError`` saying why and what to use instead.

    Checks what the solver declares (``supports_edges``, ``num_states``,
    ``supermodular_only``) and its own structural :meth:`~structvae.solvers.Solver.check` on
    zero potentials of the structure (a tree solver on a graph with a cycle, enumeration above
    its limit). Value-dependent conditions beyond these are the solver's, at each call."""
    solver = get_solver(solver)  # unknown names raise, listing the available ones
    where = who or structure.describe()
    default = default_solver_name(structure)
    if structure.num_edges == 0:
        if solver.num_states is not None and solver.num_states != structure.K:
            raise ValueError(
                f"solver {solver.name!r} needs K = {solver.num_states} states, but {where} has "
                f"K = {structure.K}; use {default!r}"
            )
        return solver  # with no edges, every solver of the right K maximises exactly
    if solver.supermodular_only and not structure.supermodular:
        raise ValueError(
            f"solver {solver.name!r} needs supermodular couplings (theta_ij >= 0), but {where} has "
            "couplings of any sign; use pairwise='supermodular' (softplus couplings) or a "
            f"solver for general potentials (default here: {default!r})"
        )
    if not solver.supports_edges:
        raise ValueError(
            f"solver {solver.name!r} solves independent variables only (it ignores pairwise "
            f"terms), but {where} has edges; use {default!r}"
        )
    try:
        solver.check(structure.example())
    except ValueError as err:
        raise ValueError(f"{err} (the default for {where} is {default!r})") from None
    return solver


def select(structure: Structure, request: str | Solver | None = "auto", **options) -> Solver:
    """The run's solver: ``"auto"`` / ``None`` -> :func:`default_solver_name`'s choice (built
    with ``options``); a name or an instance -> checked against ``structure`` with
    :func:`check_solver` (``ValueError`` if it cannot solve it)."""
    if not isinstance(structure, Structure):
        raise ValueError(f"select needs a solvers.Structure, got {type(structure).__name__}")
    if request is None or (isinstance(request, str) and request == "auto"):
        request = default_solver_name(structure)
    if isinstance(request, str):
        request = get_solver(request, **options)
    elif options:
        raise ValueError("options cannot be applied to an already-built Solver instance")
    return check_solver(structure, request)

"""Arg-max solvers behind one protocol: ``solver(potentials) -> z [B, n]``.

Built-ins (all exact): ``independent``, ``exact``, ``graphcut``, ``ilp``, ``tree``.
Register your own with :func:`register` or wrap a function with :class:`FunctionSolver`.
``get_solver("auto")`` picks by structure at each call; a run decides once with :func:`select`
over the model's :class:`Structure`.
"""

from .auto import AutoSolver, auto_solver_name
from .base import (
    FunctionSolver,
    InvalidSolutionError,
    Solver,
    SolverError,
    SolverWarning,
    available_solvers,
    get_solver,
    register,
    solver_from_function,
)
from .exact import ExactSolver, all_assignments, enumerate_scores
from .graphcut import GraphCutSolver
from .ilp import ILPSolver
from .independent import IndependentSolver
from .qpbo import qpbo_persistencies, reduce_potentials
from .select import Structure, check_solver, default_solver_name, select
from .tree import TreeSolver, tree_log_partition

__all__ = [
    "Solver",
    "SolverError",
    "InvalidSolutionError",
    "SolverWarning",
    "FunctionSolver",
    "register",
    "get_solver",
    "available_solvers",
    "solver_from_function",
    "IndependentSolver",
    "ExactSolver",
    "all_assignments",
    "enumerate_scores",
    "TreeSolver",
    "ILPSolver",
    "GraphCutSolver",
    "qpbo_persistencies",
    "reduce_potentials",
    "tree_log_partition",
    "AutoSolver",
    "auto_solver_name",
    "Structure",
    "select",
    "check_solver",
    "default_solver_name",
]

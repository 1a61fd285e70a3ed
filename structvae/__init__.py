"""structvae: discrete and structured VAEs by direct optimization through arg max."""

from . import estimators, inference, lab, models, solvers
from .errors import NonFiniteError, SolverError
from .graphs import chain_edges, complete_edges, edges_from_graph, grid_edges, make_edges
from .gumbel import gumbel_like, sample_gumbel
from .inference import Gibbs, binary_gibbs_kl
from .potentials import BinaryForm, Potentials
from .solvers import Solver, available_solvers, get_solver, register
from .training.loading import load_model

__version__ = "0.1.0"

__all__ = [
    "Potentials",
    "BinaryForm",
    "Gibbs",
    "NonFiniteError",
    "SolverError",
    "binary_gibbs_kl",
    "sample_gumbel",
    "gumbel_like",
    "complete_edges",
    "chain_edges",
    "grid_edges",
    "edges_from_graph",
    "make_edges",
    "solvers",
    "inference",
    "estimators",
    "lab",
    "models",
    "Solver",
    "get_solver",
    "register",
    "available_solvers",
    "load_model",
]

"""The Gibbs distribution of pairwise potentials: log-partition, marginals, entropy, KL,
exact sampling, log-probabilities and arg max (:class:`Gibbs`), by full enumeration, split
enumeration (binary) or sum-product on forests (one module per algorithm)."""

from .backend import Backend, Marginals, expected_score
from .enumerate import EnumerateBackend
from .forest import ForestBackend
from .gibbs import BACKENDS, Gibbs, select_backend
from .split import MAX_GIBBS_VARS, SplitBackend, binary_gibbs_kl, split_argmax

__all__ = [
    "Gibbs",
    "Marginals",
    "Backend",
    "BACKENDS",
    "select_backend",
    "EnumerateBackend",
    "SplitBackend",
    "ForestBackend",
    "binary_gibbs_kl",
    "split_argmax",
    "MAX_GIBBS_VARS",
    "expected_score",
]

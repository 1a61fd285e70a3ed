"""Exception types shared across structvae (each also an ordinary built-in type)."""

from __future__ import annotations

__all__ = ["NonFiniteError", "SolverError"]


class NonFiniteError(ValueError):
    """A tensor (potentials, losses, gradients) holds NaN or inf; the message names it."""


class SolverError(RuntimeError):
    """An arg-max solver failed on a problem (raised, or gave no usable answer); the message
    names the solver and the sample."""

"""Moved to :mod:`structvae.nn` (shared with the estimators); this name stays importable."""

from ..nn import mlp

__all__ = ["mlp"]

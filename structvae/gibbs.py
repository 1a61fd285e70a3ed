"""Deprecated location: the split-enumeration Gibbs code lives in :mod:`structvae.inference`
(:mod:`structvae.inference.split`); these names stay importable from here."""

from .inference.split import MAX_GIBBS_VARS, binary_gibbs_kl, split_argmax

__all__ = ["binary_gibbs_kl", "split_argmax", "MAX_GIBBS_VARS"]

"""Encoders, decoders and the VAEs built from them.

Every VAE here subclasses :class:`~structvae.models.base.VAE` (alias ``BaseVAE``), the one
interface the training loop relies on. ``build_model(name, latent=..., **kw)`` builds one by name (the CLI's
``--model``); register more with :func:`register_model`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..nn import mlp
from ..registry import Registry
from .base import VAE, BaseVAE, ModelOutput
from .categorical import CategoricalVAE, parse_latent
from .celeba import AttributeVAE
from .semisupervised import SemiSupervisedVAE, parse_semisup_latent
from .structured import StructuredVAE, parse_binary_latent

__all__ = [
    "VAE",
    "BaseVAE",
    "ModelOutput",
    "AttributeVAE",
    "mlp",
    "CategoricalVAE",
    "StructuredVAE",
    "SemiSupervisedVAE",
    "parse_semisup_latent",
    "parse_binary_latent",
    "parse_latent",
    "MODELS",
    "build_model",
    "register_model",
    "available_models",
]

MODELS: Registry[nn.Module] = Registry(
    "model", " (register your own with structvae.models.register_model)"
)
MODELS.add("categorical", CategoricalVAE.from_spec)
MODELS.add("structured", StructuredVAE.from_spec)
MODELS.add("celeba", AttributeVAE.from_spec)
MODELS.add("semisupervised", SemiSupervisedVAE.from_spec)


def register_model(name: str, factory: Callable[..., nn.Module], *, overwrite: bool = False):
    """Make ``build_model(name, latent=spec, input_dim=D, **kw)`` call ``factory``.

    ``factory(latent=spec, input_dim=D, **kw)`` must raise ``ValueError`` for a bad ``latent``.
    """
    MODELS.add(name, factory, overwrite=overwrite)
    return factory


def build_model(name: str, latent: str | int | None = None, **kw) -> nn.Module:
    """Build the registered model ``name`` with latent spec ``latent``.

    ``"categorical"``: ``"NxK"``; ``"structured"``: ``N`` (int or str) binary latents, options
    ``pairwise=``, ``graph=``, ``solver=`` (see :class:`StructuredVAE`); ``"celeba"``: the
    style-code size, options ``attributes=``, ``pairwise=``, ``graph=`` (:class:`AttributeVAE`).
    """
    if latent is not None:
        kw["latent"] = latent
    return MODELS.build(name, **kw)


def available_models() -> list[str]:
    return MODELS.names()

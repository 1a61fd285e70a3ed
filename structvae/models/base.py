"""The one contract every VAE of structvae follows: :class:`VAE` (alias :data:`BaseVAE`).

The training loop, the evaluation and the CLI read only what this class declares: class
attributes (``name``, ``options``, ``uses_labels``, ``kl_kind``, ``loss_is_bound``), properties
(``latent_shape``, ``structure``, ``iwae_available``) and methods (``objective``,
``one_sample_loss``, ``forward``, ``iwae_nll``, ``reconstruct``, ``sample``, ``label_metrics``,
``grids``, ``use_solver``). Nothing is probed with ``hasattr`` or signatures.
"""

from __future__ import annotations

import math
from abc import ABCMeta, abstractmethod
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from ..options import Option
from ..solvers import Solver
from ..solvers.select import Structure, check_solver

__all__ = ["VAE", "BaseVAE", "ModelOutput", "image_shape_of"]


class ModelOutput(NamedTuple):
    """``model(x)``: the one-sample evaluation. ``loss``, ``recon``, ``kl`` float ``[B]``
    (``loss = recon + kl``), ``z`` long ``[B, n]`` the sampled discrete latents."""

    loss: torch.Tensor
    recon: torch.Tensor
    kl: torch.Tensor
    z: torch.Tensor


def image_shape_of(input_dim: int) -> tuple[int, int, int]:
    """``(C, H, W)`` of a flattened square image of ``input_dim`` values: one channel when
    ``input_dim`` is a square (784 -> 1×28×28), three when ``input_dim / 3`` is (12288 ->
    3×64×64); else ``(1, 1, input_dim)`` (a row of pixels)."""
    for channels in (1, 3):
        if input_dim % channels == 0:
            side = math.isqrt(input_dim // channels)
            if side * side * channels == input_dim:
                return channels, side, side
    return 1, 1, int(input_dim)


class VAE(nn.Module, metaclass=ABCMeta):
    """Abstract base of the VAEs here. Subclasses set ``name`` and ``options`` and implement
    :meth:`from_spec`, :attr:`latent_shape`, :meth:`objective`, :meth:`one_sample_loss`,
    :meth:`iwae_nll`, :meth:`reconstruct` and :meth:`sample`.

    Class attributes:
        name: the registry name (``--model``).
        options: the constructor options a user may set (``from_spec`` keywords).
        uses_labels: :meth:`objective` takes ``y=`` (``-1`` where a row is unlabelled).
        kl_kind: what the KL term is (``"exact"``, ``"exact-gibbs"``, ``"factorised-approx"``).
        loss_is_bound: whether :meth:`one_sample_loss` estimates an upper bound on −log p(x).
        train_objective: ``"elbo"`` or ``"paper"``, which KL gradient :meth:`objective` trains
            (:func:`~structvae.models.reference.training_kl`; set by ``set_objective``).
    """

    name: ClassVar[str] = "vae"
    options: ClassVar[tuple[Option, ...]] = ()
    uses_labels: ClassVar[bool] = False
    kl_kind: ClassVar[str | None] = "exact"
    loss_is_bound: ClassVar[bool] = True
    train_objective: str = "elbo"

    # ------------------------------------------------------------ structure
    @property
    def iwae_available(self) -> bool:
        """Whether :meth:`iwae_nll` can be computed (exact proposal samples and probabilities)."""
        return True

    @property
    @abstractmethod
    def latent_shape(self) -> tuple[int, int]:
        """``(n, K)``: the discrete latents the estimators see."""

    @property
    def structure(self) -> Structure:
        """What :func:`~structvae.solvers.select` needs: ``n``, ``K``, the edges, whether the
        couplings are supermodular. Default: independent latents of :attr:`latent_shape`."""
        n, K = self.latent_shape
        return Structure(n, K, None, False)

    def use_solver(self, solver: Solver) -> None:
        """Adopt the run's one solver (checked against :attr:`structure`); the model keeps it
        in ``self.solver`` for its samples, reconstructions and evaluation."""
        self.solver = check_solver(self.structure, solver)

    @classmethod
    @abstractmethod
    def from_spec(cls, latent=None, **options) -> VAE:
        """Build from a latent spec (``--latent``) and the declared :attr:`options`."""

    # ------------------------------------------------------------ training
    @abstractmethod
    def objective(self, x: torch.Tensor, estimator, y: torch.Tensor | None = None, **kw):
        """``(scalar to backward, stats)``; stats: detached 0-dim ``loss``, ``recon``, ``kl``
        (and the estimator's float ``eps`` / ``temperature``)."""

    # ------------------------------------------------------------ evaluation
    def one_sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> ModelOutput:
        """The loss at one sample of the latents (:class:`ModelOutput`, no gradient)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement one_sample")

    def one_sample_loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        """``{"loss", "recon", "kl"}`` each ``[B]``: :meth:`one_sample` as a dict (the paper's
        test loss)."""
        out = self.one_sample(x, generator)
        return {"loss": out.loss, "recon": out.recon, "kl": out.kl}

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> ModelOutput:
        """``model(x)``: the one-sample evaluation, :meth:`one_sample`."""
        return self.one_sample(x, generator)

    @abstractmethod
    def iwae_nll(self, x: torch.Tensor, samples: int = 100, generator=None) -> torch.Tensor:
        """Importance-weighted estimate of −log p(x) ``[B]``."""

    @abstractmethod
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities with ``x``'s flattened shape ``[B, D]``."""

    @abstractmethod
    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``num`` images from the prior: pixel probabilities ``[num, D]``."""

    def label_metrics(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-row metrics against labels (e.g. ``{"accuracy": [B]}``); default none."""
        return {}

    def grids(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, tuple[torch.Tensor, int]]:
        """Image grids beyond reconstructions and samples: ``name -> (images [N, C, H, W] in
        [0, 1], nrow)``, ``x`` a few fixed images. Default none."""
        return {}

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images (from ``input_dim``, see :func:`image_shape_of`)."""
        return image_shape_of(int(self.input_dim))


BaseVAE = VAE
"""Alias of :class:`VAE`."""

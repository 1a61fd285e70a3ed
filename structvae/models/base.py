"""The one contract every VAE of structvae follows: :class:`VAE` (alias :data:`BaseVAE`).

The training loop, the evaluation and the CLI read only what this class declares: class
attributes (``name``, ``options``, ``uses_labels``, ``kl_kind``, ``loss_is_bound``), properties
(``latent_shape``, ``structure``, ``iwae_available``) and methods (``objective``,
``one_sample_loss``, ``forward``, ``iwae_nll``, ``reconstruct``, ``sample``, ``label_metrics``,
``grids``, ``use_solver``). Nothing is probed with ``hasattr`` or signatures.

``objective``, ``one_sample`` (hence ``one_sample_loss`` and ``forward``) and ``iwae_nll`` are
written once here, over hooks a model implements:

- :meth:`VAE.encode_all` ``x -> Encoded``: the potentials of the discrete latents plus the
  model's continuous code (e.g. ``(μ, log σ²)``), default ``Encoded(self.encode(x))``;
- :meth:`VAE.training_loss` ``(x, enc, generator) -> loss(z, rows=None)``: the estimators'
  loss (default: pixel BCE of :meth:`decode`), at a fresh draw of any continuous code;
- :meth:`VAE.kl` (the discrete KL) and :meth:`VAE.continuous_kl` (default 0);
- :meth:`VAE.sample_latents` (one sample for evaluation, default Gumbel-max) and
  :meth:`VAE.recon_and_kl` (the evaluation at it);
- :meth:`VAE.proposal` and :meth:`VAE.log_likelihood`: importance sampling.

Labelled rows follow :mod:`structvae.models.supervision`.
"""

from __future__ import annotations

import math
from abc import ABCMeta, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..options import Option
from ..potentials import Potentials
from ..solvers import Solver
from ..solvers.select import Structure, check_solver
from . import terms
from .reference import OBJECTIVES, check_objective, training_kl
from .supervision import RowLoss, Supervision, supervise

__all__ = [
    "VAE",
    "BaseVAE",
    "ModelOutput",
    "Encoded",
    "Proposal",
    "image_shape_of",
    "step_statistics",
]


class ModelOutput(NamedTuple):
    """``model(x)``: the one-sample evaluation. ``loss``, ``recon``, ``kl`` float ``[B]``
    (``loss = recon + kl``), ``z`` long ``[B, n]`` the sampled discrete latents."""

    loss: torch.Tensor
    recon: torch.Tensor
    kl: torch.Tensor
    z: torch.Tensor


@dataclass
class Encoded:
    """What the encoder gives for a batch: the ``potentials`` of the discrete latents, the
    model's continuous ``code`` (``None`` when it has none; e.g. ``(μ, log σ²)``), and a
    ``cache`` for values hooks share within one batch (e.g. an enumerated Gibbs table)."""

    potentials: Potentials
    code: Any = None
    cache: dict = field(default_factory=dict)


class Proposal(NamedTuple):
    """Importance-sampling draws for ``S`` samples per row: discrete ``z`` long ``[B, S, n]``,
    ``log_q`` and ``log_prior`` ``[B, S]`` (of everything drawn, continuous parts included) and
    the continuous draws ``code`` (model-specific, ``None`` without a continuous code)."""

    z: torch.Tensor
    log_q: torch.Tensor
    log_prior: torch.Tensor
    code: Any = None


def step_statistics(res, kl: torch.Tensor, kl_in_loss: torch.Tensor | None = None) -> dict:
    """Batch statistics of a step (detached 0-dim tensors): ``recon`` (mean loss at the sample,
    less ``kl_in_loss`` — a KL the estimators' loss already contains), ``kl`` (mean, plus
    ``kl_in_loss``), ``loss = recon + kl``, and the estimator's numeric ``info`` as floats."""
    loss = res.loss.detach()
    kl = kl.detach()
    if kl_in_loss is not None:
        loss, kl = loss - kl_in_loss.detach(), kl + kl_in_loss.detach()
    recon, klm = loss.float().mean(), kl.float().mean()
    stats = {"loss": recon + klm, "recon": recon, "kl": klm}
    for key, value in res.info.items():
        if isinstance(value, (float, int)) and not isinstance(value, bool):
            stats[key] = float(value)
    return stats


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
    """Abstract base of the VAEs here (module docstring: the hooks).

    Subclasses set ``name`` and ``options`` and implement :meth:`from_spec`,
    :attr:`latent_shape`, :meth:`encode`, :meth:`decode`, :meth:`kl`, :meth:`reconstruct`,
    :meth:`sample` and, where the defaults do not fit, the other hooks.

    Class attributes:
        name: the registry name (``--model``).
        options: the constructor options a user may set (``from_spec`` keywords).
        uses_labels: :meth:`objective` takes ``y=`` (``-1`` where a row is unlabelled).
        kl_kind: what the KL term is (``"exact"``, ``"exact-gibbs"``, ``"factorised-approx"``).
        loss_is_bound: whether :meth:`one_sample_loss` estimates an upper bound on −log p(x).
        label_weight: the weight of the labelled rows' cross-entropy for estimators without
            ``supports_labels`` (:mod:`~structvae.models.supervision`, rule 3).
        train_objective: ``"elbo"`` or ``"paper"``: whether :meth:`kl_term` trains the KL for
            the estimator (:func:`~structvae.models.reference.training_kl`; set by
            :func:`~structvae.models.reference.set_objective`).
    """

    name: ClassVar[str] = "vae"
    options: ClassVar[tuple[Option, ...]] = ()
    uses_labels: ClassVar[bool] = False
    kl_kind: ClassVar[str | None] = "exact"
    loss_is_bound: ClassVar[bool] = True
    objective_kinds: ClassVar[tuple[str, ...]] = OBJECTIVES
    solver: Solver | None = None
    _checked_solver: Solver | None = None
    label_weight: float = 0.0
    train_objective: str = "elbo"
    iwae_chunk_rows: ClassVar[int] = 20000

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

    def use_model_solver(self, estimator) -> None:
        """Give an estimator that ``uses_solver`` and has none this model's solver (when it has
        one), and check the estimator's solver against :attr:`structure` once."""
        if not estimator.uses_solver:
            return
        if estimator.solver is None and self.solver is not None:
            estimator.solver = self.solver
        if estimator.solver is not None and self._checked_solver is not estimator.solver:
            self.check_solver(estimator.solver)
            self._checked_solver = estimator.solver

    def check_solver(self, solver: str | Solver) -> None:
        """``ValueError`` when ``solver`` cannot maximise this model's potentials exactly."""
        check_solver(self.structure, solver)

    @classmethod
    @abstractmethod
    def from_spec(cls, latent=None, **options) -> VAE:
        """Build from a latent spec (``--latent``) and the declared :attr:`options`."""

    # ------------------------------------------------------------ hooks
    @abstractmethod
    def encode(self, x: torch.Tensor) -> Potentials:
        """``x [B, ...]`` -> the potentials of the discrete latents."""

    def encode_all(self, x: torch.Tensor) -> Encoded:
        """``x`` -> :class:`Encoded` (potentials and continuous code); default no code."""
        return Encoded(self.encode(x))

    @abstractmethod
    def kl(self, potentials: Potentials) -> torch.Tensor:
        """``[B]``: the discrete latents' KL to their prior (differentiable)."""

    def continuous_kl(self, enc: Encoded) -> torch.Tensor | None:
        """``[B]``: the continuous code's KL added to the objective, or ``None`` (default)."""
        return None

    def training_loss(
        self, x: torch.Tensor, enc: Encoded | None, generator: torch.Generator | None = None
    ) -> RowLoss:
        """The estimators' loss ``loss(z [b, C, n, K], rows=None) -> [b, C]``; default the
        pixel BCE of :meth:`decode` (``rows`` selects batch rows of ``x``)."""
        target = self.flat_input(x)

        def fn(z: torch.Tensor, rows=None) -> torch.Tensor:
            t = target if rows is None else target[rows]
            return terms.bernoulli_nll(self.decode(z), t[:, None])

        return fn

    def kl_in_loss(self, enc: Encoded, z: torch.Tensor) -> torch.Tensor | None:
        """``[B]``: the part of :meth:`training_loss` at ``z [B, n]`` that is a KL (reported
        under ``kl``, not ``recon``), or ``None`` (default)."""
        return None

    def sample_latents(self, enc: Encoded, generator: torch.Generator | None = None):
        """One sample of the discrete latents for evaluation: long ``[B, n]`` (Gumbel-max)."""
        return terms.gumbel_max(enc.potentials.unary, 1, generator)[:, 0]

    def recon_and_kl(
        self, x: torch.Tensor, enc: Encoded, z: torch.Tensor, generator=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(−log p(x|z), KL)`` each ``[B]`` at one sample ``z [B, n]``; default the training
        loss at ``z`` and :meth:`kl` plus :meth:`continuous_kl`."""
        recon = self.training_loss(x, enc, generator)(self.one_hot(z)[:, None])[:, 0]
        return recon, self._kl_total(enc)

    def proposal(self, enc: Encoded, samples: int, generator=None) -> Proposal:
        """``samples`` draws per row of the importance-sampling proposal; default
        ``Π_i softmax(θ_i)`` (Gumbel-max) under the uniform prior."""
        u = enc.potentials.unary
        n, K = self.latent_shape
        z = terms.gumbel_max(u, samples, generator)
        log_q = terms.categorical_log_prob(u.to(self.float_dtype), z)
        return Proposal(z, log_q, torch.full_like(log_q, -n * math.log(K)))

    def log_likelihood(
        self, x: torch.Tensor, enc: Encoded, prop: Proposal, generator=None
    ) -> torch.Tensor:
        """``log p(x | z_s)`` ``[B, S]`` for the proposal's draws; default −training loss."""
        return -self.training_loss(x, enc, generator)(self.one_hot(prop.z))

    # ------------------------------------------------------------ training
    def objective(
        self,
        x: torch.Tensor,
        estimator,
        y: torch.Tensor | None = None,
        kind: str | None = None,
        **kw,
    ) -> tuple[torch.Tensor, dict]:
        """The scalar to back-propagate (estimator surrogate + mean KL, + the labelled rows'
        fallback cross-entropy) and the batch statistics (:func:`step_statistics`, plus ``ce``
        with labels). ``y``: labels, ``-1`` where unlabelled (``uses_labels`` models only);
        ``kind``: ``"elbo"`` or ``"paper"`` (:mod:`structvae.models.reference`), default the
        model's :attr:`train_objective`; ``kw`` go to the estimator (e.g. ``generator``)."""
        kind = check_objective(self.train_objective if kind is None else kind)
        if y is not None and not self.uses_labels:
            raise ValueError(f"the {self.name} model does not take labels (y); pass y=None")
        self.use_model_solver(estimator)
        enc = self.encode_all(x)
        sup = supervise(y, estimator, self.latent_shape, x.shape[0], self.label_weight, x.device)
        loss_fn = sup.loss(self.training_loss(x, enc), self.latent_shape[1])
        started = estimator.begin(enc.potentials, **sup.estimator_kwargs(), **kw)
        kl = self._kl_total(enc, sup)  # computed while a solver may work on z*
        res = estimator.finish(started, loss_fn)
        total = res.surrogate + self.kl_term(estimator, kl, kind)
        penalty, extra = sup.penalty(enc.potentials)
        if penalty is not None:
            total = total + penalty
        with torch.no_grad():
            stats = step_statistics(res, kl, self.kl_in_loss(enc, sup.effective(res.z)))
        stats.update(extra)
        return total, stats

    def kl_term(self, estimator, kl: torch.Tensor, kind: str | None = None) -> torch.Tensor:
        """The KL term added to the surrogate, from the per-row KL ``[B]``: ``kl.mean()`` (the
        negative ELBO), detached where objective ``kind`` (default :attr:`train_objective`)
        does not train it for ``estimator`` (``paper``: direct; :mod:`structvae.models.reference`)."""
        return training_kl(estimator, kl, kind or self.train_objective)

    def _kl_total(self, enc: Encoded, sup: Supervision | None = None) -> torch.Tensor:
        kl = self.kl(enc.potentials)
        if sup is not None:
            kl = sup.discrete_kl(kl, self.latent_shape)
        cont = self.continuous_kl(enc)
        return kl if cont is None else kl + cont

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def one_sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> ModelOutput:
        """The loss at one sample of the latents (the paper's test loss): :class:`ModelOutput`
        with ``loss = recon + kl`` ``[B]`` and the sample ``z`` ``[B, n]``."""
        enc = self.encode_all(x)
        z = self.sample_latents(enc, generator)
        recon, kl = self.recon_and_kl(x, enc, z, generator)
        return ModelOutput(recon + kl, recon, kl, z)

    def one_sample_loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        """``{"loss", "recon", "kl"}`` each ``[B]``: :meth:`one_sample` as a dict."""
        out = self.one_sample(x, generator)
        return {"loss": out.loss, "recon": out.recon, "kl": out.kl}

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> ModelOutput:
        """``model(x)``: the one-sample evaluation, :meth:`one_sample`."""
        return self.one_sample(x, generator)

    def iwae_unavailable(self) -> str:
        """Why :meth:`iwae_nll` cannot be computed (when :attr:`iwae_available` is False)."""
        return f"iwae_nll is not available for the {self.name} model"

    @torch.no_grad()
    def iwae_nll(
        self,
        x: torch.Tensor,
        samples: int = 100,
        generator: torch.Generator | None = None,
        chunk_rows: int | None = None,
    ) -> torch.Tensor:
        """Importance-weighted estimate of −log p(x) ``[B]`` with :meth:`proposal`:
        ``−log (1/S) Σ_s p(x|z_s) p(z_s) / q(z_s|x)``, an upper bound on −log p(x) in
        expectation, tightening as ``samples`` grows; about ``chunk_rows`` decoder rows at once."""
        samples = int(samples)
        if samples < 1:
            raise ValueError(f"iwae_nll needs samples >= 1, got {samples}")
        if not self.iwae_available:
            raise ValueError(self.iwae_unavailable())
        enc = self.encode_all(x)
        rows = self.iwae_chunk_rows if chunk_rows is None else int(chunk_rows)
        step = max(1, rows // max(x.shape[0], 1))
        parts = []
        for start in range(0, samples, step):
            prop = self.proposal(enc, min(step, samples - start), generator)
            log_px = self.log_likelihood(x, enc, prop, generator).to(self.float_dtype)
            parts.append(log_px + prop.log_prior.to(log_px) - prop.log_q.to(log_px))
        return terms.iwae_from_log_weights(torch.cat(parts, dim=1))

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

    # ------------------------------------------------------------ helpers
    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images (from ``input_dim``, see :func:`image_shape_of`)."""
        return image_shape_of(int(self.input_dim))

    @property
    def param_dtype(self) -> torch.dtype:
        """The dtype of the model's parameters."""
        return next(self.parameters()).dtype

    @property
    def float_dtype(self) -> torch.dtype:
        """The dtype evaluation sums are computed in: the parameters', at least float32."""
        return torch.promote_types(self.param_dtype, torch.float32)

    def flat_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as ``[B, D]`` in the parameters' dtype."""
        return x.flatten(1).to(self.param_dtype)

    def one_hot(self, z: torch.Tensor) -> torch.Tensor:
        """One-hot float ``[..., n, K]`` of long ``z [..., n]`` in the parameters' dtype."""
        return F.one_hot(z, self.latent_shape[1]).to(self.param_dtype)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` float ``[..., n, K]`` -> Bernoulli logits ``[..., D]`` (used by the default
        :meth:`training_loss`; models with other decoders override that hook)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement decode")


BaseVAE = VAE
"""Alias of :class:`VAE`."""

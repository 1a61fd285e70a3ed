"""The training objective every VAE in :mod:`structvae.models` shares."""

from __future__ import annotations

import torch

from ..estimators.base import Estimator
from .base import step_statistics
from .reference import training_kl

__all__ = ["elbo_objective", "estimator_objective", "EncoderParams"]


def elbo_objective(model, x: torch.Tensor, estimator: Estimator, **kw) -> tuple[torch.Tensor, dict]:
    """Estimator surrogate + mean KL (the negative ELBO's gradient estimate) and batch statistics.

    ``model`` provides ``encode``, ``loss_fn`` and ``kl``. Statistics (detached 0-dim tensors):
    ``recon`` (mean loss at the estimator's sample), ``kl`` (mean), ``loss = recon + kl``, plus
    the estimator's numeric ``info`` entries (``eps``, ``temperature``) as floats.
    """
    potentials = model.encode(x)
    started = estimator.begin(potentials, **kw)  # direct: z* may be solving on a thread pool
    kl = model.kl(potentials)  # ... while the KL is computed here
    res = estimator.finish(started, model.loss_fn(x))
    objective = getattr(model, "train_objective", "elbo")  # any object with encode/loss_fn/kl
    return estimator_objective(res, kl, training_kl(estimator, kl, objective))


def estimator_objective(
    res, kl: torch.Tensor, kl_term: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict]:
    """``res.surrogate + kl_term`` and the statistics of :func:`elbo_objective`, from an
    :class:`~structvae.estimators.EstimatorResult` and the per-row KL ``[B]``; ``kl_term``
    (default ``kl.mean()``) is what :func:`~structvae.models.reference.training_kl` trains."""
    total = res.surrogate + (kl.mean() if kl_term is None else kl_term)
    return total, step_statistics(res, kl)


class EncoderParams:
    """Mixin: the dtype and device of a model's parameters, read off ``encoder[0]``."""

    @property
    def _dtype(self) -> torch.dtype:
        return self.encoder[0].weight.dtype

    @property
    def _device(self) -> torch.device:
        return self.encoder[0].weight.device

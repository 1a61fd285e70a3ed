"""The one rule for labelled rows, used by every model that takes labels.

For a batch with labels ``y`` (``-1`` where a row is unlabelled):

1. **Labelled rows are decoded at their label** (Kingma et al.'s M2 labelled bound): the loss
   the estimator sees for such a row is ``L(y)`` whatever the candidate assignment, and their
   discrete KL is ``−log p(y) = n log K`` (the uniform prior), a constant.
2. **Estimators that declare** ``supports_labels`` (direct optimization) receive ``labels=y``
   and use ``z_ε = y`` on those rows: direct loss minimisation, whose encoder gradient estimates
   ``∇ CE(θ, y) / label_eps``.
3. **Other estimators** (Gumbel-softmax, REINFORCE, …) get the documented fallback: the
   objective adds ``weight · Σ_labelled CE(θ, y) / B``, the cross-entropy of the encoder's
   factorised distribution at the label (``weight`` is the model's ``alpha``; M2 uses the same
   term).
4. **Unlabelled rows go through the estimator** as in unsupervised training.

A row counts as labelled when every one of its ``n`` labels is given (partially labelled rows of
a multi-label model are treated as unlabelled).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..potentials import Potentials

__all__ = ["Supervision", "supervise", "RowLoss", "check_labels"]

RowLoss = Callable[..., torch.Tensor]
"""``loss(z, rows=None)``: ``z`` float ``[b, C, n, K]`` -> ``[b, C]`` for the batch rows ``rows``
(a bool mask or index of the batch; ``None``: all rows, ``b = B``)."""


def check_labels(y, batch: int, latent_shape: tuple[int, int], device=None) -> torch.Tensor:
    """``y`` as long ``[B, n]`` on ``device``: from ``[B]`` (``n = 1``) or ``[B, n]``, each entry
    ``-1`` (unlabelled) or in ``0..K-1``; ``ValueError`` otherwise."""
    n, K = latent_shape
    y = torch.as_tensor(y, device=device).long()
    if y.dim() == 1 and n == 1:
        y = y[:, None]
    if tuple(y.shape) != (batch, n):
        want = f"[B] = [{batch}]" if n == 1 else f"[B, n] = [{batch}, {n}]"
        raise ValueError(f"labels y must have shape {want} (-1 = unlabelled), got {list(y.shape)}")
    if y.numel() and (int(y.min()) < -1 or int(y.max()) >= K):
        raise ValueError(f"labels must be -1 (unlabelled) or in 0..{K - 1}")
    return y


@dataclass
class Supervision:
    """The labelled rows of one batch and how the estimator learns from them.

    Attributes:
        labels: long ``[B, n]``, ``-1`` where unlabelled (``None``: no labels at all).
        labelled: bool ``[B]``, rows whose labels are all given.
        to_estimator: the estimator ``supports_labels`` (rule 2), else rule 3 applies.
        weight: the fallback cross-entropy's weight (rule 3).
    """

    labels: torch.Tensor | None
    labelled: torch.Tensor | None
    to_estimator: bool
    weight: float

    @property
    def any(self) -> bool:
        """Whether the batch has a labelled row."""
        return self.labelled is not None and bool(self.labelled.any())

    def estimator_kwargs(self) -> dict:
        """``{"labels": y}`` for an estimator that supports labels (rule 2), else ``{}``."""
        return {"labels": self.labels} if self.any and self.to_estimator else {}

    def loss(self, loss: RowLoss, num_categories: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """The estimators' ``loss_fn`` with labelled rows decoded at their label (rule 1): one
        loss call at the label per labelled row, shared by all its candidates."""
        if not self.any:
            return lambda z: loss(z)
        has = self.labelled
        at_label = F.one_hot(self.labels.clamp(min=0), num_categories)[:, None]  # [B, 1, n, K]

        def fn(z: torch.Tensor) -> torch.Tensor:
            C = z.shape[1]
            out = z.new_empty(z.shape[:2])
            lab = loss(at_label[has].to(z.dtype), rows=has)  # [B_l, 1]
            out = out.index_put((has,), lab.to(out.dtype).expand(-1, C))
            if not bool(has.all()):
                out = out.index_put((~has,), loss(z[~has], rows=~has).to(out.dtype))
            return out

        return fn

    def discrete_kl(self, kl: torch.Tensor, latent_shape: tuple[int, int]) -> torch.Tensor:
        """``kl [B]`` with labelled rows' KL replaced by ``−log p(y) = n log K`` (rule 1)."""
        if not self.any:
            return kl
        n, K = latent_shape
        return torch.where(self.labelled, torch.full_like(kl, n * math.log(K)), kl)

    def effective(self, z: torch.Tensor) -> torch.Tensor:
        """The assignment each row was decoded at: the label on labelled rows, ``z`` elsewhere."""
        if not self.any:
            return z
        return torch.where(self.labelled[:, None], self.labels, z)

    def cross_entropy(self, potentials: Potentials) -> torch.Tensor:
        """``Σ_labelled CE(softmax θ, y)`` summed over the ``n`` variables: a 0-dim tensor."""
        theta = potentials.unary[self.labelled]  # [B_l, n, K]
        y = self.labels[self.labelled]
        return F.cross_entropy(theta.flatten(0, 1), y.flatten(), reduction="sum")

    def penalty(self, potentials: Potentials) -> tuple[torch.Tensor | None, dict]:
        """The fallback term to add to the objective (rule 3; ``None`` when rule 2 applies or no
        row is labelled) and the statistic ``ce`` (mean cross-entropy per labelled row)."""
        if not self.any:
            return None, {}
        ce_sum = self.cross_entropy(potentials)
        B = self.labelled.shape[0]
        stats = {"ce": ce_sum.detach().float() / self.labelled.sum()}
        if self.to_estimator:
            return None, stats
        return self.weight * ce_sum / B, stats


def supervise(
    y, estimator, latent_shape: tuple[int, int], batch: int, weight: float, device=None
) -> Supervision:
    """The :class:`Supervision` of a batch of ``batch`` rows with labels ``y`` (``None``: none)
    for ``estimator`` (its ``supports_labels``), with fallback weight ``weight``."""
    to_est = bool(estimator.supports_labels)
    if y is None:
        return Supervision(None, None, to_est, weight)
    labels = check_labels(y, batch, latent_shape, device)
    return Supervision(labels, (labels >= 0).all(1), to_est, weight)

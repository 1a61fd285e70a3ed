"""Which training objective a model follows: ``elbo`` (ours, the default) or ``paper``.

``elbo`` trains every estimator on the same objective, the negative ELBO: the estimator's
surrogate for E_q[−log p(x|z)] plus the analytic KL(q‖prior), KL gradient included.

``paper`` trains what the paper's public code (Lorberbom et al. 2019, ``discrete_vae/``) trains:

=====================  =========================  ==========================================
estimator              KL gradient                default schedule when none is given
=====================  =========================  ==========================================
``direct``             not trained (detached)     ε = max(1·exp(−1e-5·t), 0.1), every 500 it.
``gumbel-softmax``     trained                    τ = max(1·exp(−1e-5·t), 0.1), every 1000 it.
``st-gumbel-softmax``  trained                    τ as ``gumbel-softmax``
``exact``              trained                    —
=====================  =========================  ==========================================

The KL is still computed and reported (``stats["kl"]``, the test loss) under ``paper``; only
its gradient is dropped for ``direct``, whose encoder then follows the reconstruction term
alone. Estimators the reference code does not have keep the KL trained (as ``elbo``).
See docs/objectives.md for why ``elbo`` is the default.
"""

from __future__ import annotations

import torch

__all__ = [
    "OBJECTIVES",
    "PAPER_EPS0",
    "PAPER_UNTRAINED_KL",
    "check_objective",
    "trains_kl",
    "training_kl",
    "default_eps0",
    "set_objective",
]

OBJECTIVES = ("elbo", "paper")

PAPER_EPS0 = 1.0
"""ε₀ of the reference code's ε schedule (direct optimization, ``--objective paper``)."""

PAPER_UNTRAINED_KL = frozenset({"direct"})
"""Registered estimators whose KL the reference code computes but does not train through."""


def check_objective(name: str) -> str:
    """``name`` if it is one of :data:`OBJECTIVES`, else a one-line ``ValueError``."""
    if name not in OBJECTIVES:
        raise ValueError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {name!r}")
    return name


def trains_kl(objective: str, estimator) -> bool:
    """Whether ``objective`` back-propagates the KL for ``estimator`` (an instance or a name)."""
    name = estimator if isinstance(estimator, str) else getattr(estimator, "name", None)
    return check_objective(objective) == "elbo" or name not in PAPER_UNTRAINED_KL


def training_kl(estimator, kl: torch.Tensor, objective: str = "elbo") -> torch.Tensor:
    """The KL term a model adds to the surrogate: ``kl.mean()`` (``kl`` ``[B]``), detached
    where ``objective`` does not train it for ``estimator``."""
    mean = kl.mean()
    return mean if trains_kl(objective, estimator) else mean.detach()


def default_eps0(objective: str, elbo_default: float) -> float:
    """ε₀ of direct's schedule when ``--eps`` is not given: 1 under ``paper``, else ours."""
    return PAPER_EPS0 if check_objective(objective) == "paper" else float(elbo_default)


def set_objective(model, objective: str):
    """Make ``model`` train ``objective`` (sets ``model.train_objective``); returns ``model``."""
    model.train_objective = check_objective(objective)
    return model

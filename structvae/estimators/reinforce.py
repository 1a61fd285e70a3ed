"""REINFORCE (the score-function estimator) with baselines, and NVIL (Mnih & Gregor 2014).

    ∇_θ E_q[L(z)] = E_q[(L(z) − b) ∇_θ log q(z)]      for any b that does not depend on z

implemented as the surrogate ``mean((L(z) − b)·log q(z)) + mean(L(z))`` with the first factor
detached: the first term carries the encoder's gradient, the second the decoder's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..nn import mlp
from ..options import Option, boolean, int_tuple, optional
from ..potentials import Potentials
from .base import EstimatorResult, LossFn, evaluate_losses, one_hot, register_estimator
from .common import (
    ModuleEstimator,
    check_fraction,
    check_hidden,
    check_samples,
    log_q,
    sample_q,
    surrogate_dtype,
)

__all__ = ["ReinforceEstimator", "NVILEstimator", "BASELINES"]

BASELINES = ("none", "moving-average", "leave-one-out", "nvil")


@register_estimator("reinforce")
class ReinforceEstimator(ModuleEstimator):
    """REINFORCE (score function) with a baseline: none, moving average, leave-one-out or NVIL.

    Unbiased for every baseline (each is independent of the sample it corrects); with NVIL's
    variance normalisation (``normalise=True``) the estimate is the unbiased one divided by a
    positive running scale ``max(1, std)`` fixed before the step (an unbiased estimate of a
    rescaled gradient, as in NVIL). Independent latents only, any ``K``.

    Args:
        baseline: ``"none"``; ``"moving-average"`` (b = running mean of the loss over past
            batches, ``decay``); ``"leave-one-out"`` (b for sample s = mean loss of the other
            ``samples − 1`` samples of the same data point; needs ``samples >= 2``);
            ``"nvil"`` (NVIL's learned input-dependent baseline b_ψ plus its signal centring and
            scaling). The estimator receives only potentials, so b_ψ's input is the *detached*
            unary logits ``θ`` ``[B, n·K]`` (a function of x through the encoder, never of z);
            b_ψ is an MLP ``n·K → hidden… → 1`` (tanh) fitted by the regression loss
            ``mean((L(z) − c − b_ψ(θ))²)``, which enters the same surrogate and reaches only ψ
            (θ and L are detached in it). Centring ``c`` and scale ``v`` are running mean and
            variance of ``L − b_ψ`` (decay ``signal_decay``), taken from past batches only.
        samples: samples per data point (default 2 for leave-one-out, else 1).
        decay: the moving average's decay (``b ← decay·b + (1 − decay)·mean L``).
        hidden: NVIL baseline network widths.
        signal_decay: NVIL's running-statistics decay (0.8 in the paper).
        normalise: divide NVIL's learning signal by ``max(1, sqrt(v))`` (default: on for NVIL).
        chunk_size: candidates per ``loss_fn`` call.

    Cost per step: ``samples`` loss evaluations per data point in one ``loss_fn`` call (with
    gradient, for the decoder); NVIL adds one small network forward and backward.
    """

    name = "reinforce"
    options = (
        Option("baseline", str, "moving-average", "the baseline", choices=BASELINES),
        Option(
            "samples",
            optional(int),
            None,
            "samples per data point (default 2 for leave-one-out, else 1)",
        ),
        Option("decay", float, 0.9, "the moving average's decay"),
        Option("hidden", int_tuple, (100,), "NVIL baseline network widths"),
        Option("signal_decay", float, 0.8, "NVIL's running-statistics decay"),
        Option("normalise", optional(boolean), None, "divide NVIL's signal by max(1, sqrt(v))"),
        Option(
            "chunk_size", int, 512, "candidates per loss_fn call (bounds memory)", identity=False
        ),
    )
    unbiased = True

    def __init__(
        self,
        baseline: str = "moving-average",
        samples: int | None = None,
        decay: float = 0.9,
        hidden: Sequence[int] = (100,),
        signal_decay: float = 0.8,
        normalise: bool | None = None,
        chunk_size: int = 512,
    ) -> None:
        super().__init__()
        if baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
        if samples is None:
            samples = 2 if baseline == "leave-one-out" else 1
        minimum = 2 if baseline == "leave-one-out" else 1
        self.samples = check_samples(samples, "samples", minimum)
        self.baseline = baseline
        self.decay = check_fraction(decay, "decay")
        self.signal_decay = check_fraction(signal_decay, "signal_decay")
        self.hidden = check_hidden(hidden)
        self.normalise = (baseline == "nvil") if normalise is None else bool(normalise)
        if self.normalise and baseline != "nvil":
            raise ValueError("normalise=True is NVIL's signal scaling; use it with baseline='nvil'")
        self.chunk_size = int(chunk_size)
        # running statistics (checkpointed): the moving average / NVIL's centre and variance
        self.register_buffer("running_mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("running_var", torch.ones((), dtype=torch.float64))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.net: nn.Module | None = None

    def build(self, num_latents: int, num_categories: int) -> None:
        if self.baseline == "nvil":
            self.net = mlp([num_latents * num_categories, *self.hidden, 1], nn.Tanh)

    # ------------------------------------------------------------------ baselines
    def _running_update(self, values: torch.Tensor, decay: float, with_var: bool) -> None:
        """Update the running mean (and variance) with the batch ``values`` (no gradient)."""
        v = values.detach().double()
        mean = v.mean()
        first = int(self.updates) == 0
        self.running_mean.copy_(mean if first else decay * self.running_mean + (1 - decay) * mean)
        if with_var:
            var = v.var(unbiased=False) if v.numel() > 1 else torch.zeros_like(mean)
            self.running_var.copy_(var if first else decay * self.running_var + (1 - decay) * var)
        self.updates += 1

    def _signal(self, potentials: Potentials, losses: torch.Tensor):
        """Learning signal ``[B, S]`` (detached), the baseline's regression loss, and info."""
        L = losses.detach()
        S = L.shape[1]
        zero = L.new_zeros(())
        if self.baseline == "none":
            return L, zero, {"baseline": 0.0}
        if self.baseline == "leave-one-out":
            b = (L.sum(1, keepdim=True) - L) / (S - 1)
            return L - b, zero, {"baseline": float(b.mean())}
        if self.baseline == "moving-average":
            b = self.running_mean.to(L.dtype) if int(self.updates) else zero
            with torch.no_grad():
                self._running_update(L, self.decay, with_var=False)
            return L - b, zero, {"baseline": float(b)}
        # NVIL: b_psi(theta) on the detached logits, centring c, scaling by max(1, std)
        theta = potentials.unary.detach()
        b = self.net(theta.flatten(1).to(self.param_dtype())).to(L.dtype)  # [B, 1]
        c = self.running_mean.to(L.dtype) if int(self.updates) else zero
        scale = self.running_var.sqrt().clamp(min=1.0).to(L.dtype) if self.normalise else 1.0
        residual = L - b.detach()
        signal = (residual - c) / scale
        regression = ((L - c - b) ** 2).mean()
        with torch.no_grad():
            self._running_update(residual, self.signal_decay, with_var=True)
        info = {
            "baseline": float(b.detach().mean() + c),
            "signal_scale": float(scale),
            "baseline_mse": float(regression.detach()),
        }
        return signal, regression, info

    # ------------------------------------------------------------------ estimate
    def estimate(
        self, potentials: Potentials, loss_fn: LossFn, generator: torch.Generator | None = None
    ) -> EstimatorResult:
        self.ensure_built(potentials)
        theta = potentials.unary
        B, n, K = theta.shape
        z = sample_q(theta, self.samples, generator)  # [B, S, n]
        losses = evaluate_losses(
            loss_fn, one_hot(z, K, surrogate_dtype(theta)), self.chunk_size
        )  # [B, S], with the decoder's graph
        signal, regression, info = self._signal(potentials, losses)
        score = (signal.detach() * log_q(theta, z)).mean()
        surrogate = score + losses.mean() + regression
        return EstimatorResult(
            z=z[:, 0], loss=losses.detach()[:, 0], surrogate=surrogate, info=info
        )


@register_estimator("nvil")
class NVILEstimator(ReinforceEstimator):
    """NVIL: REINFORCE with a learned input-dependent baseline and signal centring/scaling.

    ``reinforce`` with ``baseline="nvil"`` (see :class:`ReinforceEstimator` for the baseline
    network's input, its regression loss and the scaling). Unbiased up to the positive running
    scale; one ``loss_fn`` evaluation per sample. Options: ``samples``, ``hidden``,
    ``signal_decay``, ``normalise``, ``chunk_size``.
    """

    name = "nvil"
    options = (
        Option("samples", int, 1, "samples per data point (the gradient averages over them)"),
        Option("hidden", int_tuple, (100,), "NVIL baseline network widths"),
        Option("signal_decay", float, 0.8, "NVIL's running-statistics decay"),
        Option("normalise", boolean, True, "divide NVIL's signal by max(1, sqrt(v))"),
        Option(
            "chunk_size", int, 512, "candidates per loss_fn call (bounds memory)", identity=False
        ),
    )

    def __init__(
        self,
        samples: int = 1,
        hidden: Sequence[int] = (100,),
        signal_decay: float = 0.8,
        normalise: bool = True,
        chunk_size: int = 512,
    ) -> None:
        super().__init__(
            baseline="nvil",
            samples=samples,
            hidden=hidden,
            signal_decay=signal_decay,
            normalise=normalise,
            chunk_size=chunk_size,
        )


@register_estimator("reinforce-loo")
class LeaveOneOutReinforceEstimator(ReinforceEstimator):
    """REINFORCE with the leave-one-out baseline over ``samples >= 2`` samples per data point.

    ``reinforce`` with ``baseline="leave-one-out"``: unbiased; ``samples`` (default 4) loss
    evaluations per data point, in one ``loss_fn`` call.
    """

    name = "reinforce-loo"
    options = (
        Option("samples", int, 4, "samples per data point (the gradient averages over them)"),
        Option(
            "chunk_size", int, 512, "candidates per loss_fn call (bounds memory)", identity=False
        ),
    )

    def __init__(self, samples: int = 4, chunk_size: int = 512) -> None:
        super().__init__(baseline="leave-one-out", samples=samples, chunk_size=chunk_size)

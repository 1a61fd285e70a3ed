"""DAB: Differentiable Approximation Bridge (Ramapuram & Webb).

The hard function here is the Gumbel-max sample ``h(x) = one_hot(argmax x)`` of the perturbed
logits ``x = θ + γ``. A small network ``g_φ`` (the bridge) is fitted to it with the penalty
``γ_DAB·||h(x) − g_φ(x)||²``; the forward pass (training and test) uses ``h(x)``, the backward
pass the bridge's Jacobian: ``∂L/∂x := (∂g_φ/∂x)ᵀ ∂L/∂z``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call

from ..gumbel import sample_gumbel
from ..nn import mlp
from ..options import Option, boolean, int_tuple
from ..potentials import Potentials
from .base import EstimatorResult, LossFn, evaluate_losses, one_hot, register_estimator
from .common import ModuleEstimator, check_hidden, check_positive, surrogate_dtype

__all__ = ["DABEstimator"]


@register_estimator("dab")
class DABEstimator(ModuleEstimator):
    """DAB: hard Gumbel-max sample forward, a learned bridge network's gradient backward.

    The bridge ``g_φ`` maps each variable's perturbed logits ``[K]`` to ``[K]`` (an MLP shared
    by the ``n`` variables, ELU, built by :meth:`setup` for the ``K`` it sees). Biased (the
    bridge's Jacobian is not the gradient of the expected loss). Independent latents, any K.

    Args:
        gamma: weight γ of the L2 bridge penalty ``mean_b Σ_{i,k} (h − g_φ)²`` (the paper uses
            2–70; 10 for Fashion-MNIST).
        hidden: widths of the bridge's hidden layers.
        condition_input: let the penalty's gradient reach the logits too (the paper's
            objective, which also "conditions" the preceding layer); default off, so the
            encoder gets only the bridged loss gradient and the penalty trains φ alone.

    Cost per step: one ``loss_fn`` call with gradient at the hard sample; two bridge forwards
    (one for the backward route, one for the penalty) on ``B·n`` inputs of size K.
    """

    name = "dab"
    options = (
        Option("gamma", float, 10.0, "weight of the L2 bridge penalty"),
        Option("hidden", int_tuple, (64,), "widths of the bridge's hidden layers"),
        Option("condition_input", boolean, False, "let the penalty's gradient reach the logits"),
    )

    def __init__(
        self,
        gamma: float = 10.0,
        hidden: Sequence[int] = (64,),
        condition_input: bool = False,
    ) -> None:
        super().__init__()
        self.gamma = check_positive(gamma, "gamma")
        self.hidden = check_hidden(hidden)
        self.condition_input = bool(condition_input)
        self.bridge: nn.Module | None = None

    def build(self, num_latents: int, num_categories: int) -> None:
        self.bridge = mlp([num_categories, *self.hidden, num_categories], nn.ELU)

    def estimate(
        self, potentials: Potentials, loss_fn: LossFn, generator: torch.Generator | None = None
    ) -> EstimatorResult:
        self.ensure_built(potentials)
        theta = potentials.unary
        K = theta.shape[-1]
        dtype = surrogate_dtype(theta)
        pdtype = self.param_dtype()
        g = sample_gumbel(theta.shape, device=theta.device, dtype=theta.dtype, generator=generator)
        x = (theta + g).to(dtype)  # [B, n, K]
        hard = one_hot(x.detach().argmax(-1), K, dtype)
        # backward route: the bridge with frozen parameters, so the loss trains only the model
        frozen = {k: v.detach() for k, v in self.bridge.named_parameters()}
        soft = functional_call(self.bridge, frozen, (x.to(pdtype),)).to(dtype)
        z = hard + soft - soft.detach()
        loss = evaluate_losses(loss_fn, z[:, None])[:, 0]
        # the bridge penalty: trains φ (and the logits only with condition_input)
        fit_in = x if self.condition_input else x.detach()
        fit = self.bridge(fit_in.to(pdtype)).to(dtype)
        l2 = (fit - hard).pow(2).sum((-1, -2)).mean()
        surrogate = loss.mean() + self.gamma * l2
        return EstimatorResult(
            z=hard.argmax(-1),
            loss=loss.detach(),
            surrogate=surrogate,
            info={"bridge_l2": float(l2.detach())},
        )

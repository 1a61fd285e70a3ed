"""The exact gradient by enumerating every assignment (the paper's "unbiased" baseline)."""

from __future__ import annotations

import torch

from ..inference import Gibbs
from ..options import Option
from ..potentials import Potentials
from .base import Estimator, EstimatorResult, LossFn, evaluate_losses, one_hot, register_estimator

__all__ = ["ExactEstimator"]


@register_estimator("exact")
class ExactEstimator(Estimator):
    """``E_q[L(z)] = Σ_z q(z) L(z)`` over all ``K^n`` assignments, differentiated exactly.

    ``q`` is the Gibbs distribution ``q(z) ∝ exp(h(z))``. Without edges it is the product of
    ``softmax(θ_i)`` — exactly the law of the Gumbel-max sample, so this is the true gradient
    of ``E_γ[L(z*)]``. With pairwise terms, the Gibbs law differs from the perturb-max law
    (whose expectation has no closed form); the estimator then differentiates the Gibbs
    expectation and says so in ``info["distribution"]``.

    Cost: ``K^n`` loss evaluations with gradient per data point; refused above
    ``max_assignments`` (default 1024). ``z`` is drawn from ``q``; ``.loss`` is ``L(z)``.
    """

    name = "exact"
    supports_edges = True
    unbiased = True
    options = (
        Option("max_assignments", int, 1024, "refuse spaces of more than this many assignments"),
        Option("chunk_size", int, 512, "candidates per loss_fn call", identity=False),
    )

    def __init__(self, max_assignments: int = 1024, chunk_size: int = 512) -> None:
        super().__init__()
        self.max_assignments = int(max_assignments)
        self.chunk_size = int(chunk_size)

    def check(self, potentials: Potentials) -> None:
        super().check(potentials)
        total = potentials.num_states**potentials.num_vars
        if total > self.max_assignments:
            raise ValueError(
                f"estimator 'exact' enumerates K^n = {potentials.num_states}^{potentials.num_vars}"
                f" = {total} assignments, above max_assignments = {self.max_assignments}; "
                "raise the limit or use 'direct'"
            )

    def estimate(
        self, potentials: Potentials, loss_fn: LossFn, generator: torch.Generator | None = None
    ) -> EstimatorResult:
        B, n, K = potentials.unary.shape
        gibbs = Gibbs(potentials, backend="enumerate", max_assignments=self.max_assignments)
        A, logq = gibbs.enumerate_log_probs()  # [M, n], [B, M]
        dtype = logq.dtype
        losses = evaluate_losses(
            loss_fn, one_hot(A, K, dtype)[None].expand(B, -1, -1, -1), self.chunk_size
        )  # [B, M]
        expected = (logq.exp() * losses).sum(1)
        z = gibbs.sample(generator=generator)  # [B, n], exact draws from q
        idx = (z * K ** torch.arange(n - 1, -1, -1, device=z.device)).sum(-1)
        return EstimatorResult(
            z=z,
            loss=losses.detach().gather(1, idx[:, None])[:, 0],
            surrogate=expected.mean(),
            info={
                "expected_loss": expected.detach(),
                "distribution": "gibbs" if potentials.has_edges else "factorised",
            },
        )

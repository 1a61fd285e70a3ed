"""The exact gradient by enumerating every assignment (the paper's "unbiased" baseline)."""

from __future__ import annotations

import torch

from ..gumbel import sample_gumbel
from ..options import Option
from ..potentials import Potentials
from ..solvers.exact import all_assignments, enumerate_scores
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
        A = all_assignments(n, K, device=potentials.device)  # [M, n]
        logq = torch.log_softmax(enumerate_scores(potentials, self.max_assignments), dim=1)
        dtype = logq.dtype
        losses = evaluate_losses(
            loss_fn, one_hot(A, K, dtype)[None].expand(B, -1, -1, -1), self.chunk_size
        )  # [B, M]
        expected = (logq.exp() * losses).sum(1)
        g = sample_gumbel(logq.shape, device=logq.device, dtype=dtype, generator=generator)
        idx = (logq.detach() + g).argmax(1)
        return EstimatorResult(
            z=A[idx],
            loss=losses.detach().gather(1, idx[:, None])[:, 0],
            surrogate=expected.mean(),
            info={
                "expected_loss": expected.detach(),
                "distribution": "gibbs" if potentials.has_edges else "factorised",
            },
        )

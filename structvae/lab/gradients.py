"""Exact and estimated encoder gradients of ``E_q[−log p(x|z)]`` and their quality metrics.

The quantity studied is the batch-mean expected reconstruction loss

    F(θ) = (1/B) Σ_b Σ_z q_b(z) L_b(z),   q_b = Π_i softmax(θ_b,i),   L_b(z) = −log p(x_b|z),

as a function of the encoder's unary potentials θ ``[B, n, K]`` (and, through the encoder,
of its parameters). :func:`exact_gradient` differentiates it by enumerating all ``K^n``
assignments (the ``exact`` estimator's surrogate with the decoder held fixed);
:func:`sample_gradients` draws ``R`` independent estimates ``ĝ`` of the same gradient from
any registered estimator; :func:`gradient_metrics` compares them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from ..estimators import Estimator, get_estimator
from ..estimators.base import LossFn
from ..potentials import Potentials

__all__ = [
    "exact_gradient",
    "sample_gradients",
    "gradient_metrics",
    "time_estimate",
    "encoder_gradients",
    "fixed_loss",
]

#: Decoder rows (batch rows × repeats) per estimator call in :func:`sample_gradients`.
DEFAULT_MAX_ROWS = 500


def fixed_loss(loss_fn: LossFn) -> LossFn:
    """``loss_fn`` evaluated without autograd: the decoder is held fixed (its values only)."""

    def fn(z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return loss_fn(z)

    return fn


def _check_independent(potentials: Potentials) -> None:
    if potentials.has_edges:
        raise ValueError(
            "the gradient lab needs independent latent variables (no pairwise potentials): the "
            "expectation under a perturb-max model with edges has no closed form to compare to"
        )


def exact_gradient(
    theta: torch.Tensor, loss_fn: LossFn, max_assignments: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """``∇_θ F`` and ``E_q[L]`` per row, by enumerating all ``K^n`` assignments.

    Args:
        theta: unary potentials ``[B, n, K]`` (detached inside).
        loss_fn: ``z [B, C, n, K] -> [B, C]`` (e.g. ``model.loss_fn(x)``).
        max_assignments: refuse ``K^n`` above this (ValueError).

    Returns:
        ``(g, expected)``: ``g [B, n, K]`` the gradient of the batch mean ``F``, and
        ``expected [B]`` = ``Σ_z q_b(z) L_b(z)``.
    """
    theta = theta.detach().requires_grad_(True)
    pot = Potentials(theta)
    _check_independent(pot)
    exact = get_estimator("exact", max_assignments=int(max_assignments))
    res = exact(pot, fixed_loss(loss_fn))
    (g,) = torch.autograd.grad(res.surrogate, theta)
    return g.detach(), res.info["expected_loss"].detach()


def _estimate_chunk(
    est: Estimator, theta: torch.Tensor, make_loss: Callable[[int], LossFn], c: int
) -> torch.Tensor:
    """``c`` estimates from one call on ``c`` stacked copies of the batch: ``[c, B, n, K]``.

    The surrogate is a mean over the ``c·B`` rows, so row ``(r, b)``'s gradient is
    ``1/(c·B)`` of its own; ``c ×`` it is estimate ``r`` of the gradient of the ``B``-row mean.
    """
    B = theta.shape[0]
    rep = theta.detach().repeat(c, 1, 1).requires_grad_(True)
    res = est(Potentials(rep), make_loss(c))
    (g,) = torch.autograd.grad(res.surrogate, rep, allow_unused=True)
    if g is None:  # the surrogate does not depend on the potentials
        g = torch.zeros_like(rep)
    return (g.detach() * c).view(c, B, *theta.shape[1:])


def sample_gradients(
    est: Estimator,
    theta: torch.Tensor,
    loss_for: Callable[[int], LossFn],
    repeats: int,
    mode: str = "repeat",
    max_rows: int = DEFAULT_MAX_ROWS,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """``repeats`` independent estimates of ``∇_θ F``: ``[R, B, n, K]``.

    Args:
        est: any estimator (``est(potentials, loss_fn).surrogate``'s gradient estimates the
            gradient of the batch-mean loss).
        theta: potentials ``[B, n, K]``.
        loss_for: ``loss_for(c)`` is the loss function of the batch repeated ``c`` times along
            the rows (``c·B`` rows, copy-major), e.g. ``model.loss_fn(x.repeat(c, 1))``.
        repeats: R.
        mode: ``"repeat"``: R copies of the batch stacked along the rows, ``max_rows`` rows per
            call (batched; estimators that couple the rows of a batch — batch-mean baselines —
            then see the copies together); ``"loop"``: one call per estimate on the batch itself.
        progress: called with the number of estimates done after each call.
    """
    if mode not in ("repeat", "loop"):
        raise ValueError(f"mode must be 'repeat' or 'loop', got {mode!r}")
    R = int(repeats)
    if R < 2:
        raise ValueError(f"repeats must be >= 2 to estimate a variance, got {repeats}")
    B = theta.shape[0]
    step = 1 if mode == "loop" else max(1, min(R, int(max_rows) // max(B, 1)))
    parts = []
    for s in range(0, R, step):
        c = min(step, R - s)
        parts.append(_estimate_chunk(est, theta, loss_for, c))
        if progress is not None:
            progress(c)
    return torch.cat(parts)


def time_estimate(est: Estimator, theta: torch.Tensor, loss_fn: LossFn, repeats: int = 3) -> float:
    """Median seconds of one estimate on the batch: the estimator call and the backward pass to
    the potentials (decoder included, encoder excluded)."""
    times = []
    for _ in range(max(1, int(repeats))):
        if theta.device.type == "cuda":
            torch.cuda.synchronize(theta.device)
        t0 = time.perf_counter()
        _estimate_chunk(est, theta, lambda c: loss_fn, 1)
        if theta.device.type == "cuda":
            torch.cuda.synchronize(theta.device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def encoder_gradients(
    theta_graph: torch.Tensor, params: list[torch.Tensor], grads: torch.Tensor
) -> torch.Tensor:
    """Chain potential gradients into the encoder parameters: ``[..., B, n, K] -> [..., P]``.

    ``theta_graph`` ``[B, n, K]`` is the encoder's output with its graph; ``grads`` holds one or
    more (leading dims) gradients w.r.t. it. Returns the flattened parameter gradients
    (vector–Jacobian products, batched with ``is_grads_batched`` when there are leading dims).
    """
    lead = grads.shape[: grads.dim() - theta_graph.dim()]
    flat = grads.reshape(-1, *theta_graph.shape).to(theta_graph.dtype)
    out = torch.autograd.grad(
        theta_graph, params, grad_outputs=flat, retain_graph=True, is_grads_batched=True
    )
    return torch.cat([o.reshape(flat.shape[0], -1) for o in out], dim=1).reshape(*lead, -1)


def gradient_metrics(g: torch.Tensor, samples: torch.Tensor) -> dict[str, float]:
    """Quality of ``R`` estimates ``samples [R, ...]`` of the exact gradient ``g [...]``.

    Every estimate is one vector (all rows and coordinates flattened). Returns:

    - ``grad_norm`` ‖g‖;
    - ``bias_norm`` ‖ĝ̄ − g‖ with ĝ̄ the mean of the R estimates (includes the Monte-Carlo error
      of ĝ̄, whose expected square is variance / R), ``bias_rel`` = bias_norm / ‖g‖, and
      ``bias_debiased`` = sqrt(max(0, ‖ĝ̄ − g‖² − variance / R)), an estimate of ‖E ĝ − g‖ with
      that error removed;
    - ``variance``: the trace of the covariance of ĝ (unbiased, summed over coordinates),
      ``variance_rel`` = variance / ‖g‖², and ``rmse`` = sqrt(E‖ĝ − g‖²);
    - ``cosine``: the mean over estimates of cos(ĝ, g) (an estimate of 0 counts as 0);
    - ``expected_improvement``: −E⟨g, ĝ⟩ / sqrt(E‖ĝ‖²) (paper 003, eq. 18/66), the first-order
      change of the loss for the best single step size; **negative is descent, lower is
      better**, the optimum −‖g‖ is reached by ĝ = g; ``ei_rel`` = that divided by ‖g‖
      (−1 is optimal, > 0 means the estimator predicts ascent).
    """
    R = samples.shape[0]
    G = samples.reshape(R, -1).double()
    gv = g.reshape(-1).double()
    gn = float(gv.norm())
    mean = G.mean(0)
    bias2 = float(((mean - gv) ** 2).sum())
    var = float(G.var(0, unbiased=True).sum()) if R > 1 else math.nan
    dots = G @ gv
    norms = G.norm(dim=1)
    cos = torch.where(norms > 0, dots / (norms * gn).clamp_min(1e-300), torch.zeros_like(dots))
    second = float((norms**2).mean())
    ei = -float(dots.mean()) / math.sqrt(second) if second > 0 else 0.0
    safe = gn if gn > 0 else math.nan
    return {
        "grad_norm": gn,
        "bias_norm": math.sqrt(bias2),
        "bias_rel": math.sqrt(bias2) / safe,
        "bias_debiased": math.sqrt(max(0.0, bias2 - var / R)),
        "variance": var,
        "variance_rel": var / safe**2,
        "rmse": math.sqrt(float(((G - gv) ** 2).sum(1).mean())),
        "cosine": float(cos.mean()),
        "expected_improvement": ei,
        "ei_rel": ei / safe,
    }

"""Direct optimization through arg max (Lorberbom, Gane, Jaakkola, Hazan, NeurIPS 2019).

    z*  = argmax_z h(z) + γ(z)
    z_ε = argmax_z h(z) + γ(z) − ε·L̃(z)              (towards-better, the paper's code)
    ∇_θ E[L(z*)] ≈ E[φ(z*) − φ(z_ε)] / ε

implemented as the surrogate ``mean((h(z*) − h(z_ε)) / ε) + mean(L(z*))``: the first term
carries the encoder's gradient through the potentials, the second the decoder's.
"""

from __future__ import annotations

import torch

from ..gumbel import sample_gumbel
from ..options import Option
from ..potentials import Potentials
from ..solvers import Solver, enumerate_scores, get_solver
from ..solvers.exact import all_assignments
from ..solvers.pool import SolverPool
from ..solvers.select import Structure, select
from .base import (
    Estimator,
    EstimatorResult,
    LossFn,
    Started,
    evaluate_losses,
    naming,
    one_hot,
    register_estimator,
)
from .schedules import Schedule, as_schedule, paper_eps

__all__ = ["DirectEstimator", "coordinate_candidates"]

DIRECTIONS = ("towards-better", "away-from-worse")
CANDIDATES = ("auto", "coordinate", "all")


def other_values(z: torch.Tensor, K: int) -> torch.Tensor:
    """For long ``z`` ``[R, n]``: the ``K - 1`` values other than ``z[r, i]``, ascending: ``[R, n, K-1]``."""
    k = torch.arange(K - 1, device=z.device)
    return k + (k >= z[:, :, None]).long()


def coordinate_candidates(z: torch.Tensor, K: int) -> torch.Tensor:
    """All assignments that differ from ``z`` in exactly one coordinate.

    ``z`` long ``[R, n]`` -> long ``[R, n, K - 1, n]``: entry ``[r, i, k']`` is ``z[r]`` with
    coordinate ``i`` set to the ``k'``-th value other than ``z[r, i]`` (values in increasing order).
    """
    R, n = z.shape
    values = other_values(z, K)
    cand = z[:, None, None, :].expand(R, n, K - 1, n).clone()
    idx = torch.arange(n, device=z.device)
    cand[:, idx, :, idx] = values.permute(1, 0, 2)
    return cand


@register_estimator("direct")
class DirectEstimator(Estimator):
    """Direct optimization through arg max, with any solver.

    Args:
        eps: ε, a float or a :class:`~structvae.estimators.Schedule` of the iteration
            (default: the paper's 1.0 · exp(−1e-5·t) every 500 iterations, ≥ 0.1).
        solver: a solver name or instance; ``None`` picks by structure
            (:func:`structvae.solvers.select` on the potentials' structure, not knowing whether
            the couplings are supermodular: ``independent`` / ``tree`` / ``exact`` / ``ilp``).
            A run passes the one solver it selected for the model.
        direction: ``"towards-better"`` (z_ε maximises h + γ − εL̃; the paper's code) or
            ``"away-from-worse"`` (h + γ + εL̃, gradient (φ(z_ε) − φ(z*))/ε).
        samples: Gumbel samples per data point (the gradient averages over them).
        candidates: how L̃ is formed. ``"coordinate"``: L̃(z) = Σ_i L(z*_{−i}, z_i) from the
            n·(K−1) assignments one coordinate away from z* (exact when n = 1: the whole space
            in K decoder calls); ``"all"``: the exact L over all K^n assignments (small spaces;
            z_ε by enumeration); ``"auto"``: coordinate.
        label_eps: ε for labelled rows (z_ε = the label); default: the same as ``eps``.
        chunk_size: candidates per ``loss_fn`` call (bounds memory).
        max_assignments: the limit of ``candidates="all"``.
        pool: a :class:`~structvae.solvers.pool.SolverPool` (or a thread count) on which
            :meth:`begin` solves ``z*`` while the caller works on (``--solver-workers``);
            ``None``: solve in the calling thread.

    Cost per step: one loss_fn call with gradient at z*, plus n·(K−1) (coordinate) or K^n
    (all) candidate evaluations without gradient; two solver calls. Biased for ε > 0; the
    bias vanishes as ε → 0 while the variance grows as 1/ε.
    """

    name = "direct"
    supports_edges = True
    supports_labels = True
    uses_solver = True
    options = (
        Option("eps", float, None, "epsilon (default: the paper's 1.0 * exp(-1e-5 t), >= 0.1)"),
        Option("solver", str, None, "arg-max solver (default: chosen by the structure)"),
        Option("direction", str, "towards-better", "sign of the loss perturbation", DIRECTIONS),
        Option("samples", int, 1, "Gumbel samples per data point"),
        Option("candidates", str, "auto", "how the loss of z_eps's problem is formed", CANDIDATES),
        Option("label_eps", float, None, "epsilon of labelled rows (default: eps)"),
        Option("chunk_size", int, 512, "candidates per loss_fn call", identity=False),
        Option("max_assignments", int, 2**12, "the limit of candidates='all'"),
        Option("pool", int, None, "threads solving z* while the step goes on", identity=False),
    )

    def __init__(
        self,
        eps: float | Schedule = None,
        solver: str | Solver | None = None,
        direction: str = "towards-better",
        samples: int = 1,
        candidates: str = "auto",
        label_eps: float | Schedule | None = None,
        chunk_size: int = 512,
        max_assignments: int = 2**12,
        pool: SolverPool | int | None = None,
    ) -> None:
        super().__init__()
        self.eps = paper_eps() if eps is None else as_schedule(eps, "eps")
        self.label_eps = None if label_eps is None else as_schedule(label_eps, "label_eps")
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if candidates not in CANDIDATES:
            raise ValueError(f"candidates must be one of {CANDIDATES}, got {candidates!r}")
        if int(samples) < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        self.direction = direction
        self.samples = int(samples)
        self.candidates = candidates
        self.chunk_size = int(chunk_size)
        self.max_assignments = int(max_assignments)
        self.solver = None if solver is None else get_solver(solver)
        self.pool = SolverPool(pool) if isinstance(pool, int) else pool

    def resolve_solver(self, potentials: Potentials) -> Solver:
        """The solver in use (picked by structure on first use when none was given)."""
        if self.solver is None:
            p = potentials
            edges = p.edges if p.has_edges else None
            self.solver = select(Structure(p.num_vars, p.num_states, edges))
        return self.solver

    def check(self, potentials: Potentials) -> None:
        super().check(potentials)
        self.resolve_solver(potentials).check(potentials)
        if self.candidates == "all":
            total = potentials.num_states**potentials.num_vars
            if total > self.max_assignments:
                raise ValueError(
                    f"direct: candidates='all' needs K^n = {total} loss evaluations per data point, "
                    f"above max_assignments = {self.max_assignments}; use candidates='coordinate'"
                )

    # ------------------------------------------------------------------ steps
    def _repeat(self, p: Potentials) -> Potentials:
        S = self.samples
        if S == 1:
            return p
        return Potentials(
            p.unary.repeat_interleave(S, 0),
            p.edges,
            p.pairwise.repeat_interleave(S, 0),
            validate=False,
        )

    def _candidate_losses(self, loss_fn: LossFn, z_star: torch.Tensor, loss_star, B, K, dtype):
        """δ ``[R, n, K]``: δ[r, i, k] = L(z*_{−i}, z_i = k), R = B·S."""
        R, n = z_star.shape
        S = R // B
        delta = loss_star.detach().reshape(R, 1, 1).expand(R, n, K).clone()
        if K == 1:
            return delta
        cand = coordinate_candidates(z_star, K)  # [R, n, K-1, n]
        with torch.no_grad():
            losses = evaluate_losses(
                loss_fn, one_hot(cand.reshape(B, S * n * (K - 1), n), K, dtype), self.chunk_size
            )
        delta.scatter_(2, other_values(z_star, K), losses.reshape(R, n, K - 1).to(delta.dtype))
        return delta

    def _labels(self, labels, B: int, n: int, device) -> torch.Tensor | None:
        if labels is None:
            return None
        labels = torch.as_tensor(labels, device=device).long()
        if labels.dim() == 1 and n == 1:
            labels = labels[:, None]
        if tuple(labels.shape) != (B, n):
            raise ValueError(
                f"labels must have shape [B] (n = 1) or [B, n] = [{B}, {n}] with -1 for "
                f"unlabelled rows, got {list(labels.shape)}"
            )
        return labels

    def estimate(
        self,
        potentials: Potentials,
        loss_fn: LossFn,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> EstimatorResult:
        """One estimate. ``labels`` long ``[B]`` or ``[B, n]``, -1 where unlabelled: labelled
        rows use z_ε = label (direct loss minimisation, the semi-supervised case)."""
        return self.finish(self._start(potentials, labels, generator), loss_fn)

    def begin(
        self,
        potentials: Potentials,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Started:
        """Check, draw the noise and start the ``z*`` solve (on :attr:`pool` when set)."""
        self.check(potentials)
        return self._start(potentials, labels, generator)

    def _start(self, potentials: Potentials, labels, generator) -> Started:
        solver = self.resolve_solver(potentials)
        pot = self._repeat(potentials)  # [R = B*S]
        gamma = sample_gumbel(
            pot.unary.shape, device=pot.device, dtype=pot.dtype, generator=generator
        )
        perturbed = pot.detach().perturb(gamma)
        pool = self.pool if self.pool is not None else SolverPool(0)
        state = {"pot": pot, "perturbed": perturbed, "z_star": pool.submit(solver, perturbed)}
        return Started(potentials, {"labels": labels}, state)

    def finish(self, started: Started, loss_fn: LossFn) -> EstimatorResult:
        """Complete the estimate: the loss at z*, the candidates' losses, the z_eps solve."""
        with naming(self.name):
            return self._finish(started, loss_fn)

    def _finish(self, started: Started, loss_fn: LossFn) -> EstimatorResult:
        potentials, st = started.potentials, started.state
        B, n, K = potentials.unary.shape
        S = self.samples
        solver = self.resolve_solver(potentials)
        labels = self._labels(started.kwargs.get("labels"), B, n, potentials.device)
        eps = float(self.eps(self.iteration))
        pot, perturbed = st["pot"], st["perturbed"]
        z_star = st["z_star"].result()  # [R, n]
        dtype = torch.promote_types(pot.dtype, torch.float32)
        loss_star = evaluate_losses(loss_fn, one_hot(z_star.reshape(B, S, n), K, dtype))  # [B, S]
        loss_star = loss_star.reshape(B * S)

        sign = -1.0 if self.direction == "towards-better" else 1.0
        if self.candidates == "all":
            z_eps = self._solve_all(perturbed, loss_fn, B, sign * eps, dtype)
        else:
            delta = self._candidate_losses(loss_fn, z_star, loss_star, B, K, dtype)
            target = perturbed.with_unary(perturbed.unary + (sign * eps) * delta.to(pot.dtype))
            hint = z_star if solver.uses_hint else None
            z_eps = solver(target, hint=hint)

        eps_row = torch.full((B * S,), eps, device=pot.device, dtype=dtype)
        # towards-better: (h(z*) - h(z_eps)) / eps;  away-from-worse: (h(z_eps) - h(z*)) / eps
        coef = torch.full_like(eps_row, -sign)
        if labels is not None:
            lab = labels.repeat_interleave(S, 0)
            has = (lab >= 0).all(dim=1)
            z_eps = torch.where(has[:, None], lab, z_eps)
            leps = eps if self.label_eps is None else float(self.label_eps(self.iteration))
            eps_row = torch.where(has, torch.full_like(eps_row, leps), eps_row)
            coef = torch.where(has, torch.ones_like(coef), coef)
        diff = pot.score(z_star).to(dtype) - pot.score(z_eps).to(dtype)
        encoder_term = (coef * diff / eps_row).mean()
        surrogate = encoder_term + loss_star.mean()
        return EstimatorResult(
            z=z_star.reshape(B, S, n)[:, 0],
            loss=loss_star.detach().reshape(B, S)[:, 0],
            surrogate=surrogate,
            info={"z_eps": z_eps.reshape(B, S, n)[:, 0], "eps": eps},
        )

    def _solve_all(self, perturbed: Potentials, loss_fn: LossFn, B: int, signed_eps: float, dtype):
        """z_ε by enumeration against the exact loss of every assignment."""
        n, K = perturbed.num_vars, perturbed.num_states
        A = all_assignments(n, K, device=perturbed.device)  # [M, n]
        with torch.no_grad():
            L = evaluate_losses(
                loss_fn, one_hot(A, K, dtype)[None].expand(B, -1, -1, -1), self.chunk_size
            )  # [B, M]
            scores = enumerate_scores(perturbed, self.max_assignments)  # [R, M]
            L = L.repeat_interleave(perturbed.batch_size // B, 0)
            return A[(scores + signed_eps * L).argmax(1)]

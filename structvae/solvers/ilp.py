"""Exact arg max for any ``K`` and any pairwise tables with OR-Tools CP-SAT.

Every sample is its own integer program, built from a template cached per
``(n, K, edges)``; the batch's programs run in a thread pool (CP-SAT releases the GIL
while it searches, so the threads really run in parallel).

Formulations (all Boolean):

- ``K = 2``: one literal ``z_i`` per variable and one ``y_e = z_i AND z_j`` per edge
  (``y <= z_i``, ``y <= z_j``, ``y >= z_i + z_j - 1``). Each edge table is rewritten as
  ``p00 + (p10 - p00) z_i + (p01 - p00) z_j + (p00 + p11 - p01 - p10) z_i z_j``; the linear
  parts move into the unary coefficients and the constants are dropped (they do not
  change the arg max).
- general ``K``: one-hot ``x[i, k]`` (exactly one per variable) and ``y[e, a, c]`` tied to
  them by the local-polytope marginalisation constraints ``sum_c y[e, a, c] = x[i, a]``,
  ``sum_a y[e, a, c] = x[j, c]``; with integrality ``y[e, a, c] = x[i, a] x[j, c]`` exactly.
  Each unary row and pairwise table is first centred (a constant shift) to shrink the
  largest coefficient.

CP-SAT needs integer objective coefficients: per sample, the float coefficients are
multiplied by a power of two ``scale`` that maps the largest ``|coefficient|`` into
``[2**(bits-1), 2**bits)`` (``bits = precision_bits``, 30 by default) and rounded.

For ``K = 2`` (option ``persistencies``, on by default) roof duality first fixes the
variables it can (:mod:`structvae.solvers.qpbo`: one batched max-flow); CP-SAT then sees
those variables with their domains fixed, and is not called at all for a sample whose
variables are all fixed.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..potentials import Potentials
from .base import Solver, register, warn_not_optimal
from .qpbo import binary_tables, persistencies_numpy

__all__ = ["ILPSolver"]

_CACHE_SIZE = 16  # model templates kept per solver instance

# CP-SAT status names (cp_model.OPTIMAL etc.); imported lazily with OR-Tools.
_OPTIMAL, _FEASIBLE = "OPTIMAL", "FEASIBLE"


def _cp_model():
    try:
        from ortools.sat.python import cp_model
    except ImportError as err:  # pragma: no cover - ortools is a dependency
        raise ImportError("solver 'ilp' needs OR-Tools: pip install ortools (>= 9.8)") from err
    return cp_model


def _float(device: torch.device) -> torch.dtype:
    """float64, except on devices without it (MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


class _Template:
    """The constraints of one ``(n, K, edges)`` family, built once, copied per sample.

    The template's objective lists every variable (coefficients are filled per sample)
    and its solution hint lists every variable (values filled per sample, or cleared).
    """

    def __init__(self, n: int, K: int, edges: np.ndarray) -> None:
        cp_model = _cp_model()
        E = edges.shape[0]
        ei, ej = edges[:, 0].tolist(), edges[:, 1].tolist()
        model = cp_model.CpModel()
        self.n, self.K, self.E = n, K, E
        self.binary = K == 2
        if self.binary:
            z = [model.new_bool_var("") for _ in range(n)]
            y = [model.new_bool_var("") for _ in range(E)]
            for e, (i, j) in enumerate(zip(ei, ej, strict=True)):
                model.add_implication(y[e], z[i])
                model.add_implication(y[e], z[j])
                model.add_bool_or([~z[i], ~z[j], y[e]])
            self.num_vars = n + E
        else:
            x = [model.new_bool_var("") for _ in range(n * K)]
            y = [model.new_bool_var("") for _ in range(E * K * K)]
            for i in range(n):
                model.add_exactly_one(x[i * K : (i + 1) * K])
            for e, (i, j) in enumerate(zip(ei, ej, strict=True)):
                base = e * K * K
                for a in range(K):  # sum_c y[e, a, c] = x[i, a]
                    model.add(sum(y[base + a * K : base + (a + 1) * K]) == x[i * K + a])
                for c in range(K):  # sum_a y[e, a, c] = x[j, c]
                    model.add(sum(y[base + c : base + K * K : K]) == x[j * K + c])
            self.num_vars = n * K + E * K * K
        self.edges = edges
        proto = model.proto
        proto.objective.vars.extend(range(self.num_vars))
        proto.objective.scaling_factor = -1.0  # CP-SAT minimises: minimise -score
        proto.solution_hint.vars.extend(range(self.num_vars))
        self.model = model

    # -- per-batch numpy work (vectorised over the batch) --------------------
    def coefficients(self, p: Potentials, unary: np.ndarray, pairwise: np.ndarray) -> np.ndarray:
        """Float objective coefficients ``[B, num_vars]`` (score up to a per-sample constant):
        for K = 2 the binary form (:meth:`~structvae.Potentials.binary_form`) in float64,
        otherwise the numpy tables ``unary``, ``pairwise`` centred per variable / edge."""
        B = unary.shape[0]
        if self.binary:
            form = p.detach().to("cpu", torch.float64).binary_form()
            return torch.cat([form.linear, form.coupling], dim=1).numpy()
        u = unary - 0.5 * (unary.max(-1, keepdims=True) + unary.min(-1, keepdims=True))
        t = pairwise.reshape(B, self.E, -1)
        t = t - 0.5 * (t.max(-1, keepdims=True) + t.min(-1, keepdims=True))
        return np.concatenate([u.reshape(B, -1), t.reshape(B, -1)], axis=1)

    def hint_values(self, hint: np.ndarray) -> np.ndarray:
        """0/1 values ``[B, num_vars]`` of every variable for assignments ``hint`` ``[B, n]``."""
        ei, ej = self.edges[:, 0], self.edges[:, 1]
        if self.binary:
            return np.concatenate([hint, hint[:, ei] & hint[:, ej]], axis=1)
        K = self.K
        B = hint.shape[0]
        x = np.zeros((B, self.n, K), dtype=np.int64)
        np.put_along_axis(x, hint[..., None], 1, axis=-1)
        y = np.zeros((B, self.E, K * K), dtype=np.int64)
        np.put_along_axis(y, (hint[:, ei] * K + hint[:, ej])[..., None], 1, axis=-1)
        return np.concatenate([x.reshape(B, -1), y.reshape(B, -1)], axis=1)

    def decode(self, solution) -> np.ndarray:
        """Assignment ``[n]`` from CP-SAT's solution values."""
        if self.binary:
            return np.asarray(solution[: self.n], dtype=np.int64)
        x = np.asarray(solution[: self.n * self.K], dtype=np.int64).reshape(self.n, self.K)
        return x.argmax(1)


@register("ilp")
class ILPSolver(Solver):
    """Exact arg max for any ``K`` and any pairwise tables, by OR-Tools CP-SAT.

    **Rounding bound.** CP-SAT needs integer objective coefficients: per sample the float
    coefficients are multiplied by a power of two ``scale`` (the largest ``|coefficient|``
    lands in ``[2**(bits-1), 2**bits)``, ``bits = precision_bits``) and rounded. An
    assignment's score sums at most ``n + E`` coefficients (one per variable, one per
    edge), each rounded by at most ``0.5 / scale``, so every assignment's rounded score is
    within ``(n + E) * 0.5 / scale`` of its true score (up to a constant common to all
    assignments), and the returned maximiser ``z`` of the rounded problem satisfies

        h(z) >= max_z' h(z') - tol,      tol = (n + E) / scale,

    plus float64 round-off in forming the coefficients (~1e-16 relative, negligible).
    ``tol`` per sample is stored in :attr:`last_tolerance`; with the default 30 bits it is
    at most ``(n + E) * 2**-29`` times the largest coefficient. Problems without edges
    (``n = 1`` included) and ``K = 1`` are solved directly by the unary arg max
    (tolerance 0).

    Args:
        time_limit: seconds per sample (``None``: no limit). With a limit the solver no
            longer declares itself ``exact``; a sample stopped by it is marked not optimal.
        workers: samples solved in parallel by a thread pool (default ``os.cpu_count()``);
            each CP-SAT search uses one worker (``num_workers = 1``). CP-SAT releases the
            GIL while it searches, so the threads run in parallel.
        backend: ``"cpsat"`` (the only backend: SCIP through ``pywraplp`` was measured
            slower on these problems and does not parallelise in threads).
        on_not_optimal: what to do with samples not proven optimal (a time limit):
            ``"warn"`` (default) emits a :class:`SolverWarning` naming them and returns
            the best assignment known (see below); ``"raise"`` raises ``ValueError``.
        precision_bits: the largest scaled coefficient is below ``2**precision_bits``
            (8..40; default 30).
        parameters: extra CP-SAT ``SatParameters`` fields, e.g. ``{"random_seed": 1}``
            (defaults: ``num_workers=1``, ``linearization_level=2``, which was 1.5-4x faster
            than CP-SAT's default on dense pairwise problems).
        persistencies: for ``K = 2``, first fix the variables that roof duality (QPBO,
            :func:`~structvae.solvers.qpbo.qpbo_persistencies`) proves persistent: some
            maximiser shares their values, so fixing them keeps the result exact. The
            whole batch costs one max-flow; CP-SAT then gets each sample's model with the
            fixed variables' domains reduced to their values, and is skipped for samples
            where every variable is fixed (default ``True``; ignored for ``K != 2``).

    Attributes:
        last_optimal: bool ``[B]`` on the potentials' device: CP-SAT status OPTIMAL (a
            sample stopped by the time limit, with or without a solution, is False).
        last_tolerance: float64 ``[B]`` (float32 on MPS) on the potentials' device: ``tol`` above (it holds
            for the samples with ``last_optimal`` True).
        last_status: CP-SAT status name per sample (``"OPTIMAL"``, ``"FEASIBLE"``:
            stopped with a solution, ``"UNKNOWN"``: stopped before finding one). A sample
            solved without CP-SAT (all variables fixed, or no edges) is ``"OPTIMAL"``.
        last_fixed_fraction: float ``[B]`` on the potentials' device: the fraction of each
            sample's variables fixed before CP-SAT by persistencies (0 when they were not
            used: ``persistencies=False`` or ``K != 2``; 1 for problems without edges,
            which need no CP-SAT).

    With persistencies the returned maximiser is that of the rounded problem restricted
    to the fixed values; since some exact maximiser shares them, the bound above still
    holds, up to the float64 round-off of the max-flow (relevant only between
    assignments whose scores differ by ~1e-12 relative).

    ``hint`` (long ``[B, n]``) becomes a complete CP-SAT solution hint on every variable
    (one-hot and pairwise indicators consistent with it): the estimator passes ``z*``
    when it solves for ``z_eps``. For a sample not proven optimal the solver returns the
    better of CP-SAT's incumbent and a greedy coordinate ascent (iterated conditional
    modes) started from the hint, or from the unary arg max without one, each polished
    by the same ascent, so with a hint the result never scores below the hint. Since
    every assignment is feasible, an ``INFEASIBLE``/``MODEL_INVALID`` status is a bug and
    raises ``RuntimeError`` naming the sample and status.
    """

    name = "ilp"
    exact = True
    uses_hint = True

    def __init__(
        self,
        time_limit: float | None = None,
        workers: int | None = None,
        backend: str = "cpsat",
        on_not_optimal: str = "warn",
        precision_bits: int = 30,
        parameters: dict | None = None,
        persistencies: bool = True,
    ) -> None:
        super().__init__()
        if time_limit is not None and not float(time_limit) > 0:
            raise ValueError(f"ILPSolver: time_limit must be > 0 seconds or None, got {time_limit}")
        if backend != "cpsat":
            raise ValueError(f"ILPSolver: backend must be 'cpsat', got {backend!r}")
        if on_not_optimal not in ("warn", "raise"):
            raise ValueError(
                f"ILPSolver: on_not_optimal must be 'warn' or 'raise', got {on_not_optimal!r}"
            )
        if not 8 <= int(precision_bits) <= 40:
            raise ValueError(f"ILPSolver: precision_bits must lie in [8, 40], got {precision_bits}")
        if workers is not None and int(workers) < 1:
            raise ValueError(f"ILPSolver: workers must be >= 1 or None, got {workers}")
        cp_model = _cp_model()  # fail early when OR-Tools is missing
        probe = cp_model.CpSolver().parameters
        for key, value in (parameters or {}).items():
            try:
                setattr(probe, key, value)
            except (AttributeError, TypeError, ValueError) as err:
                raise ValueError(
                    f"ILPSolver: invalid CP-SAT parameter {key}={value!r}: {err}"
                ) from err
        self.time_limit = None if time_limit is None else float(time_limit)
        self.workers = int(workers) if workers is not None else (os.cpu_count() or 1)
        self.backend = backend
        self.on_not_optimal = on_not_optimal
        self.precision_bits = int(precision_bits)
        self.parameters = dict(parameters or {})
        self.persistencies = bool(persistencies)
        self.exact = self.time_limit is None
        self.last_fixed_fraction: torch.Tensor | None = None
        self.last_tolerance: torch.Tensor | None = None
        self.last_status: list[str] | None = None
        self._templates: OrderedDict[tuple, _Template] = OrderedDict()

    def __repr__(self) -> str:
        return (
            f"ILPSolver(time_limit={self.time_limit}, workers={self.workers}, "
            f"backend={self.backend!r}, on_not_optimal={self.on_not_optimal!r}, "
            f"persistencies={self.persistencies})"
        )

    def _template(self, n: int, K: int, edges: np.ndarray) -> _Template:
        key = (n, K, edges.tobytes())
        t = self._templates.get(key)
        if t is None:
            t = _Template(n, K, edges)
            self._templates[key] = t
            if len(self._templates) > _CACHE_SIZE:
                self._templates.popitem(last=False)
        else:
            self._templates.move_to_end(key)
        return t

    def _scale(self, coef: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Integer coefficients ``[B, V]`` and the power-of-two scale per sample ``[B]``."""
        maxabs = np.abs(coef).max(axis=1) if coef.shape[1] else np.zeros(coef.shape[0])
        _, expo = np.frexp(np.where(maxabs > 0, maxabs, 1.0))  # maxabs = m 2**expo, m in [.5, 1)
        scale = np.ldexp(1.0, self.precision_bits - expo)
        return np.rint(coef * scale[:, None]).astype(np.int64), scale

    @torch.no_grad()
    def solve(self, potentials: Potentials, hint: torch.Tensor | None = None) -> torch.Tensor:
        p = potentials
        B, n, K = p.unary.shape
        dev = p.device
        if K == 1 or not p.has_edges:
            # independent variables (n = 1 included): exact per-variable arg max
            self.last_optimal = torch.ones(B, dtype=torch.bool, device=dev)
            self.last_tolerance = torch.zeros(B, dtype=_float(dev), device=dev)
            self.last_status = ["OPTIMAL"] * B
            self.last_fixed_fraction = torch.ones(B, dtype=_float(dev), device=dev)
            return p.unary.argmax(-1)
        if B == 0:
            self.last_optimal = torch.ones(0, dtype=torch.bool, device=dev)
            self.last_tolerance = torch.zeros(0, dtype=_float(dev), device=dev)
            self.last_status = []
            self.last_fixed_fraction = torch.zeros(0, dtype=_float(dev), device=dev)
            return torch.zeros(0, n, dtype=torch.long, device=dev)

        unary, edges, pairwise = p.numpy()
        tmpl = self._template(n, K, edges)
        icoef, scale = self._scale(tmpl.coefficients(p, unary, pairwise))
        neg = (-icoef).tolist()
        hint_np = None if hint is None else hint.detach().cpu().numpy().astype(np.int64)
        fixes = None
        if self.persistencies and K == 2:
            fixed, values = persistencies_numpy(*binary_tables(p))
            self.last_fixed_fraction = torch.as_tensor(fixed.mean(1), dtype=_float(dev), device=dev)
            if hint_np is not None:  # a hint that agrees with the fixed values
                hint_np = np.where(fixed, values, hint_np)
            fixes = [
                None if row.all() else (np.flatnonzero(row).tolist(), val[row].tolist())
                for row, val in zip(fixed, values, strict=True)
            ]
        else:
            self.last_fixed_fraction = torch.zeros(B, dtype=_float(dev), device=dev)
        hints = None if hint_np is None else tmpl.hint_values(hint_np).tolist()
        results = self._run(tmpl, neg, hints, fixes)
        if fixes is not None:  # samples fully fixed by persistencies need no CP-SAT
            results = [
                (values[b], _OPTIMAL) if fix is None else results[b] for b, fix in enumerate(fixes)
            ]

        status = [r[1] for r in results]
        optimal = torch.tensor([s == _OPTIMAL for s in status], dtype=torch.bool, device=dev)
        self.last_optimal = optimal
        self.last_status = status
        tol = (n + p.num_edges) / scale
        self.last_tolerance = torch.as_tensor(tol, dtype=_float(dev), device=dev)
        if bool(optimal.all()):
            return torch.as_tensor(np.stack([r[0] for r in results]), device=dev)
        bad = [b for b, s in enumerate(status) if s != _OPTIMAL]
        if self.on_not_optimal == "raise":
            raise ValueError(
                f"solver {self.name!r}: {len(bad)} sample(s) not proven optimal within "
                f"time_limit={self.time_limit} s (samples {bad[:16]}"
                f"{' ...' if len(bad) > 16 else ''}; statuses "
                f"{sorted({status[b] for b in bad})}); raise time_limit, or use "
                "on_not_optimal='warn' to accept the best assignments found"
            )
        warn_not_optimal(self, optimal)
        # not proven optimal: the best of CP-SAT's incumbent and of a local search (ICM)
        # started from it and from the hint (else the unary arg max); never below the hint
        idx = np.asarray(bad)
        u, pw = unary[idx], pairwise[idx]
        start = hint.cpu().numpy()[idx] if hint is not None else unary[idx].argmax(-1)
        inc = np.stack(
            [start[k] if results[b][0] is None else results[b][0] for k, b in enumerate(bad)]
        )
        best = _icm(u, edges, pw, start)
        polished = _icm(u, edges, pw, inc)
        keep = _scores(u, edges, pw, polished) >= _scores(u, edges, pw, best)
        best = np.where(keep[:, None], polished, best)
        z = np.zeros((B, n), dtype=np.int64)
        for b, r in enumerate(results):
            if r[0] is not None:
                z[b] = r[0]
        z[idx] = best
        return torch.as_tensor(z, device=dev)

    def _run(self, tmpl: _Template, neg: list, hints: list | None, fixes: list | None) -> list:
        """Solve every sample; ``(assignment or None, status name)`` per sample.

        ``fixes[b]`` is ``(variables, values)`` whose domains are fixed in sample ``b``'s
        model, or ``None`` to skip that sample (its entry in the result is ``None``).
        """
        cp_model = _cp_model()
        time_limit = self.time_limit
        extra = dict(self.parameters)

        def one(b: int):
            model = cp_model.CpModel()
            proto = model.proto
            proto.copy_from(tmpl.model.proto)
            proto.objective.coeffs.extend(neg[b])
            if fixes is not None:
                variables = proto.variables
                for k, v in zip(*fixes[b], strict=True):
                    domain = variables[k].domain
                    domain.clear()
                    domain.extend((v, v))
            if hints is None:
                proto.clear_solution_hint()
            else:
                proto.solution_hint.values.extend(hints[b])
            solver = cp_model.CpSolver()
            prm = solver.parameters
            prm.num_workers = 1
            prm.linearization_level = 2
            if time_limit is not None:
                prm.max_time_in_seconds = time_limit
            for key, value in extra.items():
                setattr(prm, key, value)
            status = solver.status_name(solver.solve(model))
            if status in (_OPTIMAL, _FEASIBLE):
                return tmpl.decode(list(solver.response_proto.solution)), status
            if status == "UNKNOWN":  # stopped before finding any solution
                return None, status
            raise RuntimeError(
                f"solver 'ilp': CP-SAT returned status {status} for sample {b}; every "
                "assignment is feasible, so this is a bug in the model (please report it)"
            )

        B = len(neg)
        todo = [b for b in range(B) if fixes is None or fixes[b] is not None]
        out: list = [None] * B
        workers = min(self.workers, len(todo))
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                for b, r in zip(todo, pool.map(one, todo), strict=True):
                    out[b] = r
        else:
            for b in todo:
                out[b] = one(b)
        return out


# ----------------------------------------------------------------- local search
def _scores(
    unary: np.ndarray, edges: np.ndarray, pairwise: np.ndarray, z: np.ndarray
) -> np.ndarray:
    """Scores ``[B]`` of assignments ``z`` ``[B, n]`` (numpy, float64)."""
    s = np.take_along_axis(unary, z[..., None], axis=-1)[..., 0].sum(-1)
    if edges.shape[0]:
        B, E = pairwise.shape[:2]
        K = pairwise.shape[-1]
        flat = pairwise.reshape(B, E, K * K)
        idx = z[:, edges[:, 0]] * K + z[:, edges[:, 1]]
        s = s + np.take_along_axis(flat, idx[..., None], axis=-1)[..., 0].sum(-1)
    return s


def _icm(
    unary: np.ndarray, edges: np.ndarray, pairwise: np.ndarray, z: np.ndarray, sweeps: int = 100
) -> np.ndarray:
    """Iterated conditional modes from ``z`` ``[B, n]``: a coordinate-wise local maximum.

    A coordinate changes only on a strict improvement, so the score never decreases.
    """
    z = z.copy()
    B, n, K = unary.shape
    rows = np.arange(B)[:, None]
    as_first = [np.nonzero(edges[:, 0] == i)[0] for i in range(n)]
    as_second = [np.nonzero(edges[:, 1] == i)[0] for i in range(n)]
    for _ in range(sweeps):
        changed = False
        for i in range(n):
            local = unary[:, i].copy()  # [B, K]
            e1, e2 = as_first[i], as_second[i]
            if e1.size:  # pairwise[b, e, k, z_j]
                local += pairwise[rows, e1[None], :, z[:, edges[e1, 1]]].sum(1)
            if e2.size:  # pairwise[b, e, z_j, k]
                local += pairwise[rows, e2[None], z[:, edges[e2, 0]], :].sum(1)
            best = local.argmax(1)
            cur = z[:, i]
            better = local[np.arange(B), best] > local[np.arange(B), cur]
            if better.any():
                z[better, i] = best[better]
                changed = True
        if not changed:
            break
    return z

"""Exact arg max by enumerating all K^n assignments, batched and chunked on the device."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..gibbs import split_argmax
from ..potentials import Potentials
from .base import Solver, register

__all__ = ["ExactSolver", "all_assignments", "enumerate_scores", "DEFAULT_MAX_ASSIGNMENTS"]

DEFAULT_MAX_ASSIGNMENTS = 2**22
"""K^n above this is refused by default (4,194,304: binary n = 22)."""

_CHUNK_ELEMENTS = 2**23  # bound on the elements of one chunk's design matrix / score block
_CACHE_ELEMENTS = 2**25  # design matrices up to this size are cached between calls


def all_assignments(
    n: int, K: int, start: int = 0, stop: int | None = None, device=None
) -> torch.Tensor:
    """Assignments ``start..stop-1`` of all ``K**n`` in lexicographic order: long ``[M, n]``.

    Assignment ``m`` has ``z_i = (m // K**(n-1-i)) % K`` (variable 0 is the most significant).
    """
    stop = K**n if stop is None else stop
    m = torch.arange(start, stop, device=device)
    powers = K ** torch.arange(n - 1, -1, -1, device=device)
    return (m[:, None] // powers) % K


def _design(z: torch.Tensor, K: int, edges: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Design matrix so that ``score = theta @ design.T + const`` (see :func:`_theta`).

    K = 2: the compact binary form ``[M, n + E]`` with columns ``z_i`` and ``z_i z_j``;
    otherwise the one-hot form ``[M, n*K + E*K*K]``.
    """
    M, n = z.shape
    E = edges.shape[0]
    if K == 2:
        cols = [z]
        if E:
            cols.append(z[:, edges[:, 0]] * z[:, edges[:, 1]])
        return torch.cat(cols, dim=1).to(dtype)
    cols = [z + torch.arange(n, device=z.device) * K]
    if E:
        pair = z[:, edges[:, 0]] * K + z[:, edges[:, 1]]
        cols.append(n * K + pair + torch.arange(E, device=z.device) * K * K)
    idx = torch.cat(cols, dim=1)
    d = torch.zeros(M, n * K + E * K * K, dtype=dtype, device=z.device)
    return d.scatter_(1, idx, 1.0)


class _DesignCache:
    """Design matrices per (n, K, edges, device, dtype, chunk); bounded total size."""

    def __init__(self, max_elements: int = _CACHE_ELEMENTS) -> None:
        self.max_elements = max_elements
        self._store: dict[tuple, torch.Tensor] = {}
        self._size = 0

    def get(self, key: tuple, build) -> torch.Tensor:
        hit = self._store.get(key)
        if hit is not None:
            return hit
        d = build()
        if self._size + d.numel() <= self.max_elements:
            self._store[key] = d
            self._size += d.numel()
        return d


def _chunks(
    p: Potentials, chunk: int, cache: _DesignCache | None
) -> Iterator[tuple[int, torch.Tensor]]:
    n, K = p.num_vars, p.num_states
    total = K**n
    dtype = torch.promote_types(p.dtype, torch.float32)
    ekey = tuple(p.edges.flatten().tolist())
    for start in range(0, total, chunk):
        stop = min(start + chunk, total)

        def build(start=start, stop=stop):
            z = all_assignments(n, K, start, stop, device=p.device)
            return _design(z, K, p.edges, dtype)

        key = (n, K, ekey, str(p.device), dtype, start, stop)
        yield start, (cache.get(key, build) if cache is not None else build())


def _theta(p: Potentials) -> tuple[torch.Tensor, torch.Tensor]:
    """Coefficients ``[B, width]`` and constant ``[B]`` matching :func:`_design`.

    K = 2 reparametrises each unary ``(u0, u1)`` to ``u0 + (u1 - u0) z_i`` and each table
    ``[[a, b], [c, d]]`` to ``a + (c - a) z_i + (b - a) z_j + (a + d - b - c) z_i z_j``.
    """
    dtype = torch.promote_types(p.dtype, torch.float32)
    u, pw = p.unary.to(dtype), p.pairwise.to(dtype)
    if p.num_states != 2:
        return torch.cat([u.flatten(1), pw.flatten(1)], dim=1), u.new_zeros(p.batch_size)
    a, b, c, d = pw[..., 0, 0], pw[..., 0, 1], pw[..., 1, 0], pw[..., 1, 1]
    lin = u[..., 1] - u[..., 0]
    if p.has_edges:
        lin = lin.index_add(1, p.edges[:, 0], c - a).index_add(1, p.edges[:, 1], b - a)
    const = u[..., 0].sum(1) + a.sum(1)
    return torch.cat([lin, a + d - b - c], dim=1), const


def _chunk_size(p: Potentials) -> int:
    K = p.num_states
    width = p.num_vars + p.num_edges if K == 2 else p.num_vars * K + p.num_edges * K**2
    return max(1, _CHUNK_ELEMENTS // max(width, p.batch_size, 1))


def enumerate_scores(
    potentials: Potentials, max_assignments: int = DEFAULT_MAX_ASSIGNMENTS
) -> torch.Tensor:
    """Scores of all ``K**n`` assignments (order of :func:`all_assignments`): ``[B, K**n]``.

    Differentiable in the potentials; float32 or wider.
    """
    _check_size(potentials, max_assignments, "enumerate_scores")
    theta, const = _theta(potentials)
    parts = [theta @ d.t() for _, d in _chunks(potentials, _chunk_size(potentials), None)]
    return torch.cat(parts, dim=1) + const[:, None]


def _check_size(p: Potentials, limit: int, who: str) -> None:
    total = p.num_states**p.num_vars
    if total > limit:
        raise ValueError(
            f"{who}: K^n = {p.num_states}^{p.num_vars} = {total} assignments exceeds the limit of "
            f"{limit}; raise max_assignments, or use 'graphcut', 'tree' or 'ilp'"
        )


@register("exact")
class ExactSolver(Solver):
    """Enumerate all ``K**n`` assignments; any K and pairwise tables.

    Binary problems (K = 2, n ≥ 2) are maximised by split enumeration
    (:func:`structvae.gibbs.split_argmax`): the scores of the two halves of the variables plus a
    low-rank cross term, which needs far fewer multiply-adds than the design-matrix product.

    Scores are matrix products of the flattened potentials with one-hot design matrices
    (for K = 2, the compact ``z_i`` / ``z_i z_j`` form: ``n + E`` columns instead of ``2n + 4E``),
    computed in chunks of bounded size on the potentials' device; design matrices up to
    ``2**25`` elements are cached between calls (training reuses the same n, K, edges).

    Args:
        max_assignments: refuse problems with more than this many assignments
            (default ``2**22``).
    """

    name = "exact"

    def __init__(self, max_assignments: int = DEFAULT_MAX_ASSIGNMENTS) -> None:
        super().__init__()
        self.max_assignments = int(max_assignments)
        self._cache = _DesignCache()

    def check(self, potentials: Potentials) -> None:
        super().check(potentials)
        _check_size(potentials, self.max_assignments, f"solver {self.name!r}")

    @torch.no_grad()
    def solve(self, potentials: Potentials, hint: torch.Tensor | None = None) -> torch.Tensor:
        p = potentials
        powers = p.num_states ** torch.arange(p.num_vars - 1, -1, -1, device=p.device)
        if p.num_states == 2 and p.num_vars >= 2:
            best_idx = split_argmax(p)  # 2^(n/2)-sized halves: far fewer multiply-adds
            return (best_idx[:, None] // powers) % 2
        theta, _ = _theta(p)
        best = torch.full((p.batch_size,), -torch.inf, dtype=theta.dtype, device=p.device)
        best_idx = torch.zeros(p.batch_size, dtype=torch.long, device=p.device)
        for start, d in _chunks(p, _chunk_size(p), self._cache):
            s = theta @ d.t()
            val, idx = s.max(dim=1)
            better = val > best
            best = torch.where(better, val, best)
            best_idx = torch.where(better, idx + start, best_idx)
        return (best_idx[:, None] // powers) % p.num_states

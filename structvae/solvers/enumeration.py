"""Low-level enumeration of all ``K^n`` assignments, shared by the ``exact`` solver and by
:mod:`structvae.inference` (which builds on it; nothing here imports the inference code).

Two ways to score every assignment, batched and chunked on the potentials' device:

* **full enumeration** (:func:`enumerate_scores`): a matrix product of the flattened
  potentials with a design matrix (one-hot columns; for K = 2 the compact ``z_i`` / ``z_i z_j``
  columns of :meth:`~structvae.Potentials.binary_form`);
* **split enumeration** (binary only, :func:`split_terms`, :func:`block_scores`): with the
  variables split into ``A = {0..m-1}`` and ``C = {m..n-1}``, ``h(a, c) = s_A(a) + s_C(c) +
  aᵀ W c``, so all ``2^n`` scores are ``s_A ⊕ s_C + X_A W X_Cᵀ`` — a rank-``min(m, n-m)``
  product instead of the ``2^n × (n + E)`` design product (15× fewer multiply-adds for the
  complete graph on 15 nodes).

Assignments are numbered lexicographically, variable 0 most significant (:func:`all_assignments`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import torch

from ..potentials import Potentials

__all__ = [
    "DEFAULT_MAX_ASSIGNMENTS",
    "SPLIT_CHUNK_ELEMENTS",
    "all_assignments",
    "enumerate_scores",
    "check_size",
    "design_chunks",
    "DesignCache",
    "flat_coefficients",
    "chunk_size",
    "bits",
    "split_terms",
    "block_scores",
    "split_argmax",
]

DEFAULT_MAX_ASSIGNMENTS = 2**22
"""K^n above this is refused by default (4,194,304: binary n = 22)."""

CHUNK_ELEMENTS = 2**23  # bound on the elements of one chunk's design matrix / score block
_CACHE_ELEMENTS = 2**25  # design matrices up to this size are cached between calls
SPLIT_CHUNK_ELEMENTS = 1 << 17  # split scores per batch chunk (512 KiB in float32: in cache)


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
    """Design matrix so that ``score = coef @ design.T + const`` (see :func:`flat_coefficients`).

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


class DesignCache:
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


def design_chunks(
    p: Potentials, chunk: int, cache: DesignCache | None
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, design [M_chunk, width])`` for consecutive chunks of ``chunk`` assignments."""
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


def flat_coefficients(p: Potentials) -> tuple[torch.Tensor, torch.Tensor]:
    """Coefficients ``[B, width]`` and constant ``[B]`` matching the design matrices.

    K = 2: the binary form (:meth:`~structvae.Potentials.binary_form`) ``[linear, coupling]``;
    otherwise the flattened unary and pairwise tables (constant 0).
    """
    dtype = torch.promote_types(p.dtype, torch.float32)
    if p.num_states != 2:
        u, pw = p.unary.to(dtype), p.pairwise.to(dtype)
        return torch.cat([u.flatten(1), pw.flatten(1)], dim=1), u.new_zeros(p.batch_size)
    form = p.binary_form(dtype)
    return torch.cat([form.linear, form.coupling], dim=1), form.constant


def chunk_size(p: Potentials, elements: int = CHUNK_ELEMENTS) -> int:
    """Assignments per chunk so that a design block or score block stays below ``elements``."""
    K = p.num_states
    width = p.num_vars + p.num_edges if K == 2 else p.num_vars * K + p.num_edges * K**2
    return max(1, elements // max(width, p.batch_size, 1))


def check_size(p: Potentials, limit: int, who: str) -> None:
    """``ValueError`` when ``K^n`` exceeds ``limit``, naming ``who`` and the alternatives."""
    total = p.num_states**p.num_vars
    if total > limit:
        raise ValueError(
            f"{who}: K^n = {p.num_states}^{p.num_vars} = {total} assignments exceeds the limit of "
            f"{limit}; raise max_assignments, or use 'graphcut', 'tree' or 'ilp'"
        )


def enumerate_scores(
    potentials: Potentials, max_assignments: int = DEFAULT_MAX_ASSIGNMENTS
) -> torch.Tensor:
    """Scores of all ``K**n`` assignments (order of :func:`all_assignments`): ``[B, K**n]``.

    Differentiable in the potentials; float32 or wider.
    """
    check_size(potentials, max_assignments, "enumerate_scores")
    theta, const = flat_coefficients(potentials)
    parts = [theta @ d.t() for _, d in design_chunks(potentials, chunk_size(potentials), None)]
    return torch.cat(parts, dim=1) + const[:, None]


# ------------------------------------------------------------------ split enumeration
@functools.lru_cache(maxsize=32)
def bits(m: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """All ``2^m`` assignments of ``m`` bits as rows ``[2^m, m]``, first variable most
    significant."""
    a = torch.arange(2**m, device=device)
    shifts = torch.arange(m - 1, -1, -1, device=device)
    return ((a[:, None] >> shifts) & 1).to(dtype)


def block_scores(s_a, s_c, w, xa, xct, rows: slice) -> torch.Tensor:
    """Scores ``[b, 2^m, 2^k]`` of every assignment for the batch rows ``rows`` (up to the
    constant): entry ``[., a, c]`` is assignment ``a·2^k + c`` in lexicographic order."""
    s = torch.matmul(xa, w[rows]) @ xct  # the cross terms aᵀ W c
    s += s_a[rows, :, None]
    s += s_c[rows, None, :]
    return s


def split_terms(potentials: Potentials, m: int):
    """``(s_A [B, 2^m], s_C [B, 2^(n-m)], W [B, m, n-m], X_A, X_C, constant [B])`` of the
    binary form, with ``X_A = bits(m)``, ``X_C = bits(n - m)``: ``h(a, c) = constant +
    s_A(a) + s_C(c) + aᵀ W c``. Differentiable in the potentials."""
    form = potentials.binary_form()
    lin, quad = form.linear, form.coupling
    n, B = potentials.num_vars, potentials.batch_size
    xa, xc = bits(m, lin.device, lin.dtype), bits(n - m, lin.device, lin.dtype)
    s_a = lin[:, :m] @ xa.t()
    s_c = lin[:, m:] @ xc.t()
    w = lin.new_zeros(B, m, n - m)
    if potentials.has_edges:
        e0, e1 = potentials.edges[:, 0], potentials.edges[:, 1]  # i < j
        in_a, in_c = e1 < m, e0 >= m
        cross = ~in_a & ~in_c
        if in_a.any():
            s_a = s_a + quad[:, in_a] @ (xa[:, e0[in_a]] * xa[:, e1[in_a]]).t()
        if in_c.any():
            s_c = s_c + quad[:, in_c] @ (xc[:, e0[in_c] - m] * xc[:, e1[in_c] - m]).t()
        if cross.any():
            rows = torch.arange(B, device=lin.device)[:, None]
            w = w.index_put((rows, e0[cross][None], (e1[cross] - m)[None]), quad[:, cross])
    return s_a, s_c, w, xa, xc, form.constant


def split_argmax(potentials: Potentials) -> torch.Tensor:
    """Index ``[B]`` (lexicographic, as :func:`all_assignments`) of the best of the ``2^n``
    assignments of binary potentials, by split enumeration in batch chunks."""
    n = potentials.num_vars
    s_a, s_c, w, xa, xc, _ = split_terms(potentials, n // 2)
    xct = xc.t()
    B, cells = s_a.shape[0], s_a.shape[1] * s_c.shape[1]
    step = max(1, SPLIT_CHUNK_ELEMENTS // cells)
    parts = [
        block_scores(s_a, s_c, w, xa, xct, slice(i, i + step)).flatten(1).argmax(1)
        for i in range(0, B, step)
    ]
    return torch.cat(parts) if parts else s_a.new_zeros(0, dtype=torch.long)

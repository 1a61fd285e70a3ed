"""Exact arg max of binary supermodular potentials by one min-cut per batch (PyMaxflow).

The binary form of the potentials (:meth:`~structvae.Potentials.binary_form`),
``h(z) = const + sum_v linear_v z_v + sum_e w_e z_i z_j`` with ``w = a + d - b - c`` for the
edge table ``[[a, b], [c, d]]``, is rewritten with ``w z_i z_j = w z_j - w (1 - z_i) z_j`` as
``h(z) = const + sum_v gain_v z_v - sum_e w_e (1 - z_i) z_j`` (``gain_v = linear_v`` plus the
``w`` of the edges whose head is ``v``). With every ``w >= 0`` (supermodular), maximising ``h`` is a
minimum ``s-t`` cut: a variable on the sink side takes ``z = 1``; its sink edge carries its
gain, cut (and paid) when ``z_v = 0`` (negative gains become source edges inside the
max-flow library); arc ``i -> j`` of capacity ``w`` is cut when ``z_i = 0, z_j = 1``. The
whole batch is one graph of ``B * n`` nodes in ``B`` disjoint components, built with
vectorised calls and solved by a single ``maxflow()``.
"""

from __future__ import annotations

import weakref

import maxflow
import numpy as np
import torch

from ..potentials import Potentials
from .base import Solver, register

__all__ = ["GraphCutSolver", "DEFAULT_TOL"]

DEFAULT_TOL = 1e-6
"""Tolerance on negative supermodularity margins, times ``max(1, max|table entries|)``."""

_CACHE_SIZE = 16  # layouts kept per solver instance (batch size, n and edges vary little)


class _EndSums:
    """Per-node sums over the edges that end at a node on one side (tail or head), batched.

    ``np.add.reduceat`` over edges grouped by that end: a contiguous pass when the edges are
    already sorted by it (the tails of canonical edge lists), one column gather otherwise.
    """

    def __init__(self, ends: np.ndarray) -> None:
        order = np.argsort(ends, kind="stable")
        sorted_ends = ends[order]
        self.perm = None if np.array_equal(order, np.arange(len(ends))) else order
        self.starts = np.flatnonzero(np.r_[True, sorted_ends[1:] != sorted_ends[:-1]])
        self.nodes = sorted_ends[self.starts]

    def add_to(self, gain: np.ndarray, values: np.ndarray) -> None:
        """``gain[b, v] += sum of values[b, e] over edges e whose end is v``."""
        if self.perm is not None:
            values = values[:, self.perm]
        gain[:, self.nodes] += np.add.reduceat(values, self.starts, axis=1)


class _Layout:
    """What depends only on ``(B, n, edges)``: node ids, the arcs' end nodes, the gain sums."""

    def __init__(self, B: int, n: int, edges: np.ndarray) -> None:
        E = edges.shape[0]
        offsets = np.arange(B, dtype=np.int64)[:, None] * n
        self.nodes = np.arange(B * n, dtype=np.int64).reshape(B, n)
        self.nodes.flags.writeable = False  # handed out by build_graph; the cache keeps it
        # [B*E] node ids of i and j for every (b, e), in the dtype PyMaxflow's edge loop takes
        self.tail = (offsets + edges[:, 0]).ravel().astype(np.uint32)
        self.head = (offsets + edges[:, 1]).ravel().astype(np.uint32)
        self.size = B * n
        self.zeros = np.zeros(max(B * E, B * n))  # reverse and source capacities
        self.head_sums = _EndSums(edges[:, 1]) if E else None

    def tables(self, linear: np.ndarray, coupling: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(gain [B, n], w [B, E])`` float64 from the binary form ``(linear, coupling)``.

        ``w z_i z_j = w z_j - w (1 - z_i) z_j``: the gain of ``z_v = 1`` is ``linear_v`` plus
        the couplings of the edges whose head is ``v``, and ``w`` is the arc capacity.
        Single-threaded numpy on purpose: at these sizes BLAS or torch worker threads cost
        more than they save on a busy CPU.
        """
        if self.head_sums is None:
            return linear, coupling.reshape(linear.shape[0], 0)
        gain = linear.copy()
        self.head_sums.add_to(gain, coupling)
        return gain, coupling


def _add_arcs(graph, tail: np.ndarray, head: np.ndarray, cap: np.ndarray, rev: np.ndarray) -> None:
    """``graph.add_edges`` without its copies.

    PyMaxflow 1.3's ``add_edges`` casts and flattens its four arrays (two copies each) before
    running its typed loop ``_add_edges``; ours are already 1-D uint32/float64, so call the
    loop directly when this PyMaxflow has it, and fall back to the public method otherwise
    (the typed signature is checked before any edge is added).
    """
    loop = getattr(graph, "_add_edges", None)
    if loop is not None:
        try:
            loop(tail, head, cap, rev)
            return
        except (TypeError, ValueError):
            pass
    graph.add_edges(tail, head, cap, rev)


_NUMPY_DTYPES = (torch.float16, torch.float32, torch.float64)


def _to_numpy(p: Potentials) -> tuple[np.ndarray, np.ndarray]:
    """``(unary [B, n, 2], pairwise [B, E, 2, 2])`` as float64 numpy (error messages only)."""
    unary, pairwise = p.unary.detach(), p.pairwise.detach()
    if p.dtype not in _NUMPY_DTYPES:  # e.g. bfloat16, which numpy lacks
        unary, pairwise = unary.float(), pairwise.float()
    return unary.cpu().double().numpy(), pairwise.cpu().double().numpy()


def _binary_numpy(p: Potentials) -> tuple[np.ndarray, np.ndarray]:
    """``(linear [B, n], coupling [B, E])`` of :meth:`Potentials.binary_form` as float64 numpy,
    with one device transfer (float64 on the device where it has it, else on the CPU)."""
    p = p.detach()
    if p.device.type not in ("cpu", "cuda"):  # e.g. MPS, without float64
        p = p.to("cpu")
    form = p.binary_form(torch.float64)
    if p.device.type == "cpu":
        return form.linear.numpy(), form.coupling.numpy()
    n = p.num_vars
    flat = torch.cat([form.linear, form.coupling], dim=1).cpu().numpy()
    return flat[:, :n], flat[:, n:]


def _ref(t: torch.Tensor) -> tuple:
    """A weak reference to ``t`` with its in-place version counter."""
    return weakref.ref(t), t._version


def _is(ref: tuple, t: torch.Tensor) -> bool:
    """True when ``ref`` (from :func:`_ref`) still points at ``t``, unmodified since."""
    return ref[0]() is t and ref[1] == t._version


def _identity(p: Potentials) -> tuple:
    return _ref(p.unary), _ref(p.pairwise), _ref(p.edges)


def _same(identity: tuple, p: Potentials) -> bool:
    return all(map(_is, identity, (p.unary, p.pairwise, p.edges)))


@register("graphcut")
class GraphCutSolver(Solver):
    """Exact maximiser for ``K = 2`` with supermodular edges, by min-cut (PyMaxflow).

    Accepts any edge set as long as every table of every sample has a non-negative margin
    ``theta00 + theta11 - theta01 - theta10`` (the paper's ``theta_ij z_i z_j`` with
    ``theta_ij >= 0`` has margin ``theta_ij``; make couplings non-negative with softplus).
    The batch is one graph of ``B * n`` nodes solved by one C++ max-flow, in float64 on
    the CPU whatever the potentials' device and dtype; ``z`` comes back as long ``[B, n]``
    on the potentials' device. A variable free of any preference gets ``z = 0``.

    Args:
        tol: a margin is rejected when it is below ``-tol * max(1, max|table entries|)``
            (default ``1e-6``: absolute for entries up to 1, relative above). Margins in
            ``[-tol * scale, 0)`` are treated as 0, so the returned score is within
            ``tol * scale`` per such edge of the maximum.
    """

    name = "graphcut"
    num_states = 2
    supermodular_only = True

    def __init__(self, tol: float = DEFAULT_TOL) -> None:
        super().__init__()
        if not tol >= 0:
            raise ValueError(f"GraphCutSolver: tol must be >= 0, got {tol}")
        self.tol = float(tol)
        self._layouts: dict[tuple, _Layout] = {}
        self._last_layout: tuple | None = None  # (edges ref, (B, n), layout) of the last call
        self._pending: tuple | None = None  # (identity, tables) from check()

    # ------------------------------------------------------------------ tables
    def _tables(self, p: Potentials) -> tuple[np.ndarray, np.ndarray, _Layout]:
        """``(gain [B, n], margin w [B, E], layout)`` in float64; reuses what check() built."""
        pending, self._pending = self._pending, None
        if pending is not None and _same(pending[0], p):
            return pending[1]
        layout = self._layout(p)
        return (*layout.tables(*_binary_numpy(p)), layout)

    def _layout(self, p: Potentials) -> _Layout:
        """The cached layout for ``p``'s ``(B, n, edges)``; the same edges tensor as last time
        is recognised without reading it (no device copy)."""
        shape = (p.batch_size, p.num_vars)
        last = self._last_layout
        if last is not None and last[1] == shape and _is(last[0], p.edges):
            return last[2]
        edges = p.edges.cpu().numpy()
        key = (*shape, edges.tobytes())
        layout = self._layouts.get(key)
        if layout is None:
            if len(self._layouts) >= _CACHE_SIZE:
                self._layouts.pop(next(iter(self._layouts)))
            layout = self._layouts[key] = _Layout(p.batch_size, p.num_vars, edges)
        self._last_layout = (_ref(p.edges), shape, layout)
        return layout

    # ------------------------------------------------------------------- check
    def check(self, potentials: Potentials) -> None:
        """Also raise ``ValueError`` naming the first non-supermodular (sample, edge)."""
        super().check(potentials)
        if not potentials.has_edges or potentials.batch_size == 0:
            return
        tables = self._tables(potentials)
        self._raise_if_not_supermodular(potentials, tables[1])
        self._pending = (_identity(potentials), tables)  # the next solve() reuses them once

    def _raise_if_not_supermodular(self, p: Potentials, w: np.ndarray) -> None:
        if w.min() >= -self.tol:  # fast path: the threshold is never looser than -tol
            return
        scale = np.maximum(1.0, np.abs(_to_numpy(p)[1]).max(axis=(2, 3)))
        bad = np.argwhere(w < -self.tol * scale)
        if len(bad) == 0:
            return
        b, e = (int(x) for x in bad[0])
        i, j = p.edges[e].tolist()
        raise ValueError(
            f"solver {self.name!r} needs supermodular edges (theta00 + theta11 >= theta01 + "
            f"theta10), but sample {b}, edge {e} = ({i}, {j}) has margin {w[b, e]:.6g} "
            f"({len(bad)} offending table(s) in all, tolerance {self.tol:g} x max(1, |theta|)); "
            "use 'ilp' or 'exact' for such potentials, or make the coupling non-negative "
            "(e.g. softplus)"
        )

    # ------------------------------------------------------------------- graph
    def build_graph(
        self, potentials: Potentials, *, check: bool = True
    ) -> tuple[maxflow.GraphFloat, np.ndarray]:
        """The batch's min-cut graph, ready for ``maxflow()``, and its node ids ``[B, n]``.

        After ``graph.maxflow()``, ``z = graph.get_grid_segments(node_ids)`` (sink side: 1).
        ``check=False`` skips :meth:`check` (the caller has run it).
        """
        if check:
            self.check(potentials)
        gain, w, layout = self._tables(potentials)
        w = w.ravel()
        tail, head = layout.tail, layout.head
        if w.size and not w.min() > 0:  # drop zero (and tolerated negative) weights
            keep = w > 0
            w, tail, head = w[keep], tail[keep], head[keep]
        graph = maxflow.Graph[float](layout.size, w.size)
        graph.add_nodes(layout.size)
        if w.size:
            _add_arcs(graph, tail, head, w, layout.zeros[: w.size])
        graph.add_grid_tedges(layout.nodes, layout.zeros[: gain.size].reshape(gain.shape), gain)
        return graph, layout.nodes

    def solve(self, potentials: Potentials, hint: torch.Tensor | None = None) -> torch.Tensor:
        if potentials.batch_size == 0:
            return torch.zeros(0, potentials.num_vars, dtype=torch.long, device=potentials.device)
        graph, nodes = self.build_graph(potentials, check=False)
        graph.maxflow()
        z = torch.from_numpy(graph.get_grid_segments(nodes))
        return z.to(device=potentials.device, dtype=torch.long)

"""Exact max-product (and sum-product) dynamic programming on forests, batched on the device.

Each connected component is rooted at its lowest-numbered node and its nodes are put in
breadth-first levels. Messages go up one *level* at a time — every node at depth ``d`` sends
its message to its parent in a single batched tensor operation — and the assignment comes
back down the same way, so the Python loop runs over depths, never over nodes. The schedule
(roots, levels, edge orientation) is computed once per edge set on the CPU and cached; the
passes themselves are pure tensor code on the potentials' device.

:func:`forest_upward` is that upward pass, in max-product or (``logsumexp`` for ``max``)
sum-product form. :func:`tree_log_partition` is the sum-product one at the roots: the exact
log-partition function ``log sum_z exp h(z)`` of a forest, differentiable, whose gradient with
respect to the unary (pairwise) tables is the node (edge) marginals. The forest backend of
:mod:`structvae.inference` builds its marginals, entropy and exact samples on these.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import torch

from ..graphs import edges_to_graph
from ..potentials import Potentials
from .base import Solver, register

__all__ = [
    "TreeSolver",
    "tree_log_partition",
    "forest_schedule",
    "ForestSchedule",
    "forest_upward",
    "forest_argmax",
    "cached_schedule",
]

_CACHE_SIZE = 32


@dataclass(eq=False)
class ForestSchedule:
    """Roots and breadth-first levels of a forest; all edges oriented parent -> child.

    Attributes (numpy, CPU):
        roots: long ``[R]``: the lowest-numbered node of every connected component.
        order: long ``[E]``: the edge ids sorted by the depth of their child node.
        child, parent: long ``[E]``: the child and parent node of edge ``order[k]``.
        flip: bool ``[E]``: True where the child is the edge's first node ``i`` (so the
            table ``pairwise[b, e]``, indexed ``[z_i, z_j]``, is ``[child, parent]``).
        bounds: per depth ``1..D``, the slice ``(start, stop)`` of ``order`` at that depth.
    """

    n: int
    roots: np.ndarray
    order: np.ndarray
    child: np.ndarray
    parent: np.ndarray
    flip: np.ndarray
    bounds: list[tuple[int, int]]
    _on_device: dict = field(default_factory=dict, repr=False)

    @property
    def depth(self) -> int:
        return len(self.bounds)

    def on(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The index arrays as long/bool tensors on ``device`` (moved once, then cached)."""
        key = str(device)
        hit = self._on_device.get(key)
        if hit is None:
            hit = {
                name: torch.as_tensor(getattr(self, name)).to(device)
                for name in ("roots", "order", "child", "parent", "flip")
            }
            self._on_device[key] = hit
        return hit


def _cycle_message(graph: nx.Graph, who: str, advice: str) -> str:
    cycle = nx.find_cycle(graph)
    i, j = sorted(cycle[0][:2])
    path = "-".join(str(u) for u, _ in cycle) + f"-{cycle[0][0]}"
    return (
        f"{who} needs a forest, but the graph has a cycle through edge ({i}, {j}) "
        f"(cycle {path}); {advice}"
    )


def forest_schedule(
    edges: torch.Tensor, n: int, who: str = "tree", advice: str = ""
) -> ForestSchedule:
    """The rooting and breadth-first levels of the forest ``edges`` ``[E, 2]`` on ``n`` nodes.

    Raises ``ValueError`` naming an edge on a cycle when the graph is not a forest.
    """
    e = edges.detach().cpu().long().numpy().reshape(-1, 2)
    graph = edges_to_graph(torch.as_tensor(e), n)
    if not nx.is_forest(graph):
        raise ValueError(_cycle_message(graph, who, advice or "use 'exact', 'graphcut' or 'ilp'"))
    adj: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for k, (i, j) in enumerate(e.tolist()):
        adj[i].append((j, k))
        adj[j].append((i, k))
    depth = np.full(n, -1, dtype=np.int64)
    parent_of = np.full(n, -1, dtype=np.int64)
    edge_of = np.full(n, -1, dtype=np.int64)
    roots = []
    for r in range(n):  # the lowest node of each component is met first
        if depth[r] >= 0:
            continue
        roots.append(r)
        depth[r] = 0
        frontier = [r]
        while frontier:
            nxt = []
            for u in frontier:
                for v, k in adj[u]:
                    if depth[v] < 0:
                        depth[v] = depth[u] + 1
                        parent_of[v] = u
                        edge_of[v] = k
                        nxt.append(v)
            frontier = nxt
    children = np.flatnonzero(depth > 0)
    children = children[np.argsort(depth[children], kind="stable")]
    d = depth[children]
    max_depth = int(d.max()) if d.size else 0
    starts = np.searchsorted(d, np.arange(1, max_depth + 2))
    bounds = [(int(starts[k]), int(starts[k + 1])) for k in range(max_depth)]
    order = edge_of[children]
    return ForestSchedule(
        n=n,
        roots=np.asarray(roots, dtype=np.int64),
        order=order.astype(np.int64),
        child=children.astype(np.int64),
        parent=parent_of[children].astype(np.int64),
        flip=(e[order, 0] == children) if order.size else np.zeros(0, dtype=bool),
        bounds=bounds,
    )


class _ScheduleCache:
    """Schedules per ``(n, edges)``; a repeat call with the very same edges tensor skips the
    device-to-host copy that looking the edges up by value would need."""

    def __init__(self, size: int = _CACHE_SIZE) -> None:
        self.size = size
        self._by_value: OrderedDict[tuple, ForestSchedule] = OrderedDict()
        self._last: tuple | None = None  # (edges tensor, version, n, schedule)

    def get(self, edges: torch.Tensor, n: int, who: str, advice: str = "") -> ForestSchedule:
        last = self._last
        if last is not None and last[0] is edges and last[1] == edges._version and last[2] == n:
            return last[3]
        key = (n, tuple(edges.detach().cpu().flatten().tolist()))
        sched = self._by_value.get(key)
        if sched is None:
            sched = forest_schedule(edges, n, who, advice)
            self._by_value[key] = sched
            while len(self._by_value) > self.size:
                self._by_value.popitem(last=False)
        else:
            self._by_value.move_to_end(key)
        self._last = (edges, edges._version, n, sched)
        return sched


_GLOBAL_CACHE = _ScheduleCache()


def _compute_dtype(p: Potentials) -> torch.dtype:
    return torch.promote_types(p.dtype, torch.float32)


def _oriented_tables(
    p: Potentials, idx: dict[str, torch.Tensor], dtype: torch.dtype
) -> torch.Tensor:
    """Pairwise tables in schedule order, indexed ``[b, k, z_parent, z_child]``: ``[B, E, K, K]``."""
    t = p.pairwise.index_select(1, idx["order"]).to(dtype)
    return torch.where(idx["flip"][None, :, None, None], t.transpose(-1, -2), t)


def forest_upward(
    p: Potentials, sched: ForestSchedule, max_product: bool
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """The upward pass: ``(belief [B, n, K], tables [B, E, Kp, Kc], back)``.

    ``belief[b, v]`` is ``unary[b, v]`` plus the messages from ``v``'s children: for a root
    the max (``max_product``) or the log-sum-exp of the scores of its whole component.
    ``tables`` are the pairwise tables in schedule order, indexed ``[z_parent, z_child]``.
    ``back[d]`` ``[B, m_d, Kp]``: the best child state per parent state at depth ``d + 1``
    (max-product only; empty otherwise). Sum-product is differentiable (out of place);
    max-product updates its belief in place. Float32 or wider.
    """
    dtype = _compute_dtype(p)
    idx = sched.on(p.device)
    child, parent = idx["child"], idx["parent"]
    tables = _oriented_tables(p, idx, dtype)
    belief = p.unary.to(dtype, copy=max_product)
    back: list[torch.Tensor] = [None] * sched.depth if max_product else []  # type: ignore[list-item]
    for d in range(sched.depth - 1, -1, -1):
        s, t = sched.bounds[d]
        scores = tables[:, s:t] + belief.index_select(1, child[s:t]).unsqueeze(-2)  # [B,m,Kp,Kc]
        if max_product:
            best, back[d] = scores.max(-1)  # [B, m, Kp]
            belief.index_add_(1, parent[s:t], best)
        else:
            belief = belief.index_add(1, parent[s:t], torch.logsumexp(scores, -1))
    return belief, tables, back


@torch.no_grad()
def forest_argmax(p: Potentials, sched: ForestSchedule) -> torch.Tensor:
    """Exact arg max ``[B, n]`` of forest potentials by max-product and back-tracking."""
    if sched.depth == 0:
        return p.unary.argmax(-1)
    belief, _, back = forest_upward(p, sched, max_product=True)
    idx = sched.on(p.device)
    child, parent, roots = idx["child"], idx["parent"], idx["roots"]
    z = torch.empty(p.unary.shape[:2], dtype=torch.long, device=p.device)
    z[:, roots] = belief.index_select(1, roots).argmax(-1)
    for d in range(sched.depth):
        s, t = sched.bounds[d]
        zp = z.index_select(1, parent[s:t]).unsqueeze(-1)  # [B, m, 1]
        z[:, child[s:t]] = back[d].gather(-1, zp).squeeze(-1)
    return z


@register("tree")
class TreeSolver(Solver):
    """Exact arg max on forests (any K) by batched max-product dynamic programming.

    Each component is rooted at its lowest node; messages go up the breadth-first levels
    (one batched op per depth), then the roots take the arg max of their belief and the
    back-pointers carry the assignment down. Runs on the potentials' device in float32 or
    wider (half-precision input is upcast). The schedule is cached per ``(n, edges)``.
    Refuses graphs with a cycle.
    """

    name = "tree"

    def __init__(self) -> None:
        super().__init__()
        self._cache = _ScheduleCache()

    def schedule(self, potentials: Potentials) -> ForestSchedule:
        """The (cached) forest schedule of ``potentials``' edges; ``ValueError`` on a cycle."""
        return self._cache.get(potentials.edges, potentials.num_vars, f"solver {self.name!r}")

    def check(self, potentials: Potentials) -> None:
        super().check(potentials)
        self.schedule(potentials)

    @torch.no_grad()
    def solve(self, potentials: Potentials, hint: torch.Tensor | None = None) -> torch.Tensor:
        return forest_argmax(potentials, self.schedule(potentials))


def cached_schedule(p: Potentials, who: str, advice: str = "") -> ForestSchedule:
    """The forest schedule of ``p``'s edges from a module-wide cache; ``ValueError`` naming
    ``who`` (and ``advice``) on a cycle."""
    return _GLOBAL_CACHE.get(p.edges, p.num_vars, who, advice)


def tree_log_partition(potentials: Potentials) -> torch.Tensor:
    """Exact ``log sum_z exp h(z)`` on a forest by sum-product in log space: ``[B]``.

    Differentiable in the unary and pairwise tables (the gradient with respect to
    ``unary[b, i, k]`` is the marginal ``p_b(z_i = k)``). Computed in float32 or wider and
    returned in that dtype. Raises ``ValueError`` when the graph has a cycle. The forest
    backend of :class:`structvae.inference.Gibbs` (marginals, entropy, sampling) builds on it.
    """
    if not isinstance(potentials, Potentials):
        raise ValueError(
            f"tree_log_partition expects a structvae.Potentials, got {type(potentials).__name__}"
        )
    p = potentials
    if not p.has_edges:  # closed form, without looking up a schedule
        return torch.logsumexp(p.unary.to(_compute_dtype(p)), -1).sum(-1)
    sched = cached_schedule(
        p,
        "tree_log_partition",
        "use structvae.inference.Gibbs(p, backend='enumerate') for small problems",
    )
    if sched.depth == 0:
        return torch.logsumexp(p.unary.to(_compute_dtype(p)), -1).sum(-1)
    belief, _, _ = forest_upward(p, sched, max_product=False)
    roots = sched.on(p.device)["roots"]
    return torch.logsumexp(belief.index_select(1, roots), -1).sum(-1)

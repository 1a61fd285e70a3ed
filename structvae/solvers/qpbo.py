"""Persistencies of binary pairwise problems by roof duality (QPBO), batched in one max-flow.

For ``K = 2`` and *any* 2x2 edge tables, roof duality (Hammer, Hansen and Simeone 1984;
Boros and Hammer 2002; the "QPBO" graph construction of Kolmogorov and Rother 2007)
fixes part of the variables to values that some maximiser shares (*weak persistency*):
the remaining problem over the free variables can then be handed to an exact solver,
and the maximiser it finds, completed by the fixed values, is a maximiser of the whole.

**Construction.** We maximise ``h``, i.e. minimise the energy ``F = -h``. Every variable
``x_p`` gets two graph nodes, ``p`` (standing for ``x_p``) and ``p~`` (standing for
``1 - x_p``); a node's label ``y`` is 1 on the sink side of the cut. The doubled energy

    F'(y) = sum_p F_p(y_p) + F_p(1 - y_p~)
          + sum_(p,q) submodular   F_pq(y_p, y_q) + F_pq(1 - y_p~, 1 - y_q~)
          + sum_(p,q) otherwise    F_pq(y_p, 1 - y_q~) + F_pq(1 - y_p~, y_q)

is submodular in ``y`` (an edge is submodular in ``F`` when ``h``'s table is
supermodular, ``theta00 + theta11 >= theta01 + theta10``), equals ``2 F(x)`` whenever
``y_p~ = 1 - y_p`` for all ``p``, and is minimised by one min-cut. Each piece
``g(a, b)`` on nodes ``(u, v)`` is written ``g00 + (g10 - g00) a + (g11 - g10) b +
w (1 - a) b`` with ``w = g01 + g10 - g00 - g11 >= 0``: the linear parts become terminal
capacities, ``w`` the arc ``u -> v``. The whole batch is one graph of ``2 B n`` nodes in
disjoint components, built with vectorised calls and solved by a single ``maxflow()``.

**Read-off.** With ``y`` the minimum cut (PyMaxflow's: a node is on the sink side iff it
reaches the sink in the residual graph), variable ``p`` is fixed to ``y_p`` when
``y_p~ = 1 - y_p`` (roof duality's persistent partial labelling, valid for any minimum
cut). Then, optionally (``extend=True``, the default), every connected component of the
*unlabelled* variables (joined by the edges between them) whose internal edges are all
submodular is fixed to its primal labels ``y_p`` as well: such a component's primal nodes
touch only each other and nodes of labelled variables (whose two nodes agree with the
labelling), so ``y`` restricted to them minimises the component's energy given the
labelled variables, and the component is independent of the other free variables.
This labels every variable of a supermodular problem even with ties (where plain QPBO
leaves tied variables unlabelled), and for such problems the labelling is a maximiser.

Everything is computed in float64 on the CPU; the max-flow's round-off can matter only
for assignments whose scores differ by ~1e-12 relative.
"""

from __future__ import annotations

import maxflow
import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..potentials import Potentials

__all__ = ["qpbo_persistencies", "reduce_potentials", "persistencies_numpy", "binary_tables"]


def persistencies_numpy(
    unary: np.ndarray, edges: np.ndarray, pairwise: np.ndarray, extend: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """QPBO on float64 numpy arrays: ``(fixed bool [B, n], values int64 [B, n])``.

    ``unary [B, n, 2]``, ``edges [E, 2]``, ``pairwise [B, E, 2, 2]`` (maximisation).
    ``values`` of unfixed variables are the primal labels of the cut (meaningless).
    """
    B, n, _ = unary.shape
    E = edges.shape[0]
    N = 2 * n  # graph nodes per sample: p (x_p) then p~ (1 - x_p)
    if B == 0:
        return np.zeros((0, n), dtype=bool), np.zeros((0, n), dtype=np.int64)
    base = (np.arange(B, dtype=np.int64) * N)[:, None]
    # cost of y = 1 (sink side) per node; unary energy F_p = -unary_p
    d = unary[..., 0] - unary[..., 1]  # F_p(1) - F_p(0)
    lin = np.concatenate([d, -d], axis=1).ravel()  # F_p(1 - y) on p~
    if E:
        F = -pairwise  # [B, E, 2, 2] energy tables
        margin = F[..., 0, 1] + F[..., 1, 0] - F[..., 0, 0] - F[..., 1, 1]
        sub = margin >= 0  # submodular energy (supermodular h)
        sub4 = sub[..., None, None]
        i, j = edges[:, 0][None], edges[:, 1][None]
        # piece 1 on (i, j): F(a, b), or on (i, j~): F(a, 1 - b)
        t1 = np.where(sub4, F, F[..., :, ::-1])
        u1 = np.broadcast_to(i, (B, E))
        v1 = np.where(sub, j, j + n)
        # piece 2 on (i~, j~): F(1 - a, 1 - b), or on (i~, j): F(1 - a, b)
        t2 = np.where(sub4, F[..., ::-1, ::-1], F[..., ::-1, :])
        u2 = np.broadcast_to(i + n, (B, E))
        v2 = np.where(sub, j + n, j)
        us = np.concatenate([u1 + base, u2 + base], axis=1).ravel()
        vs = np.concatenate([v1 + base, v2 + base], axis=1).ravel()
        t = np.concatenate([t1, t2], axis=1).reshape(-1, 2, 2)
        idx = np.concatenate([us, vs])
        w = np.concatenate([t[:, 1, 0] - t[:, 0, 0], t[:, 1, 1] - t[:, 1, 0]])
        lin = lin + np.bincount(idx, weights=w, minlength=B * N)
        cap = np.abs(np.concatenate([margin, margin], axis=1)).ravel()
        keep = cap > 0
        us, vs, cap = us[keep], vs[keep], cap[keep]
    else:
        us = vs = np.zeros(0, dtype=np.int64)
        cap = np.zeros(0)
        sub = None
    graph = maxflow.Graph[float](B * N, max(cap.size, 1))
    nodes = graph.add_nodes(B * N)
    nodes = np.arange(nodes, nodes + B * N, dtype=np.int64) if np.isscalar(nodes) else nodes
    if cap.size:
        graph.add_edges(us, vs, cap, np.zeros_like(cap))
    graph.add_grid_tedges(nodes, lin, np.zeros_like(lin))
    graph.maxflow()
    y = graph.get_grid_segments(nodes).reshape(B, N)  # True: sink side, y = 1
    yp, yb = y[:, :n], y[:, n:]
    fixed = yp != yb
    values = yp.astype(np.int64)
    if extend and not fixed.all():
        fixed = fixed | _supermodular_free_components(~fixed, edges, sub)
    return fixed, values


def _supermodular_free_components(
    free: np.ndarray, edges: np.ndarray, sub: np.ndarray | None
) -> np.ndarray:
    """Free variables ``[B, n]`` whose component among the free ones has only submodular edges."""
    B, n = free.shape
    if sub is None:
        return free
    both = free[:, edges[:, 0]] & free[:, edges[:, 1]]  # [B, E] edges among free variables
    if not both.any():
        return free
    bb, ee = np.nonzero(both)
    rows = bb * n + edges[ee, 0]
    cols = bb * n + edges[ee, 1]
    adj = coo_matrix((np.ones(rows.size), (rows, cols)), shape=(B * n, B * n)).tocsr()
    ncomp, comp = connected_components(adj, directed=False)
    bad = np.zeros(ncomp, dtype=bool)
    bad[comp[rows[~sub[bb, ee]]]] = True
    return free & ~bad[comp].reshape(B, n)


def binary_tables(p: Potentials) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(unary [B, n, 2], edges [E, 2], pairwise [B, E, 2, 2])`` float64 numpy tables of the
    binary form (:meth:`~structvae.Potentials.binary_form`): unary ``(0, linear_i)``, edge
    tables ``[[0, 0], [0, coupling_e]]``. The same scores up to a per-sample constant, so the
    same persistencies (the doubled energy of roof duality is unchanged by a
    reparametrisation, and the cut read off is the one its minimisers determine)."""
    form = p.detach().to("cpu", torch.float64).binary_form()
    lin, w = form.linear.numpy(), form.coupling.numpy()
    unary = np.stack([np.zeros_like(lin), lin], axis=-1)
    pairwise = np.zeros(w.shape + (2, 2))
    pairwise[..., 1, 1] = w
    return unary, p.edges.cpu().numpy(), pairwise


def qpbo_persistencies(
    potentials: Potentials, extend: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weakly persistent partial labelling of a binary batch by roof duality (QPBO).

    Returns ``(fixed, values)``: bool ``[B, n]`` and long ``[B, n]`` on the potentials'
    device. Some maximiser ``z`` of each sample has ``z[fixed] = values[fixed]``;
    ``values`` of unfixed variables carry no meaning. See the module docstring for the
    construction and for ``extend`` (label also the unlabelled components that have only
    supermodular edges; with it every variable of a supermodular problem is fixed).

    Raises ``ValueError`` unless ``K = 2``.
    """
    if not isinstance(potentials, Potentials):
        raise ValueError(
            f"qpbo_persistencies expects a structvae.Potentials, got {type(potentials).__name__}"
        )
    if potentials.num_states != 2:
        raise ValueError(
            f"qpbo_persistencies needs K = 2 states per variable, got K = {potentials.num_states}"
        )
    fixed, values = persistencies_numpy(*binary_tables(potentials), extend=extend)
    dev = potentials.device
    return torch.as_tensor(fixed, device=dev), torch.as_tensor(values, device=dev)


def reduce_potentials(
    potentials: Potentials, fixed: torch.Tensor, values: torch.Tensor
) -> tuple[Potentials, torch.Tensor]:
    """Fold fixed variables into the free ones: ``(reduced, offset [B])``, any ``K``.

    ``reduced`` has the same shape and edges; for every ``z`` that agrees with ``values``
    on the ``fixed`` variables, ``potentials.score(z) == reduced.score(z) + offset``. In
    ``reduced`` a fixed variable has zero unary terms and every edge touching a fixed
    variable has a zero table (its terms moved into the free endpoint's unary terms, or
    into ``offset`` when both ends are fixed), so ``reduced`` does not depend on the fixed
    variables: a maximiser of it, with the fixed variables set to ``values``, maximises
    ``potentials`` among assignments that agree with the fixed values. Differentiable in
    the potentials.
    """
    p = potentials
    B, n, K = p.unary.shape
    fixed = torch.as_tensor(fixed, device=p.device).to(torch.bool)
    values = torch.as_tensor(values, device=p.device).to(torch.long)
    if fixed.shape != (B, n) or values.shape != (B, n):
        raise ValueError(
            f"reduce_potentials: fixed and values must have shape [B, n] = [{B}, {n}], got "
            f"{list(fixed.shape)} and {list(values.shape)}"
        )
    values = torch.where(fixed, values, torch.zeros_like(values))
    if values.numel() and (int(values.min()) < 0 or int(values.max()) >= K):
        raise ValueError(f"reduce_potentials: fixed values must lie in [0, {K - 1}]")
    fx = fixed.to(p.dtype)
    offset = (p.unary.gather(-1, values[..., None])[..., 0] * fx).sum(-1)
    unary = p.unary * (1 - fx)[..., None]
    pairwise = p.pairwise
    if p.has_edges:
        i, j = p.edges[:, 0], p.edges[:, 1]
        fi, fj = fx[:, i], fx[:, j]  # [B, E]
        E = p.num_edges
        vi = values[:, i][:, :, None, None].expand(B, E, 1, K)
        vj = values[:, j][:, :, None, None].expand(B, E, K, 1)
        row = pairwise.gather(2, vi)[:, :, 0]  # [B, E, K]: table[v_i, :]
        col = pairwise.gather(3, vj)[..., 0]  # [B, E, K]: table[:, v_j]
        both = fi * fj
        unary = unary.index_add(1, j, row * (fi * (1 - fj))[..., None])
        unary = unary.index_add(1, i, col * ((1 - fi) * fj)[..., None])
        corner = row.gather(-1, values[:, j][..., None])[..., 0]  # table[v_i, v_j]
        offset = offset + (corner * both).sum(-1)
        keep = (1 - fi) * (1 - fj)
        pairwise = pairwise * keep[..., None, None]
    return Potentials(unary, p.edges, pairwise, validate=False), offset

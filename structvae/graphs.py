"""Edge sets for pairwise potentials: builders and checks.

Every builder returns a LongTensor ``[E, 2]`` with ``i < j`` in each row, rows sorted and
unique — the canonical form :class:`structvae.Potentials` accepts.
"""

from __future__ import annotations

import networkx as nx
import torch

__all__ = [
    "complete_edges",
    "chain_edges",
    "grid_edges",
    "edges_from_graph",
    "make_edges",
    "edges_to_graph",
    "is_forest",
    "GRAPH_KINDS",
]

GRAPH_KINDS = ("none", "complete", "chain", "grid", "tree")


def _canonical(pairs: list[tuple[int, int]]) -> torch.Tensor:
    rows = sorted({(min(i, j), max(i, j)) for i, j in pairs if i != j})
    if not rows:
        return torch.zeros(0, 2, dtype=torch.long)
    return torch.tensor(rows, dtype=torch.long)


def complete_edges(n: int) -> torch.Tensor:
    """All ``n (n - 1) / 2`` pairs ``(i, j)``, ``i < j``: LongTensor ``[E, 2]``."""
    if n < 1:
        raise ValueError(f"complete_edges: n must be >= 1, got {n}")
    return torch.triu_indices(n, n, offset=1).t().contiguous()


def chain_edges(n: int) -> torch.Tensor:
    """The path ``0-1-...-(n-1)``: LongTensor ``[n - 1, 2]``."""
    if n < 1:
        raise ValueError(f"chain_edges: n must be >= 1, got {n}")
    i = torch.arange(n - 1)
    return torch.stack([i, i + 1], dim=1)


def grid_edges(height: int, width: int) -> torch.Tensor:
    """4-connected ``height x width`` grid, variables numbered row-major: ``[E, 2]``."""
    if height < 1 or width < 1:
        raise ValueError(f"grid_edges: height and width must be >= 1, got {height}x{width}")
    pairs = []
    for r in range(height):
        for c in range(width):
            v = r * width + c
            if c + 1 < width:
                pairs.append((v, v + 1))
            if r + 1 < height:
                pairs.append((v, v + width))
    return _canonical(pairs)


def edges_from_graph(graph: nx.Graph, n: int | None = None) -> torch.Tensor:
    """Edges of a ``networkx.Graph`` whose nodes are the integers ``0..n-1``: ``[E, 2]``."""
    nodes = list(graph.nodes)
    if any(not isinstance(v, int) or v < 0 for v in nodes):
        raise ValueError(
            "edges_from_graph: graph nodes must be the integers 0..n-1; "
            "relabel with networkx.convert_node_labels_to_integers(graph)"
        )
    if n is not None and nodes and max(nodes) >= n:
        raise ValueError(f"edges_from_graph: graph has node {max(nodes)} but n = {n}")
    return _canonical(list(graph.edges))


def _square_side(n: int) -> tuple[int, int]:
    h = int(round(n**0.5))
    while h > 1 and n % h:
        h -= 1
    return h, n // h


def make_edges(spec: str | nx.Graph | torch.Tensor | None, n: int) -> torch.Tensor:
    """Edges for ``n`` variables from a name, a graph or a tensor.

    ``spec``: ``None``/``"none"`` (no edges), ``"complete"``, ``"chain"``, ``"grid"`` (the most
    square ``h x w = n`` grid), ``"tree"`` (a balanced binary tree: node ``i``'s parent is
    ``(i - 1) // 2``), a ``networkx.Graph`` or an ``[E, 2]`` tensor.
    """
    if spec is None or (isinstance(spec, str) and spec == "none"):
        return torch.zeros(0, 2, dtype=torch.long)
    if isinstance(spec, torch.Tensor):
        return spec.long()
    if isinstance(spec, nx.Graph):
        return edges_from_graph(spec, n)
    if spec == "complete":
        return complete_edges(n)
    if spec == "chain":
        return chain_edges(n)
    if spec == "grid":
        return grid_edges(*_square_side(n))
    if spec == "tree":
        return _canonical([((i - 1) // 2, i) for i in range(1, n)])
    raise ValueError(
        f"unknown graph {spec!r}; choose one of {GRAPH_KINDS} or pass a networkx.Graph"
    )


def edges_to_graph(edges: torch.Tensor, n: int) -> nx.Graph:
    """A ``networkx.Graph`` on nodes ``0..n-1`` with the given ``[E, 2]`` edges."""
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from(edges.tolist())
    return g


def is_forest(edges: torch.Tensor, n: int) -> bool:
    """True when the undirected graph on ``n`` nodes with these edges has no cycle."""
    return nx.is_forest(edges_to_graph(edges, n))

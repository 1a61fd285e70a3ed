"""Time the arg-max solvers on random supermodular binary potentials; print markdown tables.

    python experiments/bench_solvers.py [--quick] [--solvers graphcut exact ...]
                                        [--batch 1 32 ...] [--n 8 20 ...] [--graphs chain ...]

Every problem is the paper's binary form ``h(z) = sum_i theta_i z_i + sum_ij c_ij z_i z_j``
with ``theta ~ N(0, 1)`` and ``c = softplus(N(0, 1)) / max(1, mean degree)``: non-negative
couplings (so every solver applies) whose total per variable is of the order of the unary
term, so the cut is not trivial. Float32 potentials on the CPU; each cell is the median of
several ``time.perf_counter`` repeats (garbage collector paused, as ``timeit`` does) of one
call on the whole batch, after one warm-up call (a solver whose warm-up exceeds
``--budget`` seconds is timed by that call alone).

The second table compares batched ``graphcut`` (one graph, one max-flow per batch) with
``graphcut_loop`` (one PyMaxflow graph per sample, built with per-edge ``add_edge`` and
per-node ``add_tedge`` calls, as the paper's reference code does) and with the bare
``maxflow()`` call on the batch's prebuilt graph, the three timed in turn, round after
round, so that machine load hits them alike. Timings printed, never asserted.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import maxflow
import numpy as np
import torch

import structvae as sv
from structvae.solvers import get_solver

for _module in ("graphcut", "ilp", "tree"):  # register the optional solvers that exist
    try:
        importlib.import_module(f"structvae.solvers.{_module}")
    except ImportError:
        pass

SOLVERS = ["independent", "exact", "graphcut", "ilp", "tree"]
BATCHES = [1, 32, 128, 512]
SIZES = [8, 15, 20, 40]
GRAPHS = ["none", "chain", "complete"]
QUICK = {"batch": [1, 128], "n": [8, 20], "graphs": ["chain", "complete"], "repeats": 3}
EXACT_MAX_ASSIGNMENTS = 2**20
EXACT_MAX_DESIGN = 2**25  # larger design matrices are rebuilt on every call: seconds each


# ------------------------------------------------------------------- problems
def make_potentials(graph: str, n: int, B: int, seed: int = 0) -> sv.Potentials:
    """Random supermodular binary potentials (see the module docstring), float32."""
    gen = torch.Generator().manual_seed(seed)
    edges = sv.make_edges(graph, n)
    degree = max(1.0, 2 * edges.shape[0] / n)
    theta = torch.randn(B, n, generator=gen)
    coupling = torch.nn.functional.softplus(torch.randn(B, edges.shape[0], generator=gen))
    return sv.Potentials.binary(theta, edges, coupling / degree)


def graphcut_loop(potentials: sv.Potentials) -> torch.Tensor:
    """Reference: one PyMaxflow graph per sample, one Python call per edge and per node.

    Same reparametrisation as the batched solver (edge ``(i, j)`` with table
    ``[[a, b], [c, d]]`` gives ``c - a`` to ``i``, ``d - c`` to ``j`` and an arc ``i -> j``
    of capacity ``a + d - b - c``; a node's gain is its sink capacity; ``z`` = sink side).
    """
    unary, edges, pairwise = potentials.numpy()
    edge_list = edges.tolist()
    z = np.zeros(unary.shape[:2], dtype=np.int64)
    for b in range(unary.shape[0]):
        graph = maxflow.Graph[float]()
        nodes = graph.add_nodes(unary.shape[1]).tolist()
        gain = (unary[b, :, 1] - unary[b, :, 0]).tolist()
        for (i, j), ((t00, t01), (t10, t11)) in zip(edge_list, pairwise[b].tolist(), strict=True):
            gain[i] += t10 - t00
            gain[j] += t11 - t10
            graph.add_edge(nodes[i], nodes[j], t00 + t11 - t01 - t10, 0.0)
        for node, g in zip(nodes, gain, strict=True):
            graph.add_tedge(node, 0.0, g)
        graph.maxflow()
        z[b] = [graph.get_segment(node) for node in nodes]
    return torch.from_numpy(z)


def graphcut_loop_elementwise(potentials: sv.Potentials) -> torch.Tensor:
    """Reference in the style of research code: per sample, the sample's tensors are moved to
    numpy, then every node and edge is read as a numpy scalar and added with its own call.

    Same graph as :func:`graphcut_loop`; only the Python-side access pattern differs.
    """
    z = torch.zeros(potentials.batch_size, potentials.num_vars, dtype=torch.long)
    edges = potentials.edges.cpu().numpy()
    for b in range(potentials.batch_size):
        unary = potentials.unary[b].detach().cpu().numpy().astype(float)
        pairwise = potentials.pairwise[b].detach().cpu().numpy().astype(float)
        graph = maxflow.Graph[float]()
        nodes = graph.add_nodes(unary.shape[0])
        gain = unary[:, 1] - unary[:, 0]
        for e in range(edges.shape[0]):
            i, j = edges[e, 0], edges[e, 1]
            t = pairwise[e]
            gain[i] += t[1, 0] - t[0, 0]
            gain[j] += t[1, 1] - t[1, 0]
            graph.add_edge(nodes[i], nodes[j], t[0, 0] + t[1, 1] - t[0, 1] - t[1, 0], 0.0)
        for i in range(unary.shape[0]):
            graph.add_tedge(nodes[i], 0.0, gain[i])
        graph.maxflow()
        z[b] = torch.tensor([graph.get_segment(node) for node in nodes])
    return z


# --------------------------------------------------------------------- timing
def timed(fn: Callable[[], object]) -> Callable[[], float]:
    """A timer: calls ``fn`` and returns the seconds it took (garbage collector paused, as in
    ``timeit``: the per-sample loop's many small objects would otherwise trigger collections
    of the whole heap at random points)."""

    def run() -> float:
        gc.disable()
        try:
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start
        finally:
            gc.enable()

    return run


def bare_maxflow(solver, potentials: sv.Potentials) -> Callable[[], float]:
    """A timer of ``graph.maxflow()`` alone, on a batch graph prebuilt (untimed) each call."""

    def run() -> float:
        graph, _ = solver.build_graph(potentials)
        return timed(graph.maxflow)()

    return run


def median_ms(fn: Callable[[], object], repeats: int, budget_s: float) -> float:
    """Median wall time of ``fn()`` in ms over ``repeats`` calls after one warm-up call.

    A warm-up slower than ``budget_s`` is the only measurement (no repeats).
    """
    first = timed(fn)()
    if first > budget_s:
        return 1e3 * first
    return 1e3 * statistics.median(timed(fn)() for _ in range(repeats))


def interleaved_ms(timers: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Median ms of each timer, called in turn round after round (after one warm-up round),
    so that all of them see the same machine load."""
    samples = {name: [] for name in timers}
    for round_ in range(repeats + 1):
        for name, timer in timers.items():
            elapsed = timer()
            if round_:
                samples[name].append(elapsed)
    return {name: 1e3 * statistics.median(v) for name, v in samples.items()}


# ---------------------------------------------------------------- applicability
def skip_reason(name: str, solver, p: sv.Potentials, args) -> str | None:
    """Why ``solver`` is not timed on ``p`` ("n/a": unsupported, "skip": too slow), or None."""
    if not solver.supports(p):
        return "skip" if name == "exact" else "n/a"
    if name == "ilp" and p.batch_size > args.ilp_max_batch:
        return "skip"
    if name == "exact":
        design = 2**p.num_vars * (2 * p.num_vars + 4 * p.num_edges)  # entries of its design
        if design > EXACT_MAX_DESIGN or p.batch_size * design > args.exact_max_work:
            return "skip"
    return None


def build_solvers(names: list[str]) -> dict:
    solvers = {}
    for name in names:
        options = {"max_assignments": EXACT_MAX_ASSIGNMENTS} if name == "exact" else {}
        try:
            solvers[name] = get_solver(name, **options)
        except ValueError as err:
            print(f"note: solver {name!r} unavailable ({err})", file=sys.stderr)
    return solvers


# ---------------------------------------------------------------------- output
def machine_info() -> str:
    return (
        f"machine: {platform.platform()} ({platform.machine()}), {os.cpu_count()} CPUs, "
        f"python {platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), numpy {np.__version__}, "
        f"PyMaxflow {maxflow.__version__}"
    )


def markdown(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(ms: float | str) -> str:
    """Milliseconds to three significant digits; strings (skip reasons) pass through."""
    return ms if isinstance(ms, str) else f"{ms:.3g}"


# ------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small subset, under a minute")
    ap.add_argument("--solvers", nargs="+", default=SOLVERS, metavar="NAME")
    ap.add_argument("--batch", nargs="+", type=int, default=None, metavar="B")
    ap.add_argument("--n", nargs="+", type=int, default=None, metavar="N")
    ap.add_argument(
        "--graphs", nargs="+", default=None, choices=["none", "chain", "complete", "grid", "tree"]
    )
    ap.add_argument(
        "--repeats", type=int, default=None, help="timed calls per cell (default 7, quick 3)"
    )
    ap.add_argument(
        "--budget", type=float, default=2.0, help="seconds: slower warm-ups are not repeated"
    )
    ap.add_argument(
        "--ilp-max-batch", type=int, default=32, help="skip 'ilp' above this batch size"
    )
    ap.add_argument(
        "--exact-max-work",
        type=float,
        default=2e9,
        help="skip 'exact' above B*2^n*(2n+4E) (or 2^n*(2n+4E) > 2^25)",
    )
    ap.add_argument("--no-loop", action="store_true", help="skip the graphcut ratio table")
    args = ap.parse_args(argv)
    defaults = (
        QUICK if args.quick else {"batch": BATCHES, "n": SIZES, "graphs": GRAPHS, "repeats": 7}
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def time_solvers(solvers: dict, p: sv.Potentials, args) -> dict[str, float | str]:
    """ms per batch for each solver on ``p``, or the reason it was not timed."""
    return {
        name: skip_reason(name, solver, p, args)
        or median_ms(lambda s=solver: s(p), args.repeats, args.budget)
        for name, solver in solvers.items()
    }


def graphcut_ratios(solver, p: sv.Potentials, args) -> list[str]:
    """``[batched, loop, loop/batched, elementwise, elementwise/batched, maxflow,
    batched/maxflow]`` for one problem."""
    best = p.score(solver(p))
    for loop in (graphcut_loop, graphcut_loop_elementwise):
        same = torch.allclose(p.score(loop(p)), best, atol=1e-4)
        assert same, f"{loop.__name__} and the batched solver disagree on {p}"
    timers = {
        "batched": timed(lambda: solver(p)),
        "loop": timed(lambda: graphcut_loop(p)),
        "elementwise": timed(lambda: graphcut_loop_elementwise(p)),
        "maxflow": bare_maxflow(solver, p),
    }
    ms = interleaved_ms(timers, max(args.repeats, 5))
    return [
        *map(fmt, (ms["batched"], ms["loop"])),
        f"{ms['loop'] / ms['batched']:.1f}x",
        fmt(ms["elementwise"]),
        f"{ms['elementwise'] / ms['batched']:.1f}x",
        fmt(ms["maxflow"]),
        f"{ms['batched'] / ms['maxflow']:.2f}x",
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    solvers = build_solvers(args.solvers)
    print(machine_info())
    print(f"potentials: binary, float32, cpu; median of {args.repeats} calls; ms per batch\n")
    rows, ratio_rows = [], []
    for graph in args.graphs:
        for n in args.n:
            for B in args.batch:
                p = make_potentials(graph, n, B)
                times = time_solvers(solvers, p, args)
                rows.append([graph, n, B, p.num_edges, *map(fmt, times.values())])
                if isinstance(times.get("graphcut"), float) and p.has_edges and not args.no_loop:
                    ratio_rows.append([graph, n, B, *graphcut_ratios(solvers["graphcut"], p, args)])
                print(f"  done {graph} n={n} B={B}", file=sys.stderr, flush=True)
    print(markdown(["graph", "n", "B", "E", *solvers], rows))
    if ratio_rows:
        print(
            "\ngraphcut: batched vs per-sample loop vs bare maxflow() on the prebuilt batch graph\n"
        )
        header = [
            "graph",
            "n",
            "B",
            "batched ms",
            "loop ms",
            "loop/batched",
            "elementwise loop ms",
            "elementwise/batched",
            "maxflow ms",
            "batched/maxflow",
        ]
        print(markdown(header, ratio_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Structured VAE: training-step time per solver, and the ILP solver against a per-sample loop.

Part 1 — one full training step (encode, direct estimator with eps = 0.1, KL, backward, Adam)
of the structured VAE with ``n`` binary latents on the complete graph, batch 100, for the
unstructured baseline (no edges, ``independent``), supermodular couplings with ``graphcut``,
general couplings with ``exact`` (enumeration, the default for n = 15) and general couplings
with ``ilp`` (default options: parallel workers, hint, persistencies). The estimator's solver
is wrapped in a timing proxy, so each step splits into solver time and the rest ("network":
encoder, decoder calls on the candidates, KL, backward, Adam). Configurations alternate within
every round; medians over rounds.

Part 2 — the ILP solver on realistic potentials: a general model is trained for a few hundred
steps with direct + exact, then the next steps' solver calls are recorded (z* problems: the
Gumbel-perturbed potentials; z_eps problems: perturbed − eps·δ, with z* as the hint). On those
same batches: (a) the paper's way, a sequential loop solving one sample at a time with one
CP-SAT worker, no hint, no persistencies; (b) ``ILPSolver()`` defaults (parallel workers, the
hint for z_eps, persistencies); and, for reference, ``exact`` enumeration.

    python experiments/bench_structured.py [--quick] [--data-root DIR] [--save]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from structvae.data import load_dataset
from structvae.estimators import DirectEstimator
from structvae.models import StructuredVAE
from structvae.potentials import Potentials
from structvae.solvers import ExactSolver, ILPSolver, Solver, get_solver
from structvae.solvers.pool import attach_pool

RESULTS = Path(__file__).resolve().parent.parent / "results" / "bench_structured.md"

# (label, pairwise family, solver name, exact Gibbs KL by enumeration)
CONFIGS = (
    ("unstructured (independent)", "none", "independent", True),
    ("supermodular + graphcut", "supermodular", "graphcut", True),
    ("general + exact", "general", "exact", True),
    ("general + ilp", "general", "ilp", True),
    ("supermodular + graphcut, factorised KL", "supermodular", "graphcut", False),
)


class TimedSolver(Solver):
    """Delegates to ``inner`` and accumulates the wall time of its calls (``seconds``).

    With ``record=True`` it also keeps every call's detached potentials and hint (``calls``).
    ``uses_hint`` can be forced on so that an estimator passes z* as the hint of its z_eps
    call even when the inner solver ignores hints (for recording).
    """

    def __init__(self, inner: Solver, record: bool = False, uses_hint: bool | None = None):
        super().__init__()
        self.inner = inner
        self.name = inner.name
        self.exact = inner.exact
        self.supports_edges = inner.supports_edges
        self.num_states = inner.num_states
        self.uses_hint = inner.uses_hint if uses_hint is None else uses_hint
        self.record = record
        self.seconds = 0.0
        self.num_calls = 0
        self.calls: list[tuple[Potentials, torch.Tensor | None]] = []

    def __getattr__(self, key):  # e.g. max_assignments, read by StructuredVAE.check_solver
        if key == "inner":
            raise AttributeError(key)
        return getattr(self.inner, key)

    def check(self, potentials: Potentials) -> None:
        self.inner.check(potentials)

    def solve(self, potentials: Potentials, hint: torch.Tensor | None = None) -> torch.Tensor:
        return self.inner.solve(potentials, hint=hint if self.inner.uses_hint else None)

    def __call__(self, potentials: Potentials, hint: torch.Tensor | None = None) -> torch.Tensor:
        if self.record:
            p = potentials.detach()
            self.calls.append(
                (
                    Potentials(p.unary.clone(), p.edges, p.pairwise.clone(), validate=False),
                    None if hint is None else hint.detach().clone(),
                )
            )
        t = time.perf_counter()
        z = self.inner(potentials, hint=hint if self.inner.uses_hint else None)
        self.seconds += time.perf_counter() - t
        self.num_calls += 1
        return z

    def reset(self) -> None:
        self.seconds = 0.0
        self.num_calls = 0


class TimedKL:
    """Wraps ``model.kl`` and accumulates the wall time of its forward calls (``seconds``)."""

    def __init__(self, kl) -> None:
        self.kl = kl
        self.seconds = 0.0

    def __call__(self, potentials: Potentials) -> torch.Tensor:
        t = time.perf_counter()
        out = self.kl(potentials)
        self.seconds += time.perf_counter() - t
        return out


def make_step(
    pairwise: str,
    solver: str,
    exact_kl: bool,
    n: int,
    eps: float,
    x: torch.Tensor,
    seed: int,
    proxy_cls: type[TimedSolver] = TimedSolver,
    workers: int = 0,
):
    """``(step, proxy, kl_timer)``: a closure running one optimisation step, its solver's timer
    (a ``proxy_cls``) and its KL's (forward) timer. ``workers``: the solver thread pool
    (:func:`structvae.solvers.pool.attach_pool`; 0: none)."""
    torch.manual_seed(seed)
    model = StructuredVAE(
        n, pairwise=pairwise, graph="complete", exact_kl_max_vars=n if exact_kl else 0
    )
    kl_timer = TimedKL(model.kl)
    model.kl = kl_timer  # an instance attribute: VAE.objective calls model.kl(potentials)
    inner = get_solver(solver)
    proxy = proxy_cls(inner)
    model.check_solver(proxy)
    est = DirectEstimator(eps=eps, solver=proxy)
    if workers:
        attach_pool(est, workers)
        if hasattr(inner, "workers"):
            inner.workers = workers  # the proxy hides the inner solver from attach_pool
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        total, _ = model.objective(x, est)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()

    return step, proxy, kl_timer


def bench_steps(args, x: torch.Tensor) -> list[str]:
    steps = {
        label: make_step(pw, s, ex, args.latents, args.eps, x, args.seed)
        for label, pw, s, ex in CONFIGS
    }
    total: dict[str, list[float]] = {k: [] for k in steps}
    solver: dict[str, list[float]] = {k: [] for k in steps}
    network: dict[str, list[float]] = {k: [] for k in steps}
    kl: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(args.warmup + args.rounds):
        for label, (step, proxy, kl_timer) in steps.items():
            proxy.reset()
            kl_timer.seconds = 0.0
            t = time.perf_counter()
            step()
            ms = (time.perf_counter() - t) * 1e3
            if r >= args.warmup:
                total[label].append(ms)
                solver[label].append(proxy.seconds * 1e3)
                network[label].append(ms - proxy.seconds * 1e3)
                kl[label].append(kl_timer.seconds * 1e3)
    med = {k: statistics.median(v) for k, v in total.items()}
    lines = [
        f"### Training step, n = {args.latents} binary latents, complete graph "
        f"({args.latents * (args.latents - 1) // 2} edges), batch {x.shape[0]}, direct "
        f"(eps = {args.eps}), median of {args.rounds} rounds after {args.warmup} warm-up",
        "",
        "| configuration | KL | ms/step | solver ms | network ms | of which KL forward ms | "
        "step / unstructured |",
        "|---|---|---|---|---|---|---|",
    ]
    base = med[CONFIGS[0][0]]
    for label, pw, _, exact_kl in CONFIGS:
        kind = (
            "exact (closed form)" if pw == "none" else ("exact Gibbs" if exact_kl else "factorised")
        )
        lines.append(
            f"| {label} | {kind} | {med[label]:.1f} | {statistics.median(solver[label]):.1f} | "
            f"{statistics.median(network[label]):.1f} | {statistics.median(kl[label]):.1f} | "
            f"{med[label] / base:.2f} |"
        )
    gc, ex, gcf = (med[CONFIGS[i][0]] for i in (1, 2, 4))
    lines += [
        "",
        "| ratio | value | bar | met |",
        "|---|---|---|---|",
        f"| graphcut step / unstructured step | {gc / base:.2f} | ≤ 1.5 | "
        f"{'yes' if gc / base <= 1.5 else 'no'} |",
        f"| graphcut step, factorised KL / unstructured step | {gcf / base:.2f} | (≤ 1.5) | "
        f"{'yes' if gcf / base <= 1.5 else 'no'} |",
        f"| general-exact step / graphcut step | {ex / gc:.2f} | ≤ 10 | "
        f"{'yes' if ex / gc <= 10 else 'no'} |",
        "",
        "Network = step time minus solver time (encoder, decoder on z* and the n coordinate "
        "candidates, KL, backward, Adam). The structured rows use the exact Gibbs KL "
        f"(enumerating 2^{args.latents} assignments, n <= exact_kl_max_vars); the last row "
        "replaces it by the factorised KL to show what the enumeration costs.",
    ]
    return lines


def record_problems(args, data_x: torch.Tensor):
    """Train a general model with direct + exact, then record the next steps' solver calls.

    Returns ``(z_star_problems, z_eps_problems, z_eps_hints)``: lists with one entry per batch.
    """
    g = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    model = StructuredVAE(args.latents, pairwise="general", graph="complete", solver="exact")
    proxy = TimedSolver(ExactSolver(), uses_hint=True)
    est = DirectEstimator(eps=args.eps, solver=proxy)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    B = args.batch_size
    losses = []
    for it in range(args.train_steps + args.record_batches):
        if it == args.train_steps:
            proxy.record = True
        idx = torch.randint(data_x.shape[0], (B,), generator=g)
        total, stats = model.objective(data_x[idx], est)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        losses.append(float(stats["loss"]))
    z_star = [p for p, h in proxy.calls if h is None]
    z_eps = [p for p, h in proxy.calls if h is not None]
    hints = [h for _, h in proxy.calls if h is not None]
    assert len(z_star) == len(z_eps) == args.record_batches
    first = statistics.mean(losses[:10])
    last = statistics.mean(losses[args.train_steps - 10 : args.train_steps])
    return z_star, z_eps, hints, (first, last)


def _timed(fn) -> tuple[float, torch.Tensor]:
    t = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t) * 1e3, out


def bench_ilp(args, data_x: torch.Tensor) -> list[str]:
    t0 = time.perf_counter()
    z_star, z_eps, hints, (first, last) = record_problems(args, data_x)
    train_s = time.perf_counter() - t0
    sequential = ILPSolver(workers=1, persistencies=False)
    default = ILPSolver()
    exact = ExactSolver()

    def loop(p: Potentials) -> torch.Tensor:
        return torch.cat([sequential(p[b : b + 1]) for b in range(p.batch_size)])

    rows = []
    for kind, problems, hs in (("z*", z_star, None), ("z_eps", z_eps, hints)):
        t_seq, t_def, t_ex, fixed, gap = [], [], [], [], 0.0
        for r in range(args.ilp_repeats):
            for i, p in enumerate(problems):
                h = None if hs is None else hs[i]
                ms, z_a = _timed(lambda p=p: loop(p))
                t_seq.append(ms)
                ms, z_b = _timed(lambda p=p, h=h: default(p, hint=h))
                t_def.append(ms)
                if r == 0:
                    fixed.append(default.last_fixed_fraction.float().mean().item())
                ms, z_c = _timed(lambda p=p: exact(p))
                t_ex.append(ms)
                s_ref = p.score(z_c)
                for z in (z_a, z_b):
                    gap = max(gap, float((s_ref - p.score(z)).abs().max()))
        seq, dflt, ex = (statistics.median(t) for t in (t_seq, t_def, t_ex))
        rows.append(
            f"| {kind} | {seq:.1f} | {dflt:.1f} | {seq / dflt:.1f}× | "
            f"{statistics.mean(fixed):.3f} | {ex:.1f} | {gap:.1e} |"
        )
    B, n = args.batch_size, args.latents
    return [
        f"### ILP on recorded training potentials: general couplings, n = {n}, complete graph, "
        f"batch {B}; model trained {args.train_steps} steps with direct (eps = {args.eps}) + "
        f"exact ({train_s:.0f} s; loss {first:.1f} → {last:.1f}), then {args.record_batches} "
        f"batches recorded; median ms per batch over batches × {args.ilp_repeats} repeat(s)",
        "",
        "| problems | (a) sequential loop ms (1 worker, no hint, no persistencies) | "
        f"(b) ilp default ms ({default.workers} workers, hint for z_eps, persistencies) | "
        "speed-up a/b | fraction fixed by persistencies | exact ms (reference) | "
        "max score gap to exact |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="a short run (< 2 min)")
    ap.add_argument("--data-root", default=None, help="use fashion-mnist from here")
    ap.add_argument("--save", action="store_true", help=f"also write {RESULTS}")
    ap.add_argument("--latents", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--rounds", type=int, default=None, help="default 30 (quick: 3)")
    ap.add_argument("--warmup", type=int, default=None, help="default 5 (quick: 1)")
    ap.add_argument("--train-steps", type=int, default=None, help="default 200 (quick: 30)")
    ap.add_argument("--record-batches", type=int, default=None, help="default 10 (quick: 2)")
    ap.add_argument("--ilp-repeats", type=int, default=None, help="default 2 (quick: 1)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    defaults = {
        "rounds": (30, 3),
        "warmup": (5, 1),
        "train_steps": (200, 30),
        "record_batches": (10, 2),
        "ilp_repeats": (2, 1),
    }
    for key, (full, quick) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)

    if args.data_root is not None:
        data = load_dataset("fashion-mnist", root=args.data_root)
    else:
        data = load_dataset("mnist-sample")
    data_x = data.train.x
    x = data_x[: args.batch_size]

    lines = [
        f"machine: {platform.platform()}, {platform.processor() or 'cpu'}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"data {data.name} (train {len(data.train)}){'; --quick' if args.quick else ''}",
        "",
    ]
    lines += bench_steps(args, x)
    lines.append("")
    lines += bench_ilp(args, data_x)
    out = "\n".join(lines)
    print(out)
    if args.save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(out + "\n")
    return out


if __name__ == "__main__":
    main()

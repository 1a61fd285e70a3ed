"""Solver threads: the training step's time split with and without overlapping z* with the KL.

One full training step (encode, direct estimator with eps = 0.1, exact Gibbs KL by enumerating
2^n assignments, backward, Adam) of the structured VAE, n = 15 binary latents on the complete
graph, batch 100, for supermodular couplings + ``graphcut`` and general couplings + ``ilp``,
each with ``--solver-workers`` 0 (before: everything in the training thread; ``ilp`` keeps its
default per-sample threads) and 1, 2 (after: z* is solved on the pool while the KL forward
runs; ``ilp`` uses that many per-sample threads). Configurations alternate within every round;
medians over rounds. The split columns are wall times of the calls as seen by the thread that
made them (z* runs on the pool thread when overlapped, so the parts then add up to more than
the step).

Part 2: does PyMaxflow release the GIL? Two graph-cut batches solved on two threads at once
against one after the other (a ratio near 1 means no parallelism, near 0.5 full parallelism).

    python experiments/bench_overlap.py [--rounds 20] [--save]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_structured import TimedSolver, make_step  # noqa: E402

from structvae.data import load_dataset  # noqa: E402
from structvae.models import StructuredVAE  # noqa: E402
from structvae.potentials import Potentials  # noqa: E402
from structvae.solvers import get_solver  # noqa: E402

RESULTS = Path(__file__).resolve().parent.parent / "results" / "bench_overlap.md"


class CallTimes(TimedSolver):
    """A :class:`TimedSolver` that also keeps each call's wall time (z*, then z_eps)."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.times: list[float] = []

    def __call__(self, potentials, hint=None):
        t = time.perf_counter()
        z = super().__call__(potentials, hint)
        self.times.append(time.perf_counter() - t)
        return z


def bench_steps(args, x: torch.Tensor) -> list[str]:
    configs = [
        (f"{pw} + {s}, solver-workers {w}", pw, s, w)
        for pw, s in (("supermodular", "graphcut"), ("general", "ilp"))
        for w in (0, 1, 2)
    ]
    steps = {
        label: make_step(pw, s, True, args.latents, 0.1, x, args.seed, CallTimes, w)
        for label, pw, s, w in configs
    }
    rec = {k: {"step": [], "zstar": [], "zeps": [], "kl": []} for k in steps}
    for r in range(args.warmup + args.rounds):
        for label, (step, proxy, kl_timer) in steps.items():
            proxy.times.clear()
            kl_timer.seconds = 0.0
            t = time.perf_counter()
            step()
            ms = (time.perf_counter() - t) * 1e3
            if r >= args.warmup:
                rec[label]["step"].append(ms)
                rec[label]["zstar"].append(proxy.times[0] * 1e3)
                rec[label]["zeps"].append(proxy.times[1] * 1e3)
                rec[label]["kl"].append(kl_timer.seconds * 1e3)
    med = {k: {f: statistics.median(v) for f, v in d.items()} for k, d in rec.items()}
    lines = [
        f"### Training step, n = {args.latents}, complete graph "
        f"({args.latents * (args.latents - 1) // 2} edges), batch {x.shape[0]}, direct "
        f"(eps = 0.1), exact Gibbs KL; median of {args.rounds} rounds after {args.warmup} warm-up",
        "",
        "| configuration | ms/step | z* solve ms | z_eps solve ms | KL forward ms | rest ms "
        "(network, backward, Adam) | step / workers-0 step |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, _, _, w in configs:
        m = med[label]
        base = med[label.rsplit(",", 1)[0] + ", solver-workers 0"]["step"]
        serial = m["zstar"] + m["zeps"] + m["kl"]
        rest = m["step"] - serial if w == 0 else m["step"] - m["zeps"] - m["kl"]
        lines.append(
            f"| {label} | {m['step']:.1f} | {m['zstar']:.1f} | {m['zeps']:.1f} | {m['kl']:.1f} | "
            f"{rest:.1f} | {m['step'] / base:.2f} |"
        )
    lines += [
        "",
        "With workers 0 the parts run one after another; with workers >= 1 the z* solve runs "
        "on a pool thread while the KL forward runs in the training thread, so the step can "
        "save up to min(z* solve, KL forward). 'rest' is the step minus the parts on the "
        "training thread's critical path (z* excluded when it is overlapped).",
    ]
    return lines


def bench_gil(args) -> list[str]:
    """Two graph-cut batches on two threads at once against one after the other."""
    torch.manual_seed(args.seed)
    B, n = 2000, args.latents
    model = StructuredVAE(n, pairwise="supermodular", graph="complete")
    with torch.no_grad():
        p = model.encode(torch.rand(B, 784))
    g = torch.distributions.Gumbel(0.0, 1.0).sample(p.unary.shape)
    p2 = Potentials(p.unary + g, p.edges, p.pairwise)
    solvers = [get_solver("graphcut"), get_solver("graphcut")]
    for s, q in zip(solvers, (p, p2), strict=True):
        s(q)  # warm the layout caches
    seq, par = [], []
    with ThreadPoolExecutor(2) as pool:
        for _ in range(args.rounds):
            t = time.perf_counter()
            solvers[0](p)
            solvers[1](p2)
            seq.append(time.perf_counter() - t)
            t = time.perf_counter()
            list(pool.map(lambda sq: sq[0](sq[1]), zip(solvers, (p, p2), strict=True)))
            par.append(time.perf_counter() - t)
    s, q = statistics.median(seq) * 1e3, statistics.median(par) * 1e3
    return [
        f"### Graph cut on two threads (2 batches of {B}, n = {n}, complete graph)",
        "",
        "| one after the other ms | two threads at once ms | ratio |",
        "|---|---|---|",
        f"| {s:.1f} | {q:.1f} | {q / s:.2f} |",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latents", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", action="store_true", help=f"write {RESULTS}")
    args = ap.parse_args()
    x = load_dataset("mnist-sample").train[torch.arange(args.batch_size)][0]
    header = (
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads (OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}); data mnist-sample; load average "
        f"(1 min) at the start {os.getloadavg()[0]:.1f}"
    )
    lines = [header, "", *bench_steps(args, x), "", *bench_gil(args)]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.save:
        RESULTS.write_text(
            "# Solver threads: overlapping z* with the KL\n\n"
            f"`python experiments/bench_overlap.py --save` (rounds {args.rounds})\n\n" + text
        )


if __name__ == "__main__":
    main()

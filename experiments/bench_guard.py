"""Overhead of the NaN/inf guard on one training step (issue 13).

A Gumbel-softmax step of the categorical VAE (784-300-K·N-300-784, Adam, batch 100 of
mnist-sample) is timed three ways in the same process, alternating within every round so that
all variants see the same machine state:

- ``off``: ``model.objective``, ``backward``, ``optimizer.step`` (no checks);
- ``on``: :func:`structvae.guard.train_step` (the trainer's guarded step);
- ``on, skip``: the same with ``skip_nonfinite=True``.

Prints a markdown table of the median ms/step and the ratio to ``off``; ``--save`` appends it,
with ``uptime``, to ``results/bench_guard.md``. Run it on one thread:

    OMP_NUM_THREADS=1 python experiments/bench_guard.py [--rounds 200] [--latents 1x10 20x10]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

from structvae.data import load_dataset
from structvae.estimators import get_estimator
from structvae.guard import train_step
from structvae.models import CategoricalVAE, parse_latent

RESULTS = Path(__file__).resolve().parents[1] / "results" / "bench_guard.md"
VARIANTS = ("off", "on", "on, skip")


def make_step(variant: str, latent: str, x: torch.Tensor):
    """A closure running one step of ``variant`` on its own model, seeded the same for all."""
    torch.manual_seed(0)
    model = CategoricalVAE(*parse_latent(latent))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    est = get_estimator("gumbel-softmax")
    named = list(model.named_parameters())
    count = iter(range(1, 1 << 62))

    def step() -> None:
        if variant == "off":
            total, _ = model.objective(x, est)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
        else:
            skip = variant == "on, skip"
            train_step(model, est, opt, named, x, step=next(count), skip_nonfinite=skip)

    return step


def measure(latent: str, x: torch.Tensor, rounds: int, warmup: int) -> dict[str, float]:
    """Median ms/step of each variant over ``rounds`` interleaved rounds."""
    steps = {v: make_step(v, latent, x) for v in VARIANTS}
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(warmup + rounds):
        order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
        for v in order:
            t = time.perf_counter()
            steps[v]()
            if r >= warmup:
                times[v].append((time.perf_counter() - t) * 1e3)
    return {v: statistics.median(t) for v, t in times.items()}


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--latents", nargs="+", default=["1x10", "20x10"])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--note", default="", help="a line recorded above the table")
    ap.add_argument("--save", action="store_true", help=f"append the table to {RESULTS}")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    x = load_dataset("mnist-sample").train.x[: args.batch_size].float()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    lines = [
        f"machine: {platform.platform()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), batch {args.batch_size}, "
        f"{args.rounds} rounds after {args.warmup} warm-up",
        f"uptime at the start: {uptime}",
        "",
        "| latent | off ms | on ms | on, skip ms | on / off | on, skip / off |",
        "|---|---|---|---|---|---|",
    ]
    for latent in args.latents:
        med = measure(latent, x, args.rounds, args.warmup)
        lines.append(
            f"| {latent} | {med['off']:.3f} | {med['on']:.3f} | {med['on, skip']:.3f} | "
            f"{med['on'] / med['off']:.3f} | {med['on, skip'] / med['off']:.3f} |"
        )
    out = "\n".join(lines)
    print(out)
    if args.save:
        with open(RESULTS, "a") as f:
            f.write(f"\n### {args.note or 'run'}\n\n" if args.note else "\n")
            f.write(out + "\n")
    return out


if __name__ == "__main__":
    main()

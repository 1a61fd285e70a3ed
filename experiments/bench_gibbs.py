"""Micro-benchmark of the exact Gibbs KL by split enumeration (the structured model's KL term):
n = 15 binary latents, complete graph (105 edges), batch 100, forward + backward, 1 thread.

    OMP_NUM_THREADS=1 python experiments/bench_gibbs.py [--rounds 30]

Prints the median and minimum wall and CPU (process) time per round after 5 warm-up rounds.
"""

from __future__ import annotations

import argparse
import time

import torch

from structvae import Gibbs, Potentials, make_edges


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--n", type=int, default=15)
    ap.add_argument("--batch", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    edges = make_edges("complete", args.n)
    u = torch.randn(args.batch, args.n).requires_grad_()
    c = torch.randn(args.batch, len(edges)).requires_grad_()
    wall, cpu = [], []
    for _ in range(args.rounds + 5):
        t0, c0 = time.perf_counter(), time.process_time()
        Gibbs(Potentials.binary(u, edges, c)).kl_to_uniform().sum().backward()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        u.grad = c.grad = None
    for name, ts in (("wall", wall), ("cpu", cpu)):
        ts = sorted(ts[5:])
        print(f"{name}: median {1e3 * ts[len(ts) // 2]:.2f} ms, min {1e3 * ts[0]:.2f} ms")


if __name__ == "__main__":
    main()

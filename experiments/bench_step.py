"""Training-step time of direct, Gumbel-softmax and exact on the categorical VAE.

One full step (encoder, estimator, KL, backward, Adam) on a batch of 100 mnist-sample images,
for each latent size; estimators alternate within every round so that they see the same
machine state. Prints a markdown table of median ms/step and the ratio to Gumbel-softmax.

    python experiments/bench_step.py [--device cuda] [--rounds 30] [--latents 1x10 1x50 10x10 20x10]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from structvae.data import load_dataset
from structvae.estimators import get_estimator
from structvae.models import CategoricalVAE, parse_latent

ESTIMATORS = ("gumbel-softmax", "direct", "exact")


def make_step(latent: str, estimator: str, x: torch.Tensor, device: str):
    """A closure running one optimisation step, or None when the estimator does not apply."""
    N, K = parse_latent(latent)
    if estimator == "exact" and K**N > 1024:
        return None
    model = CategoricalVAE(N, K).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    est = get_estimator(estimator)

    def step() -> None:
        total, _ = model.objective(x, est)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()

    return step


def timed(step, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t) * 1e3


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--latents", nargs="+", default=["1x10", "1x50", "10x10", "20x10"])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    x = load_dataset("mnist-sample").train.x[: args.batch_size].to(args.device)
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor()
    lines = [
        f"machine: {platform.platform()}, {dev or 'cpu'}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {args.device}, batch {args.batch_size}",
        "",
        "| N×K | " + " | ".join(f"{e} ms" for e in ESTIMATORS) + " | direct/GSM | exact/GSM |",
        "|---|" + "---|" * (len(ESTIMATORS) + 2),
    ]
    for latent in args.latents:
        steps = {e: make_step(latent, e, x, args.device) for e in ESTIMATORS}
        steps = {e: s for e, s in steps.items() if s is not None}
        times: dict[str, list[float]] = {e: [] for e in steps}
        for r in range(args.warmup + args.rounds):
            for e, s in steps.items():
                ms = timed(s, args.device)
                if r >= args.warmup:
                    times[e].append(ms)
        med = {e: statistics.median(t) for e, t in times.items()}
        cells = [f"{med[e]:.2f}" if e in med else "–" for e in ESTIMATORS]
        ratios = [
            f"{med[e] / med['gumbel-softmax']:.2f}" if e in med else "–"
            for e in ("direct", "exact")
        ]
        lines.append(f"| {latent} | " + " | ".join(cells + ratios) + " |")
    out = "\n".join(lines)
    print(out)
    return out


if __name__ == "__main__":
    main()

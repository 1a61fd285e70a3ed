"""CelebA attribute VAE: training-step time per coupling family and number of attributes.

One full training step (encode, direct estimator with eps = 0.1 and half of the rows labelled,
KL, backward, Adam) of :class:`structvae.models.AttributeVAE` at 64×64 with the default widths
(channels 32, hidden 256, style code 32), on a batch read from a generated miniature CelebA in the
release's file formats (real CelebA is not needed; the network does not care what the pixels
show). Rows: the attribute count ``A`` (3: Eyeglasses, Smiling, Male; 10; 40: all) and the
coupling family with its solver (independent; supermodular → graphcut; general → exact for
``A <= 20``, ilp above). Also the time to decode one batch of JPEGs. Median over steps after
one warm-up step; the ratio is against ``A = 3, none`` in the same process. Printed, never
asserted.

    python experiments/bench_celeba.py [--batch 32] [--steps 3] [--quick] [--device cpu]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from structvae.celeba import CELEBA_ATTRIBUTES, make_miniature_celeba
from structvae.data import load_dataset
from structvae.estimators import DirectEstimator
from structvae.models import AttributeVAE

ATTRIBUTE_SETS = {
    3: "Eyeglasses,Smiling,Male",
    10: ",".join(CELEBA_ATTRIBUTES[:10]),
    40: "all",
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_times(model, x, y, steps: int, device) -> list[float]:
    est = DirectEstimator(eps=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for i in range(steps + 1):
        _sync(device)
        t0 = time.perf_counter()
        total, _ = model.objective(x, est, y=y)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        _sync(device)
        if i:  # the first step warms up
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="A = 3 and 10 only")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        make_miniature_celeba(Path(tmp), num_images=max(2 * args.batch, 36), seed=0)
        rows = []
        t0 = time.perf_counter()
        splits = load_dataset("celeba", root=tmp, binarize="none", attributes="all")
        t_load = time.perf_counter() - t0
        idx = list(range(args.batch))
        decode = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            x, y_all = splits.train[idx]
            decode.append(time.perf_counter() - t0)
    x = x.to(device)
    y_all = y_all.to(device)
    y_all[args.batch // 2 :] = -1  # half of the rows unlabelled
    counts = (3, 10) if args.quick else (3, 10, 40)
    for A in counts:
        names = ATTRIBUTE_SETS[A]
        cols = [CELEBA_ATTRIBUTES.index(a) for a in names.split(",")] if A < 40 else list(range(40))
        y = y_all[:, cols]
        for pairwise in ("none", "supermodular", "general"):
            torch.manual_seed(0)
            model = AttributeVAE(names, 32, pairwise=pairwise).to(device)
            times = step_times(model, x, y, args.steps, device)
            rows.append((A, pairwise, model.solver.name, model.kl_kind, statistics.median(times)))
    base = rows[0][-1]
    print(
        f"AttributeVAE training step, 64x64, batch {args.batch}, channels 32, hidden 256, "
        f"style 32, direct eps 0.1, half the rows labelled; {args.device} "
        f"({platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()});"
        f" median of {args.steps} steps after 1 warm-up\n"
    )
    print("| A | pairwise | solver | KL | step (s) | ratio |")
    print("|---|---|---|---|---|---|")
    for A, pw, solver, kl, t in rows:
        print(f"| {A} | {pw} | {solver} | {kl} | {t:.3f} | {t / base:.2f} |")
    print(
        f"\nreading the attribute + partition files: {t_load:.3f} s; decoding one batch of "
        f"{args.batch} JPEGs (crop 148, resize 64): median {statistics.median(decode):.3f} s"
    )


if __name__ == "__main__":
    main()

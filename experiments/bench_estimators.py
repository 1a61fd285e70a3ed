"""Gradient quality of every estimator against the exact gradient, on a small categorical VAE.

A categorical VAE on mnist-sample (at initialisation, or after ``--train-steps`` Gumbel-softmax
steps; the encoder quickly becomes near-deterministic on a fixed batch, where every gradient
vanishes, so the default is 0); then, for a fixed batch of images, each estimator's
gradient with respect to the encoder's logits θ is drawn ``--repeats`` times independently and
compared with the exact gradient (enumeration of all K^n assignments):

- ``bias``: ‖mean estimate − exact‖ / ‖exact‖ (sampling noise alone gives about
  ``std / sqrt(repeats)``, printed as ``noise floor``);
- ``std``: the single-estimate standard deviation (root of the summed variances) / ‖exact‖;
- ``cos``: mean cosine similarity of a single estimate with the exact gradient;
- (NVIL's estimates are multiplied back by its signal scale ``max(1, running std)``, which
  it reports, so that its bias and spread are comparable);
- ``ms``: median milliseconds of one estimator call plus backward on the batch (ratio to
  REINFORCE in the same process).

Before measuring, each estimator runs ``--tune-steps`` calls on the batch with the model frozen:
running baselines fill up, and estimator parameters (NVIL's baseline, REBAR's η/λ, RELAX's
network, DAB's bridge) are trained by Adam on their own surrogate. Prints one markdown table per
latent shape.

    python experiments/bench_estimators.py [--latents 3x4 8x2] [--repeats 200] [--device cpu]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from structvae import Potentials
from structvae.data import load_dataset
from structvae.estimators import available_estimators, get_estimator
from structvae.models import CategoricalVAE, parse_latent

SKIP = ("exact", "direct")  # the reference, and the method these are baselines for


def train_briefly(model, x_all, steps: int, seed: int) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    est = get_estimator("gumbel-softmax", temperature=1.0)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, x_all.shape[0], (100,), generator=g)
        total, _ = model.objective(x_all[idx], est)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()


def tune(est, theta, loss_fn, steps: int, lr: float = 1e-2) -> None:
    """``steps`` calls on the batch before measuring: running baselines fill, and estimator
    parameters (NVIL's baseline, REBAR's η/λ, RELAX's net, DAB's bridge) train with Adam."""
    params = [p for p in est.parameters() if p.requires_grad] if hasattr(est, "parameters") else []
    opt = torch.optim.Adam(params, lr=lr) if params else None
    for s in range(steps):
        r = est(Potentials(theta), loss_fn, generator=torch.Generator(theta.device).manual_seed(s))
        if opt is not None:
            opt.zero_grad(set_to_none=True)
            r.surrogate.backward()
            opt.step()


def logit_gradients(est, theta, loss_fn, repeats: int, seed: int) -> torch.Tensor:
    """``repeats`` independent estimates of each row's gradient: ``[repeats, B, n, K]``."""
    B = theta.shape[0]
    th = theta.repeat(repeats, 1, 1).requires_grad_()
    r = est(Potentials(th), loss_fn, generator=torch.Generator(theta.device).manual_seed(seed))
    (g,) = torch.autograd.grad(r.surrogate, th)
    scale = r.info.get("signal_scale", 1.0)  # NVIL divides by a known running scale: undo it
    return g.reshape(repeats, B, *theta.shape[1:]) * (repeats * B * scale)


def repeated_loss_fn(model, x, repeats: int):
    """The model's loss for the batch ``x`` repeated ``repeats`` times (row r·B + b is x[b])."""
    return model.loss_fn(x.repeat(repeats, 1))


def time_call(est, theta, loss_fn, device, rounds: int = 11) -> float:
    times = []
    for s in range(rounds):
        th = theta.clone().requires_grad_()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        r = est(Potentials(th), loss_fn, generator=torch.Generator(device).manual_seed(s))
        r.surrogate.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def bench_latent(latent: str, x_all, args, device) -> str:
    n, K = parse_latent(latent)
    torch.manual_seed(args.seed)
    model = CategoricalVAE(n, K).to(device)
    train_briefly(model, x_all, args.train_steps, args.seed)
    for p in model.parameters():
        p.requires_grad_(False)
    x = x_all[: args.batch]
    with torch.no_grad():
        theta = model.encode(x).unary
    exact_th = theta.clone().requires_grad_()
    r = get_estimator("exact")(Potentials(exact_th), model.loss_fn(x))
    (exact,) = torch.autograd.grad(r.surrogate, exact_th)
    exact = exact * x.shape[0]  # per-row gradients [B, n, K]
    norm = exact.norm().item()
    loss_rep = repeated_loss_fn(model, x, args.repeats)
    rows, base_ms = [], None
    names = [e for e in available_estimators() if e not in SKIP]
    for name in ["reinforce"] + [e for e in names if e != "reinforce"]:
        est = get_estimator(name)
        try:
            est.check(Potentials(theta))
        except ValueError:
            continue  # binary-only estimators on categorical latents
        if hasattr(est, "setup"):
            est.setup(n, K)
            est.to(device)
        tune(est, theta, model.loss_fn(x), args.tune_steps)
        g = logit_gradients(est, theta, loss_rep, args.repeats, args.seed)
        mean = g.mean(0)
        std = ((g - mean) ** 2).sum((1, 2, 3)).mean().sqrt().item()
        cos = torch.nn.functional.cosine_similarity(g.flatten(1), exact.flatten()[None], 1)
        ms = time_call(est, theta, model.loss_fn(x), device)
        base_ms = ms if name == "reinforce" else base_ms
        rows.append(
            f"| {name} | {'yes' if est.unbiased else 'no'} | {(mean - exact).norm().item() / norm:.3f}"
            f" | {std / norm / math.sqrt(args.repeats):.3f} | {std / norm:.2f}"
            f" | {cos.mean().item():.3f} | {ms:.1f} | {ms / base_ms:.2f} |"
        )
    head = (
        f"\n### latent {latent} (batch {x.shape[0]}, {args.repeats} repeats, "
        f"{args.train_steps} model training steps, {args.tune_steps} estimator tuning steps; "
        f"‖exact‖ = {norm:.3g})\n\n"
        "| estimator | unbiased | bias | noise floor | std | cos | ms | × reinforce |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    return "\n".join([head, *rows])


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--latents", nargs="+", default=["3x4", "8x2"])
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--train-steps", type=int, default=0)
    ap.add_argument("--tune-steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    train = load_dataset("mnist-sample").train
    x_all = train[torch.arange(len(train))][0].float().flatten(1).to(device)
    out = "\n".join(bench_latent(latent, x_all, args, device) for latent in args.latents)
    print(out)
    return out


if __name__ == "__main__":
    main()

"""The gradient lab end to end (``structvae gradients``): models, batch, estimators, outputs."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..models import available_models
from ..training.artefacts import _fixed_images
from ..training.build import _load_data
from ..training.config import TrainConfig
from .measure import expand_specs, measure_point
from .report import markdown_table, read_csv, write_csv, write_plots
from .trajectory import load_run_model, trajectory_models

__all__ = ["LabConfig", "run_lab", "add_arguments", "main"]

HEADER = """# Gradient-quality lab

Exact gradient g of F(θ) = mean_b E_q[−log p(x_b|z)] w.r.t. the encoder's potentials θ [B, n, K]
by enumeration; R independent estimates ĝ per estimator. Columns: ‖Eĝ−g‖/‖g‖ (bias of the mean
of the R estimates, including its Monte-Carlo error), debiased (sqrt(max(0, ‖ĝ̄−g‖² − tr Cov/R))
/ ‖g‖), tr Cov/‖g‖² (variance, summed over coordinates), mean cosine(ĝ, g), EI/‖g‖ = the expected
improvement −E⟨g, ĝ⟩ / sqrt(E‖ĝ‖²) of "Reintroducing Straight-Through Estimators" (eq. 18) divided
by ‖g‖: negative = descent, −1 is the optimum (ĝ = g), > 0 predicts ascent; ms/estimate: median
wall-clock of one estimate on the batch (estimator call + backward to θ).
"""


@dataclass
class LabConfig:
    """Everything ``structvae gradients`` takes (see :func:`add_arguments` for the meanings)."""

    dataset: str = "mnist-sample"
    data_root: str | None = None
    binarize: str = "fixed"
    model: str = "categorical"
    latents: Sequence[str] = ("1x10",)
    estimators: Sequence[str] = ("direct", "gumbel-softmax", "exact")
    eps: Sequence[float] = ()
    temperature: Sequence[float] = ()
    epochs: Sequence[int] = (0,)
    checkpoints: Sequence[str] = ()
    train_estimator: str = "direct"
    train_eps: float | None = None
    batch: int = 50
    repeats: int = 100
    mode: str = "repeat"
    params: bool = False
    seed: int = 0
    device: str = "cpu"
    out: str = "results/gradients"
    train_dir: str = "runs/gradients"
    max_assignments: int = 4096
    timing_repeats: int = 3
    warmup: int = 5
    quiet: bool = False
    extra: dict = field(default_factory=dict)


def _check(config: LabConfig) -> list[str]:
    """Validate before any work; returns the expanded estimator specs."""
    specs = expand_specs(config.estimators, config.eps, config.temperature)
    for name, v, lo in (("repeats", config.repeats, 2), ("batch", config.batch, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"--{name} must be an integer >= {lo}, got {v!r}")
    if config.mode not in ("repeat", "loop"):
        raise ValueError(f"--mode must be 'repeat' or 'loop', got {config.mode!r}")
    if config.model not in available_models():
        raise ValueError(
            f"unknown model {config.model!r}; available: {', '.join(available_models())}"
        )
    if any(int(e) < 0 for e in config.epochs):
        raise ValueError(f"--epochs must be >= 0, got {list(config.epochs)}")
    for value in (*config.eps, *config.temperature):
        if not value > 0:
            raise ValueError(f"--eps / --temperature values must be positive, got {value}")
    return specs


def _train_config(config: LabConfig, latent: str) -> TrainConfig:
    slug = f"{config.dataset}-{config.model}-{latent}-{config.train_estimator}-seed{config.seed}"
    return TrainConfig(
        dataset=config.dataset,
        data_root=config.data_root,
        binarize=config.binarize,
        model=config.model,
        latent=latent,
        estimator=config.train_estimator,
        eps=config.train_eps,
        seed=config.seed,
        device=config.device,
        out=str(Path(config.train_dir) / slug),
        eval_samples=1,
        quiet=config.quiet,
    )


def _points(config: LabConfig, input_dim: int):
    """``(extra fields, model, estimator states)`` for every point the lab measures."""
    for path in config.checkpoints:
        model, cfg, ckpt = load_run_model(path, config.device, input_dim)
        state = ckpt.get("estimator")
        label = f"{Path(path).parent.name}/{Path(path).name}, epoch {ckpt.get('epoch')}"
        yield {"point": label, "epoch": ckpt.get("epoch")}, model, {cfg.estimator: state}
    if config.checkpoints:
        return
    for latent in config.latents:
        tcfg = _train_config(config, latent)
        for e, model, state in trajectory_models(tcfg, config.epochs, input_dim):
            yield {"point": f"epoch {e}", "epoch": e}, model, {tcfg.estimator: state}


def run_lab(config: LabConfig, data: torch.Tensor | None = None) -> list[dict]:
    """Measure every estimator at every point; write ``gradients.csv``, ``gradients.md``,
    ``config.json`` and the plots into ``config.out``. Returns the rows.

    The batch is ``config.batch`` validation images of ``config.dataset`` spread evenly over
    the split (the training loop's fixed images), or ``data`` ``[B, D]`` when given.
    """
    specs = _check(config)
    if data is None:
        splits = _load_data(TrainConfig(dataset=config.dataset, data_root=config.data_root,
                                        binarize=config.binarize))  # fmt: skip
        x = _fixed_images(splits.val, config.batch, config.seed)
    else:
        x = torch.as_tensor(data).flatten(1).float()
    input_dim = x.shape[1]
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for extra, model, states in _points(config, input_dim):
        if not config.quiet:
            print(f"measuring {len(specs)} estimator specs at {extra['point']}", file=sys.stderr)
        rows += measure_point(
            model,
            x,
            specs,
            config.repeats,
            mode=config.mode,
            params=config.params,
            seed=config.seed,
            max_assignments=config.max_assignments,
            timing_repeats=config.timing_repeats,
            warmup=config.warmup,
            estimator_state={k: v for k, v in states.items() if v is not None},
            extra=dict(config.extra, **extra),
            quiet=config.quiet,
        )
        write_csv(rows, out / "gradients.csv")  # partial results survive an interruption
    (out / "gradients.md").write_text(HEADER + "\n" + markdown_table(rows))
    cfg = dataclasses.asdict(config)
    cfg["expanded_specs"] = specs
    (out / "config.json").write_text(json.dumps(cfg, indent=2, default=list) + "\n")
    write_plots(rows, out)
    return rows


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``structvae gradients`` flags."""
    d = LabConfig()
    p.add_argument("--dataset", default=d.dataset, help=f"dataset (default {d.dataset})")
    p.add_argument("--data-root", default=None, help="folder holding the dataset files")
    p.add_argument("--binarize", default=d.binarize, choices=("fixed", "dynamic", "none"))
    p.add_argument("--model", default=d.model, help=f"model (default {d.model})")
    p.add_argument(
        "--latent", nargs="+", default=list(d.latents), dest="latents",
        help="latent specs, e.g. 1x10 8x2; several give the latent-size sweep (default 1x10)",
    )  # fmt: skip
    p.add_argument(
        "--estimators", nargs="+", default=list(d.estimators),
        help="estimator specs (name or name:key=value,...); 'all' = every registered one",
    )  # fmt: skip
    p.add_argument("--eps", nargs="*", type=float, default=[], help="ε sweep (e.g. 0.01 0.1 1 10)")
    p.add_argument("--temperature", nargs="*", type=float, default=[], help="τ sweep")
    p.add_argument(
        "--epochs", nargs="+", type=int, default=list(d.epochs),
        help="trajectory points: epochs of training (0 = initialisation; default 0)",
    )  # fmt: skip
    p.add_argument(
        "--checkpoint", nargs="+", default=[], dest="checkpoints",
        help="measure at these run checkpoints (RUN/best.pt ...) instead of training",
    )  # fmt: skip
    p.add_argument("--train-estimator", default=d.train_estimator, help="estimator that trains")
    p.add_argument("--train-eps", type=float, default=None, help="its --eps (train's default)")
    p.add_argument("--batch", type=int, default=d.batch, help="validation images in the batch")
    p.add_argument("--repeats", type=int, default=d.repeats, help="estimates per estimator (R)")
    p.add_argument("--mode", default=d.mode, choices=("repeat", "loop"), help="how R is batched")
    p.add_argument("--params", action="store_true", help="also w.r.t. the encoder parameters")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device)
    p.add_argument("--out", default=d.out, help=f"output folder (default {d.out})")
    p.add_argument("--train-dir", default=d.train_dir, help="where the training runs go")
    p.add_argument("--max-assignments", type=int, default=d.max_assignments)
    p.add_argument("--timing-repeats", type=int, default=d.timing_repeats)
    p.add_argument(
        "--warmup", type=int, default=d.warmup,
        help="estimator calls discarded before measuring (running baselines settle)",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true")
    p.add_argument(
        "--replot", metavar="DIR", default=None,
        help="only rewrite DIR/gradients.md and the plots from DIR/gradients.csv",
    )  # fmt: skip


def main(args: argparse.Namespace) -> int:
    """Run ``structvae gradients`` from parsed arguments; returns the exit status."""
    from ..data import DatasetCorruptError, DatasetNotFoundError

    if args.replot:
        out = Path(args.replot)
        if not (out / "gradients.csv").is_file():
            print(f"structvae gradients: error: {out / 'gradients.csv'} not found", file=sys.stderr)
            return 2
        rows = read_csv(out / "gradients.csv")
        (out / "gradients.md").write_text(HEADER + "\n" + markdown_table(rows))
        write_plots(rows, out)
        print(f"rewrote {out}/gradients.md and plots", file=sys.stderr)
        return 0
    names = {f.name for f in dataclasses.fields(LabConfig)}
    config = LabConfig(**{k: v for k, v in vars(args).items() if k in names})
    try:
        rows = run_lab(config)
    except (ValueError, FileNotFoundError, DatasetNotFoundError, DatasetCorruptError) as e:
        print(f"structvae gradients: error: {e}", file=sys.stderr)
        return 2
    print(markdown_table(rows))
    print(f"wrote {config.out}/gradients.csv, gradients.md and plots", file=sys.stderr)
    return 0

"""The ``structvae`` command: ``train``, ``evaluate``, ``solvers``, ``estimators``.

structvae train                                  # mnist-sample, direct, 1x10: a few minutes on CPU
structvae train --dataset mnist --data-root ~/data --latent 1x20 --estimator gumbel-softmax
structvae train --out runs/x --resume --epochs 100
structvae evaluate runs/x --samples 1000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]


def _first_line(build, name: str) -> str:
    try:
        doc = (type(build(name)).__doc__ or "").strip()
    except Exception as e:  # a plugin that cannot be built with defaults
        return f"(cannot be built with default options: {e})"
    return doc.splitlines()[0] if doc else ""


def _add_objective_arg(g) -> None:
    """``--objective elbo|paper`` (:mod:`structvae.models.reference`)."""
    g.add_argument(
        "--objective",
        choices=("elbo", "paper"),
        default=argparse.SUPPRESS,
        help="elbo (default): every estimator trains the negative ELBO, KL gradient included; "
        "paper: the reference code's objective (direct: KL not trained, eps0 = 1; "
        "see docs/objectives.md)",
    )


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from .train import TrainConfig

    d = TrainConfig()
    S = argparse.SUPPRESS  # unset flags stay absent, so --resume can fill them from the run
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=S, help=f"dataset name (default {d.dataset})")
    g.add_argument("--data-root", default=S, help="folder holding the dataset files")
    g.add_argument("--download", action="store_true", default=S, help="download missing files")
    g.add_argument(
        "--binarize",
        default=S,
        choices=("fixed", "dynamic", "none"),
        help=f"binarisation (default {d.binarize})",
    )
    g.add_argument("--split-seed", type=int, default=S, help="seed of the validation split")
    g.add_argument(
        "--attributes",
        default=S,
        help="celeba: comma-separated attributes, or 'all' (default Eyeglasses,Smiling,Male)",
    )
    g.add_argument(
        "--label-fraction",
        type=float,
        default=S,
        help="celeba: fraction of training images that keep their attribute labels (default 1)",
    )
    g = p.add_argument_group("model and estimator")
    g.add_argument("--model", default=S, help=f"model (default {d.model})")
    g.add_argument(
        "--latent",
        default=S,
        help=f"latent spec: NxK for categorical (default {d.latent}), N binary latents for structured",
    )
    g.add_argument(
        "--pairwise",
        default=S,
        choices=("supermodular", "general", "none"),
        help="structured / celeba model: coupling family (default supermodular / none)",
    )
    g.add_argument(
        "--graph",
        default=S,
        help="structured model: complete | chain | grid | tree | none (default complete)",
    )
    g.add_argument(
        "--kl",
        default=S,
        choices=("auto", "exact", "factorised"),
        help="structured model: the KL trained and reported: exact Gibbs KL where tractable "
        "(auto, default), exact (error if intractable) or factorised (the paper's, cheapest)",
    )
    g.add_argument(
        "--estimator",
        default=S,
        help=f"gradient estimator (default {d.estimator}); see `structvae estimators`",
    )
    g.add_argument(
        "--solver",
        default=S,
        help="arg-max solver for direct (default: by structure); see `structvae solvers`",
    )
    _add_objective_arg(g)
    g.add_argument(
        "--eps",
        type=float,
        default=S,
        help="eps0 of the schedule max(eps0*exp(-1e-5 t), min(0.1, eps0)) (default 0.1, or 1 "
        "with --objective paper; 1 under a trained KL leaves the encoder near uniform)",
    )
    g.add_argument(
        "--temperature",
        type=float,
        default=S,
        help="tau0 of the Gumbel-softmax schedule max(tau0*exp(-1e-5 t), min(0.1, tau0)) (default 1)",
    )
    g = p.add_argument_group("semi-supervised (--model semisupervised)")
    g.add_argument(
        "--labels",
        type=int,
        default=S,
        help="keep the labels of a balanced subset of this many training images (N/K per class); "
        "each step adds a labelled batch to the unlabelled one",
    )
    g.add_argument(
        "--label-eps",
        type=float,
        default=S,
        help="direct: eps of labelled rows, whose z_eps is the label (default 0.01)",
    )
    g.add_argument(
        "--alpha",
        type=float,
        default=S,
        help="labelled cross-entropy weight for estimators without label support, e.g. "
        "gumbel-softmax (default 100 = 1/0.01)",
    )
    g.add_argument(
        "--labelled-batch-size",
        type=int,
        default=S,
        help="labelled rows per step (default: --batch-size, at most --labels)",
    )
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=S, help=f"epochs (default {d.epochs})")
    g.add_argument("--batch-size", type=int, default=S, help=f"batch size (default {d.batch_size})")
    g.add_argument("--lr", type=float, default=S, help=f"Adam learning rate (default {d.lr})")
    g.add_argument("--seed", type=int, default=S, help=f"random seed (default {d.seed})")
    g.add_argument("--max-steps", type=int, default=S, help="stop after this many steps in total")
    g.add_argument(
        "--max-time",
        type=float,
        default=S,
        dest="max_time_s",
        help="stop after this many training seconds (the last epoch is cut short and validated)",
    )
    g = p.add_argument_group("run")
    g.add_argument(
        "--device", default=S, help=f"torch device: cpu, cuda, cuda:1 … (default {d.device})"
    )
    g.add_argument(
        "--out",
        default=S,
        help="run folder (default runs/<dataset>-<model>-<latent>-<estimator>-seed<seed>)",
    )
    g.add_argument("--resume", action="store_true", default=S, help="continue from OUT/last.pt")
    g.add_argument(
        "--overwrite", action="store_true", default=S, help="replace an existing run in OUT"
    )
    g.add_argument(
        "--eval-samples",
        type=int,
        default=S,
        help=f"IWAE samples at the final evaluation (default {d.eval_samples})",
    )
    g.add_argument("--log-every", type=int, default=S, help="progress-bar refresh, in steps")
    g.add_argument("--num-workers", type=int, default=S, help=argparse.SUPPRESS)
    g.add_argument("--quiet", action="store_true", default=S, help="no progress output")
    g = p.add_argument_group("faults and parallelism")
    g.add_argument(
        "--skip-nonfinite",
        action="store_true",
        default=S,
        help="skip a batch with NaN/inf potentials, losses or gradients (counted in the metrics' "
        "'skipped') instead of stopping",
    )
    g.add_argument(
        "--solver-workers",
        type=int,
        default=S,
        help="threads for CPU solvers: z* is solved there while the KL is computed (default 0: "
        "none). Several processes: torchrun --nproc_per_node N -m structvae train (docs/distributed.md)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="structvae",
        description="Discrete and structured VAEs trained by direct optimization through arg max.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser(
        "train",
        help="train a VAE (no arguments: mnist-sample, direct, latent 1x10)",
        description="Train a VAE; every option has a default, so `structvae train` alone works offline.",
    )
    _add_train_args(p)
    p.set_defaults(subparser=p)
    p = sub.add_parser(
        "evaluate",
        help="evaluate a run's best checkpoint",
        description="Evaluate a run folder's checkpoint.",
    )
    p.add_argument("run", help="run folder (holds config.json and best.pt)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument(
        "--samples",
        type=int,
        default=None,
        help="IWAE samples (default: the run's eval_samples; 0: skip)",
    )
    p.add_argument("--checkpoint", default="best.pt", help="checkpoint file in the run folder")
    p.add_argument("--device", default=None, help="torch device (default: the run's)")
    sub.add_parser("solvers", help="list the arg-max solvers")
    from .lab.run import add_arguments as _add_gradients_args

    p = sub.add_parser(
        "gradients",
        help="gradient-quality lab: estimators against the exact gradient (docs/gradients.md)",
        description="Bias, variance, cosine and expected improvement of gradient estimators "
        "against the exact encoder gradient by enumeration, at points of a training trajectory.",
    )
    _add_gradients_args(p)
    sub.add_parser("estimators", help="list the gradient estimators")
    return parser


def _train(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .data import DatasetCorruptError, DatasetNotFoundError
    from .errors import SolverError
    from .train import CheckpointError, TrainConfig, _auto_out, check_config, train

    parser = args.subparser  # errors read "structvae train: error: ..."
    given = {k: v for k, v in vars(args).items() if k not in ("command", "subparser")}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in given.items() if k in fields})
    if config.resume:
        out = Path(config.out) if config.out is not None else _auto_out(config)
        if not (out / "last.pt").is_file():
            parser.error(f"--resume: {out / 'last.pt'} does not exist, nothing to resume")
        cfg_path = out / "config.json"
        if cfg_path.is_file():
            saved = json.loads(cfg_path.read_text())
            merged = {k: v for k, v in saved.items() if k in fields}
            for k, v in given.items():
                if k in fields and k in merged and merged[k] != v and k not in _RESUME_MAY_CHANGE:
                    parser.error(
                        f"--resume: --{k.replace('_', '-')} {v} differs from the run's {merged[k]!r}"
                    )
            merged.update({k: v for k, v in given.items() if k in fields})
            merged["out"] = str(out)
            merged["resume"] = True
            config = TrainConfig(**merged)
    try:
        check_config(config)
    except ValueError as e:
        parser.error(str(e))
    try:
        train(config)
    except (DatasetNotFoundError, DatasetCorruptError) as e:
        print(f"structvae train: error: {e}", file=sys.stderr)
        return 1
    except CheckpointError as e:
        print(f"structvae train: error: {e}", file=sys.stderr)
        return 1
    except (FloatingPointError, SolverError) as e:  # NaN/inf at a step, a failing solver
        print(f"structvae train: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM; train() said so unless --quiet
        if config.quiet:
            print("structvae train: interrupted; continue with --resume", file=sys.stderr)
        return 130
    return 0


_RESUME_MAY_CHANGE = {
    "epochs",
    "max_steps",
    "max_time_s",
    "device",
    "eval_samples",
    "log_every",
    "num_workers",
    "quiet",
    "resume",
    "out",
    "data_root",
    "download",
    "skip_nonfinite",
    "solver_workers",
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``structvae`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command == "train":
        return _train(parser, args)
    if args.command == "evaluate":
        from .train import CheckpointError, evaluate

        try:
            res = evaluate(
                args.run,
                split=args.split,
                samples=args.samples,
                checkpoint=args.checkpoint,
                device=args.device,
            )
        except (FileNotFoundError, CheckpointError, ValueError) as e:
            print(f"structvae evaluate: error: {e}", file=sys.stderr)
            return 1
        print(json.dumps(res, indent=2))
        return 0
    if args.command == "gradients":
        from .lab.run import main as gradients_main

        return gradients_main(args)
    if args.command == "solvers":
        from .solvers import available_solvers, get_solver

        for name in available_solvers():
            print(f"{name:16s} {_first_line(get_solver, name)}")
        return 0
    if args.command == "estimators":
        from .estimators import available_estimators, get_estimator

        for name in available_estimators():
            print(f"{name:16s} {_first_line(get_estimator, name)}")
        return 0
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover
    return 2

"""The ``structvae`` command: ``train``, ``evaluate``, ``solvers``, ``estimators``, ``datasets``.

structvae train                                  # mnist-sample, direct, 1x10: a few minutes on CPU
structvae train --dataset mnist --data-root ~/data --latent 1x20 --estimator gumbel-softmax
structvae train --out runs/x --resume --epochs 100
structvae evaluate runs/x --samples 1000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]


def _first_line(build, name: str) -> str:
    try:
        obj = build(name)
    except Exception as e:  # a plugin that cannot be built with defaults
        return f"(cannot be built with default options: {e})"
    wrapped = getattr(obj, "fn", None)  # a FunctionSolver: the user's function's docstring
    doc = ((wrapped.__doc__ if callable(wrapped) else None) or type(obj).__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


_S = argparse.SUPPRESS  # unset flags stay absent, so --resume can fill them from the run


def _declared(name: str) -> tuple[tuple | None, str, list[str]]:
    """``(choices, help, models)`` of the model option ``name`` from the registered models'
    declarations (:class:`~structvae.options.Option`): the union of their choices (None when
    one of them allows any value), the first help line, the models that declare it."""
    from .models import available_models
    from .training.specs import model_options

    choices: list | None = []
    help_text, models = "", []
    for m in available_models():
        for o in model_options(m):
            if o.name != name:
                continue
            models.append(m)
            help_text = help_text or o.help
            if o.choices is None or choices is None:
                choices = None
            else:
                choices += [c for c in o.choices if c not in choices]
    return (tuple(choices) if choices else None), help_text, models


def _add_model_option(g, name: str, extra: str = "") -> None:
    """``--name`` for the model option ``name``, its choices and help from the declarations."""
    choices, help_text, models = _declared(name)
    g.add_argument(
        f"--{name}",
        default=_S,
        choices=choices,
        help=f"{' / '.join(models) or 'no'} model{'s' if len(models) > 1 else ''}: {help_text}"
        + extra,
    )


def _add_data_args(p: argparse.ArgumentParser, d) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=_S, help=f"dataset name (default {d.dataset})")
    g.add_argument("--data-root", default=_S, help="folder holding the dataset files")
    g.add_argument("--download", action="store_true", default=_S, help="download missing files")
    from .data import BINARIZE_MODES

    g.add_argument(
        "--binarize",
        default=_S,
        choices=BINARIZE_MODES,
        help=f"binarisation (default {d.binarize})",
    )
    g.add_argument("--split-seed", type=int, default=_S, help="seed of the validation split")
    g.add_argument(
        "--attributes",
        default=_S,
        help="celeba: comma-separated attributes, or 'all' (default Eyeglasses,Smiling,Male)",
    )
    g.add_argument(
        "--label-fraction",
        type=float,
        default=_S,
        help="celeba: fraction of training images that keep their attribute labels (default 1)",
    )


def _add_model_args(p: argparse.ArgumentParser, d) -> None:
    g = p.add_argument_group(
        "model and estimator",
        "--model and --estimator take specs with options: --model structured:pairwise=general, "
        "--estimator direct:eps=0.1,solver=ilp (the options each declares; an option with a "
        "flag of its own, e.g. --eps, is the same option)",
    )
    g.add_argument("--model", default=_S, help=f"model or model spec (default {d.model})")
    g.add_argument(
        "--latent",
        default=_S,
        help=f"latent spec: NxK for categorical (default {d.latent}), N binary latents for structured",
    )
    _add_model_option(g, "pairwise")
    _add_model_option(g, "graph", " (complete | chain | grid | tree | none)")
    _add_model_option(g, "kl")
    g.add_argument(
        "--model-opt",
        action="append",
        default=_S,
        metavar="KEY=VALUE",
        help="an option the model declares (repeatable, or comma-separated): "
        "--model-opt hidden=400 (a registered model's own options, too)",
    )
    g.add_argument(
        "--estimator",
        default=_S,
        help=f"gradient estimator or spec (default {d.estimator}); see `structvae estimators`",
    )
    g.add_argument(
        "--estimator-opt",
        action="append",
        default=_S,
        metavar="KEY=VALUE",
        help="an option the estimator declares (repeatable): --estimator-opt samples=4",
    )
    g.add_argument(
        "--solver",
        default=_S,
        help="the run's arg-max solver, for the model and direct (default: by structure); "
        "see `structvae solvers`",
    )
    _add_objective_arg(g)
    g.add_argument(
        "--eps",
        type=float,
        default=_S,
        help="eps0 of the schedule max(eps0*exp(-1e-5 t), min(0.1, eps0)) (default 0.1, or 1 "
        "with --objective paper; 1 under a trained KL leaves the encoder near uniform)",
    )
    g.add_argument(
        "--temperature",
        type=float,
        default=_S,
        help="tau0 of the Gumbel-softmax schedule max(tau0*exp(-1e-5 t), min(0.1, tau0)) (default 1)",
    )


def _add_objective_arg(g) -> None:
    """``--objective elbo|paper`` (:mod:`structvae.models.reference`)."""
    g.add_argument(
        "--objective",
        choices=("elbo", "paper"),
        default=_S,
        help="elbo (default): every estimator trains the negative ELBO, KL gradient included; "
        "paper: the reference code's objective (direct: KL not trained, eps0 = 1; "
        "see docs/objectives.md)",
    )


def _add_semisupervised_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("semi-supervised (--model semisupervised)")
    g.add_argument(
        "--labels",
        type=int,
        default=_S,
        help="keep the labels of a balanced subset of this many training images (N/K per class); "
        "each step adds a labelled batch to the unlabelled one",
    )
    g.add_argument(
        "--label-eps",
        type=float,
        default=_S,
        help="direct: eps of labelled rows, whose z_eps is the label (default 0.01)",
    )
    g.add_argument(
        "--alpha",
        type=float,
        default=_S,
        help="labelled cross-entropy weight for estimators without label support, e.g. "
        "gumbel-softmax (default 100 = 1/0.01)",
    )
    g.add_argument(
        "--labelled-batch-size",
        type=int,
        default=_S,
        help="labelled rows per step (default: --batch-size, at most --labels)",
    )


def _add_optimisation_args(p: argparse.ArgumentParser, d) -> None:
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=_S, help=f"epochs (default {d.epochs})")
    g.add_argument(
        "--batch-size", type=int, default=_S, help=f"batch size (default {d.batch_size})"
    )
    g.add_argument("--lr", type=float, default=_S, help=f"Adam learning rate (default {d.lr})")
    g.add_argument("--seed", type=int, default=_S, help=f"random seed (default {d.seed})")
    g.add_argument(
        "--max-steps",
        type=int,
        default=_S,
        help="this call's budget: stop after this many steps (a mid-epoch checkpoint; "
        "--resume continues exactly)",
    )
    g.add_argument(
        "--max-time",
        type=float,
        default=_S,
        dest="max_time_s",
        help="this call's budget in training seconds (the cut epoch is validated; --resume "
        "continues exactly)",
    )


def _add_run_args(p: argparse.ArgumentParser, d) -> None:
    g = p.add_argument_group("run")
    g.add_argument(
        "--device", default=_S, help=f"torch device: cpu, cuda, cuda:1 … (default {d.device})"
    )
    g.add_argument(
        "--out",
        default=_S,
        help="run folder (default runs/<dataset>-<model>-<latent>-<estimator>-seed<seed>; "
        "no <latent> for the attribute model's default style size)",
    )
    g.add_argument("--resume", action="store_true", default=_S, help="continue from OUT/last.pt")
    g.add_argument(
        "--overwrite", action="store_true", default=_S, help="replace an existing run in OUT"
    )
    g.add_argument(
        "--eval-samples",
        type=int,
        default=_S,
        help=f"IWAE samples at the final evaluation (default {d.eval_samples})",
    )
    g.add_argument("--log-every", type=int, default=_S, help="progress-bar refresh, in steps")
    g.add_argument("--num-workers", type=int, default=_S, help=argparse.SUPPRESS)
    g.add_argument("--quiet", action="store_true", default=_S, help="no progress output")
    g = p.add_argument_group("faults and parallelism")
    g.add_argument(
        "--skip-nonfinite",
        action="store_true",
        default=_S,
        help="skip a batch with NaN/inf potentials, losses or gradients (counted in the metrics' "
        "'skipped') instead of stopping",
    )
    g.add_argument(
        "--solver-workers",
        type=int,
        default=_S,
        help="threads for CPU solvers: z* is solved there while the KL is computed (default 0: "
        "none). Several processes: torchrun --nproc_per_node N -m structvae train (docs/distributed.md)",
    )


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from .training import TrainConfig

    d = TrainConfig()
    _add_data_args(p, d)
    _add_model_args(p, d)
    _add_semisupervised_args(p)
    _add_optimisation_args(p, d)
    _add_run_args(p, d)


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
    sub.add_parser("datasets", help="list the datasets")
    _add_celeba_demo_parser(sub)
    _add_import_args(parser, sub)
    _add_run_flags(parser, sub)
    return parser


def _add_celeba_demo_parser(sub) -> None:
    """``structvae make-celeba-demo FOLDER --images N``: the synthetic faces of
    :mod:`structvae.faces` in CelebA's file formats."""
    p = sub.add_parser(
        "make-celeba-demo",
        help="write synthetic faces in CelebA's file formats (for --dataset celeba)",
        description="Write N procedurally drawn faces (Eyeglasses, Smiling, Male, No_Beard, "
        "Wearing_Lipstick and the hair colours drawn visibly) as img_align_celeba/*.jpg, "
        "list_attr_celeba.txt and list_eval_partition.txt (80/10/10) into FOLDER; then "
        "`structvae train --dataset celeba --data-root FOLDER --binarize none --model attribute`.",
    )
    p.add_argument("folder", help="where to write the files (created if missing)")
    p.add_argument("--images", type=int, default=2000, help="number of faces (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def _make_celeba_demo(args: argparse.Namespace) -> int:
    from .faces import make_synthetic_celeba

    try:
        make_synthetic_celeba(args.folder, num_images=args.images, seed=args.seed)
    except (ValueError, OSError) as e:
        print(f"structvae make-celeba-demo: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.images} synthetic faces in CelebA's formats to {args.folder}")
    return 0


# ------------------------------------------------------- errors, threads, verbosity (issue 13)


def _add_run_flags(parser: argparse.ArgumentParser, sub) -> None:
    """``--debug`` everywhere; ``--threads`` on train and evaluate; ``--no-quiet`` on train."""
    debug = "show the full traceback of an error instead of the one-line message"
    parser.add_argument("--debug", action="store_true", help=debug)
    for p in sub.choices.values():  # after the command too: `structvae train --debug`
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug)
    for name in ("train", "evaluate"):
        sub.choices[name].add_argument(
            "--threads",
            type=int,
            default=argparse.SUPPRESS,
            metavar="N",
            help="torch's CPU threads for this process (default: torch's own choice, usually one "
            "per core; on a shared or busy machine 1 is often fastest)",
        )
    sub.choices["train"].add_argument(
        "--no-quiet",
        dest="quiet",
        action="store_false",
        default=argparse.SUPPRESS,
        help="progress output (the default; undoes an earlier --quiet)",
    )


def _set_threads(args: argparse.Namespace) -> None:
    """Apply ``--threads N`` (checked) before any torch work."""
    n = getattr(args, "threads", None)
    if n is None:
        return
    if n < 1:
        raise ValueError(f"--threads must be a positive integer, got {n}")
    import torch

    torch.set_num_threads(n)


def _say_finished(config) -> bool:
    """``--resume`` of a run that has trained all its epochs: say so (True), evaluate nothing."""
    from .training.rundir import _auto_out, finished_run

    out = Path(config.out) if config.out is not None else _auto_out(config)
    done = finished_run(out, config.epochs)
    if done is None:
        return False
    loss = done.get("test_loss")
    loss_text = f", test loss {loss:.2f}" if isinstance(loss, (int, float)) else ""
    print(
        f"structvae train: {out} is finished ({done.get('epochs')} epochs{loss_text}); nothing "
        f"to do: pass --epochs above {done.get('epochs')} to train it further, or run "
        f"`structvae evaluate {out}`"
    )
    return True


# ------------------------------------------------------------------------------- plugins

_IMPORT_HELP = (
    "import a module or .py file first, so that the solvers, estimators, models and datasets it "
    "registers can be used (repeatable; also $STRUCTVAE_PLUGINS and 'structvae.plugins' entry "
    "points)"
)


def _add_import_args(parser: argparse.ArgumentParser, sub) -> None:
    """``--import MODULE_OR_FILE.py`` on the top-level parser and on every subcommand."""
    kw = {"action": "append", "default": [], "metavar": "MODULE_OR_FILE.py", "help": _IMPORT_HELP}
    parser.add_argument("--import", dest="global_imports", **kw)
    for p in sub.choices.values():
        p.add_argument("--import", dest="imports", **kw)


def _list_datasets() -> int:
    from .data import DATASETS, get_dataset

    for name in DATASETS:
        info = get_dataset(name)
        shape = "x".join(map(str, info.image_shape))
        print(f"{name:16s} {shape:8s} {info.description}")
    return 0


def _scan_imports(argv: list[str]) -> tuple[list[str], str | None]:
    """The ``--import`` values in ``argv`` (read before the parser is built, so that what the
    plugins register shapes it) and the subcommand's name (``None`` when there is none)."""
    imports, command, i = [], None, 0
    while i < len(argv) and argv[i] != "--":
        arg = argv[i]
        if arg == "--import" and i + 1 < len(argv):
            imports.append(argv[i + 1])
            i += 1
        elif arg.startswith("--import="):
            imports.append(arg.split("=", 1)[1])
        elif command is None and not arg.startswith("-"):
            command = arg
        i += 1
    return imports, command


def _load_plugins(imports: list[str], command: str | None, debug: bool = False) -> bool:
    """Load the plugins; on failure print the one-line error (``--debug``: raise, so that the
    plugin's traceback shows) and return False."""
    from .plugins import PluginError, load_plugins

    try:
        load_plugins(imports)
    except PluginError as e:
        if debug:
            raise
        print(f"structvae{' ' + command if command else ''}: error: {e}", file=sys.stderr)
        return False
    return True


def _given(args: argparse.Namespace) -> dict:
    """The ``TrainConfig`` fields given on the command line: flags, ``--model-opt`` /
    ``--estimator-opt``, and what the ``--model`` / ``--estimator`` specs set."""
    from .training import TrainConfig
    from .training.build import spec_fields
    from .training.specs import parse_assignments

    fields = set(TrainConfig.__dataclass_fields__) | {"model_opt", "estimator_opt"}
    given = {k: v for k, v in vars(args).items() if k in fields}  # not --import, --debug …
    for flag, key in (("model_opt", "model_options"), ("estimator_opt", "estimator_options")):
        if flag in given:
            items = [part for item in given.pop(flag) for part in item.split(",")]
            given[key] = parse_assignments(items, f"--{flag.replace('_', '-')}")
    if "model" in given or "estimator" in given:
        d = TrainConfig()
        found = spec_fields(given.get("model", d.model), given.get("estimator", d.estimator))
        for key, value in found.items():
            if key.endswith("_options"):
                given[key] = {**given.get(key, {}), **value}
            elif key in given and given[key] != value and key not in ("model", "estimator"):
                raise ValueError(
                    f"{key} is given twice: --{key.replace('_', '-')} {given[key]} "
                    f"and {value} in the spec"
                )
            else:
                given[key] = value
    return given


def _resumed_config(parser: argparse.ArgumentParser, given: dict):
    """The configuration of ``--resume``: the run's own (``OUT/config.json``) with the given
    flags on top, by each field's resume policy (``TrainConfig`` field metadata): identity
    fields must agree, inherited ones are the run's unless given, per-invocation ones (the
    budgets, ``--quiet``) never come from the run."""
    from .training import TrainConfig
    from .training.build import resolve_specs, resume_mismatch
    from .training.config import INVOCATION, resume_policy
    from .training.loading import load_run_config
    from .training.rundir import _auto_out

    config = TrainConfig(**given)
    out = Path(config.out) if config.out is not None else _auto_out(config)
    if not (out / "last.pt").is_file():
        parser.error(f"--resume: {out / 'last.pt'} does not exist, nothing to resume")
    if not (out / "config.json").is_file():
        return config
    saved, _ = load_run_config(out)
    merged = {k: v for k, v in saved.to_dict().items() if resume_policy(k) != INVOCATION}
    merged.update(given, out=str(out), resume=True)
    config = TrainConfig(**merged)
    clash = resume_mismatch(saved, resolve_specs(config))
    if clash is not None:
        name, was, now = clash
        field, _, key = name.partition(":")
        flag = f"--{field[:-8]}-opt {key}=" if key else f"--{field.replace('_', '-')} "
        parser.error(f"--resume: {flag}{now} differs from the run's {was!r}")
    return config


def _train(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .training import TrainConfig, Trainer
    from .training.rundir import check_out_name

    parser = args.subparser  # errors read "structvae train: error: ..."
    try:
        given = _given(args)
        if given.get("out") is not None:
            check_out_name(given["out"])  # '' would be the current folder
        config = _resumed_config(parser, given) if given.get("resume") else TrainConfig(**given)
        trainer = Trainer(config)  # checks and builds once, writes nothing
    except ValueError as e:
        parser.error(str(e))
    if config.resume and _say_finished(trainer.config):
        return 0
    try:
        trainer.fit()  # its errors become one line in main()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM; train() said so unless --quiet
        if trainer.config.quiet:
            print("structvae train: interrupted; continue with --resume", file=sys.stderr)
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``structvae`` console script; returns the exit status.

    An error becomes one line ``structvae <command>: error: …`` on stderr (exit status 1)
    saying what to do; ``--debug`` shows the traceback instead.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    imports, command = _scan_imports(argv)
    if not _load_plugins(imports, command, debug="--debug" in argv):
        return 1
    parser = build_parser()
    args = parser.parse_args(argv)
    plugin_args = vars(args)  # the subcommands never see --import: it is done here
    late = [*plugin_args.pop("global_imports", []), *plugin_args.pop("imports", [])]
    if not _load_plugins(late, args.command, getattr(args, "debug", False)):  # e.g. --imp x
        return 1
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        _set_threads(args)
        return _dispatch(parser, args)
    except Exception as e:
        if getattr(args, "debug", False):
            raise
        from .failures import describe

        print(f"structvae {args.command}: error: {describe(e)}", file=sys.stderr)
        return 1


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run the parsed command."""
    if args.command == "train":
        return _train(parser, args)
    if args.command == "evaluate":
        from .training import evaluate

        res = evaluate(
            args.run,
            split=args.split,
            samples=args.samples,
            checkpoint=args.checkpoint,
            device=args.device,
        )
        print(json.dumps(res, indent=2))
        return 0
    if args.command == "make-celeba-demo":
        return _make_celeba_demo(args)
    if args.command == "gradients":
        from .lab.run import main as gradients_main

        return gradients_main(args)
    if args.command == "solvers":
        from .solvers import available_solvers, get_solver

        for name in available_solvers():
            print(f"{name:16s} {_first_line(get_solver, name)}")
        return 0
    if args.command == "datasets":
        return _list_datasets()
    if args.command == "estimators":
        from .estimators import available_estimators, get_estimator

        for name in available_estimators():
            print(f"{name:16s} {_first_line(get_estimator, name)}")
        return 0
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover
    return 2

"""Building a run from its configuration: checks, specs, the model, estimator and solver.

:func:`check_config` is the one place a run is built: it reads the ``--model`` / ``--estimator``
specs (:func:`resolve_specs`), converts their options by the declarations
(:class:`~structvae.options.Option`), seeds and builds the model, builds the estimator, makes
the run's one solver decision (:func:`~structvae.solvers.select.select`) and hands the same
solver instance to the model and, when it ``uses_solver``, to the estimator.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..estimators import available_estimators, get_estimator
from ..estimators.schedules import Constant, ExponentialDecay, paper_temperature
from ..models import available_models, build_model
from ..models.reference import check_objective, default_eps0, set_objective
from ..solvers.pool import SolverPool, check_workers
from ..solvers.select import select
from .config import DEFAULT_EPS, DEFAULT_LABEL_EPS, TrainConfig, identity_fields, model_latent
from .rng import _seed_everything
from .specs import convert_options, estimator_options, model_options, parse_spec

__all__ = [
    "RunParts",
    "check_config",
    "build_estimator",
    "resolve_specs",
    "spec_fields",
    "build_run_model",
    "run_identity",
    "resume_mismatch",
]

#: Flat ``TrainConfig`` fields that are model options (``--pairwise`` …), passed to a model
#: that declares them.
MODEL_FIELDS = ("pairwise", "graph", "kl", "alpha", "attributes")
#: Flat fields that are estimator options; ``solver`` is the run's solver request.
ESTIMATOR_FIELDS = ("solver", "eps", "temperature", "label_eps")


@dataclass
class RunParts:
    """What :func:`check_config` built and the run uses: the configuration with its specs
    resolved, the model (initialised under ``config.seed``, holding the run's solver), the
    estimator (set up for the model's latents), the solver and the input size.
    ``model, estimator = check_config(config)`` unpacks the first two."""

    config: TrainConfig
    model: nn.Module
    estimator: object
    solver: object
    input_dim: int

    def __iter__(self) -> Iterator:
        return iter((self.model, self.estimator))


# ------------------------------------------------------------------------------ specs
def _spec_fields(spec_text: str, declared, fields: tuple[str, ...], owner: str) -> dict:
    """The config fields a spec sets: ``name``, flat fields, and ``options`` for the rest."""
    spec = parse_spec(spec_text)
    values = convert_options(spec.options, declared(spec.name), f"{owner} {spec.name!r}")
    flat = {k: v for k, v in values.items() if k in fields}
    rest = {k: v for k, v in values.items() if k not in fields}
    return {"name": spec.name, "flat": flat, "options": rest}


def spec_fields(model: str, estimator: str) -> dict:
    """The :class:`TrainConfig` fields that the ``model`` / ``estimator`` specs set
    (``"direct:eps=0.1"`` -> ``{"estimator": "direct", "eps": 0.1}``), options without a flat
    field in ``model_options`` / ``estimator_options``. Plain names give just the names."""
    out: dict = {}
    for key, text, declared, fields in (
        ("model", model, model_options, MODEL_FIELDS),
        ("estimator", estimator, estimator_options, ESTIMATOR_FIELDS),
    ):
        got = _spec_fields(text, declared, fields, key)
        out[key] = got["name"]
        out.update(got["flat"])
        if got["options"]:
            out[f"{key}_options"] = got["options"]
    return out


def resolve_specs(config: TrainConfig) -> TrainConfig:
    """``config`` with ``model`` / ``estimator`` reduced to names: spec options go to the flat
    fields (``--estimator direct:eps=0.1`` is ``--eps 0.1``) or to ``model_options`` /
    ``estimator_options``, converted by the declared options. An option given twice with
    different values is a ``ValueError``."""
    if config.model not in available_models() and ":" not in config.model:
        build_model(config.model)  # the registry's "unknown model ...; available: ..."
    if config.estimator not in available_estimators() and ":" not in config.estimator:
        get_estimator(config.estimator)
    found = spec_fields(config.model, config.estimator)
    changes: dict = {"model": found.pop("model"), "estimator": found.pop("estimator")}
    for key in ("model_options", "estimator_options"):
        given, spec = dict(getattr(config, key)), found.pop(key, {})
        for k, v in spec.items():
            if k in given and given[k] != v:
                raise ValueError(f"option {k} is given twice: {given[k]!r} and {v!r}")
        changes[key] = {**given, **spec}
    for name, value in found.items():
        old = getattr(config, name)
        if old is not None and old != value:
            raise ValueError(f"{name} is given twice: --{name.replace('_', '-')} {old} and {value}")
        changes[name] = value
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for key, declared, kind in (
        ("model_options", model_options, "model"),
        ("estimator_options", estimator_options, "estimator"),
    ):
        clash = sorted(set(changes[key]) & fields)
        if clash:
            raise ValueError(f"give {clash[0]} as --{clash[0].replace('_', '-')}, not in {key}")
        name = changes[kind]
        changes[key] = convert_options(changes[key], declared(name), f"{kind} {name!r}")
    return dataclasses.replace(config, **changes)


def run_identity(config: TrainConfig) -> dict:
    """What a resumption must match: every identity field of ``config`` (resolved specs), in
    JSON form (a tuple equals the list ``config.json`` holds); of ``model_options`` /
    ``estimator_options`` only the options declared with ``identity=True`` (or unknown)."""
    out = {}
    for name in identity_fields():
        value = getattr(config, name)
        if name in ("model_options", "estimator_options"):
            try:
                declared = (model_options if name == "model_options" else estimator_options)(
                    config.model if name == "model_options" else config.estimator
                )
            except ValueError:  # a plugin that is not registered in this process
                declared = ()
            free = {o.name for o in declared if not o.identity}
            value = {k: v for k, v in value.items() if k not in free}
        out[name] = json.loads(json.dumps(value, default=str))
    return out


def resume_mismatch(saved: TrainConfig, config: TrainConfig) -> tuple[str, object, object] | None:
    """``(what, saved value, new value)`` of the first identity field where ``config`` differs
    from the run it resumes (both with specs resolved), else None. ``what`` is the field name,
    or ``"model_options:KEY"`` / ``"estimator_options:KEY"`` for one option of those."""
    a, b = run_identity(saved), run_identity(config)
    for name in a:
        if a[name] == b[name]:
            continue
        if isinstance(a[name], dict) and isinstance(b[name], dict):
            key = next(k for k in sorted({*a[name], *b[name]}) if a[name].get(k) != b[name].get(k))
            return f"{name}:{key}", a[name].get(key), b[name].get(key)
        return name, a[name], b[name]
    return None


# ------------------------------------------------------------------------- estimator
def _schedule(start: float, every: int, name: str) -> ExponentialDecay:
    start = float(start)
    if not math.isfinite(start) or start <= 0:
        raise ValueError(f"--{name} must be a positive number, got {start}")
    return ExponentialDecay(start=start, rate=1e-5, every=every, minimum=min(0.1, start))


def _label_eps(value: float) -> Constant:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"--label-eps must be a positive number, got {value}")
    return Constant(value)


_SCHEDULES = {
    "eps": lambda v: _schedule(v, 500, "eps"),
    "temperature": lambda v: _schedule(v, 1000, "temperature"),
    "label_eps": _label_eps,
}


def build_estimator(config: TrainConfig, solver=None):
    """The estimator of ``config`` with its ε / τ schedules, its declared options and, when it
    ``uses_solver``, the run's ``solver`` instance.

    Raises ``ValueError`` (one line) for an unknown name, or for ``--solver`` / ``--eps`` /
    ``--temperature`` / ``--label-eps`` given to an estimator that does not take it.
    """
    name = config.estimator
    declared = {o.name for o in estimator_options(name)}  # unknown names raise here
    options = convert_options(
        config.estimator_options, estimator_options(name), f"estimator {name!r}"
    )
    for key in ESTIMATOR_FIELDS:
        value = getattr(config, key)
        if value is not None and key not in declared:
            raise ValueError(f"estimator {name!r} does not take --{key.replace('_', '-')}")
        if value is not None and key in _SCHEDULES:
            options[key] = _SCHEDULES[key](value)
    if "eps" in declared and "eps" not in options:
        options["eps"] = _SCHEDULES["eps"](default_eps0(config.objective, DEFAULT_EPS))
    if "temperature" in declared and "temperature" not in options:
        options["temperature"] = paper_temperature()
    labelled = config.labels is not None or config.model in ("attribute", "celeba")
    if labelled and "label_eps" in declared and "label_eps" not in options:
        options["label_eps"] = _label_eps(DEFAULT_LABEL_EPS)
    if config.solver_workers and "pool" in declared:
        options["pool"] = SolverPool(config.solver_workers)
    if solver is not None and "solver" in declared:
        options["solver"] = solver  # the run's one instance (select checked it)
    return get_estimator(name, **options)


# ----------------------------------------------------------------------------- model
def _model_options(config: TrainConfig) -> dict:
    """The model's options: the flat fields it declares (``--pairwise`` …) and
    ``model_options``, converted by its declarations; a flat model option given to a model that
    does not declare it is a ``ValueError`` naming the models that do."""
    declared = model_options(config.model)
    names = {o.name for o in declared}
    flat = {k: getattr(config, k) for k in MODEL_FIELDS if getattr(config, k) is not None}
    foreign = [k for k in flat if k not in names and k != "attributes"]  # attributes: data too
    if foreign:
        takers = [m for m in available_models() if foreign[0] in _names(model_options(m))]
        verb = "applies" if len(foreign) == 1 else "apply"
        raise ValueError(
            f"--{' / --'.join(foreign)} only {verb} to --model {' or '.join(takers) or '(none)'}"
        )
    opts = {k: v for k, v in flat.items() if k in names}
    opts.update(config.model_options)
    return convert_options(opts, declared, f"model {config.model!r}")


def _names(options) -> set[str]:
    return {o.name for o in options}


def build_run_model(
    config: TrainConfig, input_dim: int, solver_request=None, seed: bool = True
) -> nn.Module:
    """The model of ``config`` holding the run's solver, chosen by
    ``solvers.select(model.structure, solver_request or config.solver or "auto")``.

    ``seed``: initialise it under ``config.seed`` (as the run does; this seeds the global
    RNGs); ``False`` for a model whose weights are loaded next."""
    if seed:
        _seed_everything(config.seed)
    options = _model_options(config)
    model = build_model(config.model, latent=model_latent(config), input_dim=input_dim, **options)
    model.use_solver(select(model.structure, solver_request or config.solver or "auto"))
    return set_objective(model, config.objective)


def _size_solver(solver, workers: int) -> None:
    """``--solver-workers``: the per-sample threads of solvers that have them (ilp, custom
    functions)."""
    if workers and isinstance(getattr(solver, "workers", None), int):
        solver.workers = int(workers)


def _check_numbers(config: TrainConfig) -> None:
    from ..data import BINARIZE_MODES

    if config.binarize not in BINARIZE_MODES:
        raise ValueError(f"--binarize must be one of {', '.join(BINARIZE_MODES)}")
    for field in ("epochs", "batch_size", "log_every"):
        v = getattr(config, field)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"--{field.replace('_', '-')} must be a positive integer, got {v!r}")
    v = config.eval_samples
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"--eval-samples must be 0 (skip the IWAE evaluation) or more, got {v!r}")
    for field in ("max_steps", "labels", "labelled_batch_size"):
        v = getattr(config, field)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"--{field.replace('_', '-')} must be a positive integer, got {v!r}")
    if config.max_time_s is not None and not (
        isinstance(config.max_time_s, (int, float)) and config.max_time_s > 0
    ):
        raise ValueError(
            f"--max-time must be a positive number of seconds, got {config.max_time_s!r}"
        )
    if not (math.isfinite(config.lr) and config.lr > 0):
        raise ValueError(f"--lr must be a positive number, got {config.lr!r}")
    _device(config.device)
    check_workers(config.solver_workers)


def check_config(config: TrainConfig, input_dim: int | None = None) -> RunParts:
    """Validate ``config`` and build what the run uses (:class:`RunParts`), before any data is
    read or anything written.

    Raises ``ValueError`` with a one-line message: unknown dataset / model / estimator / solver
    or option, a bad latent spec, bad numbers, or an estimator/solver that cannot handle the
    model's latent structure (checked on a dummy input). ``input_dim`` defaults to the
    dataset's.
    """
    from ..data import dataset_image_shape

    config = resolve_specs(config)
    _canonical_dataset(config.dataset)
    if input_dim is None:
        input_dim = int(np.prod(dataset_image_shape(config.dataset)))
    _data_options(config)  # celeba: --attributes, --label-fraction, --binarize none
    _check_numbers(config)
    check_objective(config.objective)
    model = build_run_model(config, input_dim)
    _size_solver(model.solver, config.solver_workers)
    estimator = build_estimator(config, model.solver)
    estimator.setup(model.latent_shape)
    if config.labels is not None and not model.uses_labels:
        raise ValueError(
            f"--labels needs a model that uses labels (e.g. --model semisupervised); "
            f"{config.model!r} does not"
        )
    with torch.no_grad(), torch.random.fork_rng(devices=[]):  # the check draws no training noise
        potentials = model.encode(torch.zeros(1, input_dim))
    estimator.check(potentials)
    return RunParts(config, model, estimator, model.solver, input_dim)


def _canonical_dataset(name: str) -> str:
    from ..data import _canonical_name

    return _canonical_name(name)


def _data_options(config: TrainConfig) -> dict:
    """Dataset options (``--attributes``, ``--label-fraction``: the datasets that declare them,
    e.g. celeba and morpho-mnist), checked; a model that declares ``attributes`` needs such a
    dataset."""
    from ..data import available_datasets, get_dataset
    from ..data.labels import check_label_fraction

    opts = {
        k: getattr(config, k)
        for k in ("attributes", "label_fraction")
        if getattr(config, k) is not None
    }
    accepted = get_dataset(config.dataset).options
    refused = [k for k in opts if k not in accepted]
    with_attributes = [n for n in available_datasets() if "attributes" in get_dataset(n).options]
    if refused:
        flags = " / --".join(k.replace("_", "-") for k in refused)
        raise ValueError(
            f"--{flags} only apply to the attribute datasets ({', '.join(with_attributes)}), "
            f"not --dataset {config.dataset}"
        )
    if "attributes" in _names(model_options(config.model)) and "attributes" not in accepted:
        raise ValueError(
            f"--model {config.model} learns attribute labels; --dataset {config.dataset} has "
            f"none (use {' or '.join(with_attributes)})"
        )
    if "label_fraction" in opts:
        check_label_fraction(opts["label_fraction"])
    if _canonical_dataset(config.dataset) != "celeba":
        return opts
    from ..data.celeba import parse_attributes

    parse_attributes(opts.get("attributes"))
    if config.binarize != "none":
        raise ValueError(
            "--dataset celeba models colour intensities in [0, 1]: pass --binarize none "
            f"(got --binarize {config.binarize})"
        )
    return opts


def _device(spec: str) -> torch.device:
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"--device {spec!r} is not a torch device ({e})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {spec}: CUDA is not available on this machine")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise ValueError(
            f"--device {spec}: this machine has {n} CUDA device(s), cuda:0 to cuda:{n - 1}"
        )
    if device.type not in ("cpu", "cuda"):  # mps, xpu …: usable only if torch can allocate there
        try:
            torch.empty(0, device=device)
        except (RuntimeError, AssertionError) as e:
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(
                f"--device {spec} is not available on this machine ({why}); use --device cpu"
                + (" or cuda" if torch.cuda.is_available() else "")
            ) from None
    return device


def _load_data(config: TrainConfig):
    from ..data import load_dataset

    return load_dataset(
        config.dataset,
        root=config.data_root,
        download=config.download,
        binarize=config.binarize,
        split_seed=config.split_seed,
        **_data_options(config),
    )


def _labelled_subset(config: TrainConfig, splits) -> torch.Tensor | None:
    """With ``config.labels``: the balanced labelled training indices (drawn by ``seed``)."""
    if config.labels is None:
        return None
    from ..data.semisup import balanced_label_subset

    return balanced_label_subset(splits.train.y, config.labels, splits.num_classes, config.seed)

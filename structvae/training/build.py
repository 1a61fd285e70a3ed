"""Building a run from its configuration: checks, the estimator, model and data options."""

from __future__ import annotations

import inspect
import math

import numpy as np
import torch

from ..estimators import available_estimators, get_estimator
from ..estimators.schedules import Constant, ExponentialDecay, paper_temperature
from ..models import build_model
from ..models.reference import check_objective, default_eps0
from ..solvers import get_solver
from ..solvers.pool import check_workers
from .config import DEFAULT_EPS, DEFAULT_LABEL_EPS, TrainConfig


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


def _checked_solver(name: str) -> str:
    get_solver(name)  # raises ValueError naming the available solvers
    return name


def build_estimator(config: TrainConfig):
    """The estimator named by ``config`` with its solver and ε / τ schedule.

    Raises ``ValueError`` (one line) for an unknown name, or for ``--solver`` / ``--eps`` /
    ``--temperature`` given to an estimator that does not take it.
    """
    name = config.estimator
    if name not in available_estimators():
        raise ValueError(
            f"unknown estimator {name!r}; available: {', '.join(available_estimators())}"
        )
    params = inspect.signature(type(get_estimator(name)).__init__).parameters
    options: dict = {}
    for field, flag, make in (
        ("solver", "--solver", _checked_solver),
        ("eps", "--eps", lambda v: _schedule(v, 500, "eps")),
        ("temperature", "--temperature", lambda v: _schedule(v, 1000, "temperature")),
        ("label_eps", "--label-eps", _label_eps),
    ):
        value = getattr(config, field)
        if value is None:
            continue
        if field not in params:
            raise ValueError(f"estimator {name!r} does not take {flag}")
        options[field] = make(value)
    if "eps" in params and "eps" not in options:
        options["eps"] = _schedule(default_eps0(config.objective, DEFAULT_EPS), 500, "eps")
    if "temperature" in params and "temperature" not in options:
        options["temperature"] = paper_temperature()
    if config.labels is not None and "label_eps" in params and "label_eps" not in options:
        options["label_eps"] = _label_eps(DEFAULT_LABEL_EPS)
    return get_estimator(name, **options)


def _canonical_dataset(name: str) -> str:
    from .. import data

    canon = getattr(data, "_canonical_name", None)
    if canon is not None:
        return canon(name)
    if name not in data.DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(data.DATASETS)}")
    return name


def check_config(config: TrainConfig, input_dim: int | None = None):
    """Validate ``config`` before any work; returns ``(model, estimator)`` built from it.

    Raises ``ValueError`` with a one-line message: unknown dataset / model / estimator / solver,
    a bad latent spec, bad numbers, or an estimator/solver that cannot handle the model's
    latent structure (checked on a dummy input). ``input_dim`` defaults to the dataset's.
    """
    from ..data import BINARIZE_MODES, dataset_image_shape

    _canonical_dataset(config.dataset)
    if input_dim is None:
        input_dim = int(np.prod(dataset_image_shape(config.dataset)))
    _data_options(config)  # celeba: --attributes, --label-fraction, --binarize none
    if config.binarize not in BINARIZE_MODES:
        raise ValueError(f"--binarize must be one of {', '.join(BINARIZE_MODES)}")
    for field in ("epochs", "batch_size", "eval_samples", "log_every"):
        v = getattr(config, field)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"--{field.replace('_', '-')} must be a positive integer, got {v!r}")
    if config.max_steps is not None and config.max_steps < 1:
        raise ValueError(f"--max-steps must be a positive integer, got {config.max_steps!r}")
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
    check_objective(config.objective)
    estimator = build_estimator(config)
    model = build_model(
        config.model, latent=config.latent, input_dim=input_dim, **_model_options(config)
    )
    if getattr(estimator, "solver", "n/a") is None and hasattr(model, "default_solver"):
        estimator.solver = get_solver(model.default_solver)  # e.g. graphcut for supermodular
    if hasattr(model, "check_solver") and getattr(estimator, "solver", None) is not None:
        model.check_solver(estimator.solver)  # e.g. general couplings with --solver graphcut
    if config.labels is not None and not getattr(model, "uses_labels", False):
        raise ValueError(
            f"--labels needs a model that uses labels (e.g. --model semisupervised); "
            f"{config.model!r} does not"
        )
    for field in ("labels", "labelled_batch_size"):
        v = getattr(config, field)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"--{field.replace('_', '-')} must be a positive integer, got {v!r}")
    with torch.no_grad():
        potentials = model.encode(torch.zeros(1, input_dim))
    estimator.check(potentials)
    return model, estimator


def _model_options(config: TrainConfig) -> dict:
    """Model options that only some models take (``--pairwise``, ``--graph``: structured)."""
    opts = {k: getattr(config, k) for k in ("pairwise", "graph") if getattr(config, k) is not None}
    if opts and config.model not in ("structured", "celeba"):
        raise ValueError(f"--{' / --'.join(opts)} only apply to --model structured or celeba")
    if config.kl is not None:
        if config.model != "structured":
            raise ValueError("--kl only applies to --model structured")
        opts["kl"] = config.kl
    if config.alpha is not None:
        if config.model != "semisupervised":
            raise ValueError("--alpha only applies to --model semisupervised")
        opts["alpha"] = config.alpha
    if config.model == "celeba":
        opts["attributes"] = config.attributes
    return opts


def _data_options(config: TrainConfig) -> dict:
    """Dataset options (``--attributes``, ``--label-fraction``: celeba only), checked."""
    opts = {
        k: getattr(config, k)
        for k in ("attributes", "label_fraction")
        if getattr(config, k) is not None
    }
    if _canonical_dataset(config.dataset) != "celeba":
        if opts:
            flags = " / --".join(k.replace("_", "-") for k in opts)
            raise ValueError(f"--{flags} only apply to --dataset celeba")
        return opts
    from ..celeba import check_label_fraction, parse_attributes

    parse_attributes(opts.get("attributes"))
    check_label_fraction(opts.get("label_fraction", 1.0))
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
    from ..semisup_data import balanced_label_subset

    return balanced_label_subset(splits.train.y, config.labels, splits.num_classes, config.seed)

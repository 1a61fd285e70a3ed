"""One training loop for every model and estimator, with a run folder, resume and evaluation.

    from structvae.train import TrainConfig, train, evaluate
    results = train(TrainConfig(dataset="mnist-sample", estimator="direct", epochs=20))
    evaluate(results["run_dir"], split="test")

The run folder (``config.out``) holds:

- ``config.json``: the configuration (with the resolved run folder);
- ``metrics.jsonl`` and ``metrics.csv``: one row per epoch (``epoch``, ``iteration``,
  ``train_loss``, ``train_recon``, ``train_kl``, ``val_loss``, ``val_recon``, ``val_kl``,
  ``time_s`` — cumulative training seconds, evaluation and I/O excluded — ``eps``,
  ``temperature``);
- ``last.pt`` (everything needed to resume) and ``best.pt`` (the model with the lowest
  validation loss), both written atomically;
- ``reconstructions.png`` (fixed validation images, originals above reconstructions from the
  encoder's arg max) and ``samples.png`` (prior samples) of the current model, rewritten each
  epoch; ``best_reconstructions.png`` and ``best_samples.png`` from the best model at the end;
- ``curves.png``: train and validation loss against epoch and against training seconds;
- models with ``label_metrics(x, y) -> {name: [B]}`` (e.g. the semisupervised model's
  ``accuracy``) add ``val_<name>`` columns to the metrics and ``test_<name>`` to
  ``results.json``; models with ``generation_grid(n, generator)`` get ``generation_grid.png``
  (each epoch) and ``best_generation_grid.png``; with ``labels`` (semi-supervised),
  ``labelled_indices.json`` records the labelled subset;
- ``results.json``: the final evaluation of ``best.pt`` on the test set: ``test_loss`` (the
  paper's Table 1 metric: BCE at one sample z ~ q plus KL, averaged over the test set) and
  ``test_iwae_nll`` (importance-weighted −log p(x) with ``eval_samples`` samples).

Validation and test losses use the same one-sample metric for every estimator, with noise from
a dedicated generator seeded by ``seed`` (the same noise every epoch), so model selection and
resume do not depend on, nor disturb, the training RNG.

Resume (``resume=True``) restarts from ``last.pt`` at the next epoch boundary and reproduces the
uninterrupted run exactly: the checkpoint holds the model, the optimizer, the epoch and
iteration counters, the best validation loss, the metric history, the estimator's iteration
and state, the torch (CPU and CUDA), numpy and Python RNG states and the dynamic-binarisation
generator; the data order of epoch ``e`` is a function of ``(seed, e)`` only.
"""

from __future__ import annotations

import csv
import dataclasses
import inspect
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed
from .estimators import available_estimators, get_estimator
from .estimators.schedules import Constant, ExponentialDecay, paper_temperature
from .guard import sigterm_as_interrupt, train_step
from .models import build_model
from .models.reference import check_objective, default_eps0, set_objective
from .solvers import get_solver
from .solvers.pool import attach_pool, check_workers

__all__ = [
    "TrainConfig",
    "CheckpointError",
    "train",
    "evaluate",
    "check_config",
    "build_estimator",
    "save_checkpoint",
    "load_checkpoint",
    "DEFAULT_EPOCHS",
]

#: Default epochs: ``structvae train`` with no arguments (mnist-sample, direct, 1x10, batch 100)
#: finishes in about two minutes on two CPU cores.
DEFAULT_EPOCHS = 50

METRIC_FIELDS = (
    "epoch",
    "iteration",
    "train_loss",
    "train_recon",
    "train_kl",
    "val_loss",
    "val_recon",
    "val_kl",
    "time_s",
    "eps",
    "temperature",
    "skipped",
)

#: Fields that must agree between a run and its resumption.
_IDENTITY_FIELDS = (
    "dataset",
    "binarize",
    "split_seed",
    "model",
    "latent",
    "estimator",
    "objective",
    "solver",
    "pairwise",
    "graph",
    "kl",
    "eps",
    "temperature",
    "batch_size",
    "lr",
    "seed",
    "attributes",
    "label_fraction",
    "labels",
    "label_eps",
    "alpha",
    "labelled_batch_size",
)

_EVAL_SEED_OFFSET = 1_000_003  # the evaluation generators' seed is seed + this
_RECON_IMAGES = 16
_SAMPLE_IMAGES = 64
_GRID_STYLES = 10


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, truncated or incompatible; the message names it."""


DEFAULT_EPS = 0.1
"""ε₀ that ``structvae train`` uses for direct optimization when ``--eps`` is not given."""

DEFAULT_LABEL_EPS = 0.01
"""ε of direct's labelled rows (z_ε = label) with ``--labels``. The reference code's 0.05 gave
lower validation accuracy on MNIST with 100 labels (docs/semisupervised.md)."""


@dataclass
class TrainConfig:
    """Everything a run needs; every field is a ``structvae train`` flag (``--batch-size`` …).

    Attributes:
        dataset, data_root, download, binarize, split_seed: see :func:`structvae.data.load_dataset`.
        model: a registered model (:func:`structvae.models.build_model`), e.g. ``"categorical"``.
        latent: the model's latent spec; ``"NxK"`` (N variables × K categories) for categorical.
        estimator: a registered estimator (``direct``, ``gumbel-softmax``, ``exact`` …).
        objective: ``"elbo"`` (every estimator trains the negative ELBO, KL gradient included)
            or ``"paper"`` (the reference code's objective: direct's KL is computed but not
            trained and its default ε₀ is 1; :mod:`structvae.models.reference`).
        solver: arg-max solver for estimators that take one (``None``: picked by structure).
        pairwise, graph, kl: the structured model's coupling family, graph and KL choice
            (:class:`structvae.models.StructuredVAE`; ``None``: the model's defaults).
        eps: ε₀ of the paper's ε schedule, ε = max(ε₀·exp(−1e-5·t), min(0.1, ε₀)) updated every
            500 iterations (``None``: ε₀ = ``DEFAULT_EPS`` = 0.1, i.e. a constant 0.1; ``1.0`` is the
            paper's schedule). Direct optimization only. Why 0.1: the KL is trained here, and
            direct's encoder gradient is at most 1/ε per row, so with ε₀ = 1 the KL gradient
            dominates and the encoder stays near uniform (MNIST 1x10, 60 epochs: test loss
            195.0 with ε₀ = 1 against 164.9 with 0.1; see results/table1).
        temperature: τ₀ of the Gumbel-softmax schedule τ = max(τ₀·exp(−1e-5·t), min(0.1, τ₀))
            updated every 1000 iterations (``None``: τ₀ = 1).
        epochs, batch_size, lr, seed: Adam with learning rate ``lr``; ``seed`` seeds the model
            initialisation, the data order (per epoch), the Gumbel noise and the evaluation noise.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` …
        out: the run folder (``None``: ``runs/<dataset>-<model>-<latent>-<estimator>-seed<seed>``,
            with ``-2``, ``-3`` … appended when it exists, unless resuming).
        resume: continue from ``out/last.pt``.
        overwrite: replace the artifacts of an existing run in ``out`` (else that is an error).
        eval_samples: importance samples of the final IWAE evaluation.
        max_steps: stop after this many optimisation steps in total (for tests and smoke runs).
        max_time_s: stop once this many training seconds (``time_s``) have been spent, checked
            before every step; the interrupted epoch is still validated and checkpointed, and the
            final test evaluation runs as usual (for equal wall-clock budgets across estimators).
        log_every: refresh the progress bar's running loss every this many steps.
        num_workers: accepted for compatibility; the in-memory datasets are read in-process.
        quiet: no progress bars or per-epoch lines.
        skip_nonfinite: skip a batch whose potentials, losses or gradients hold NaN or inf
            (counted in the metrics' ``skipped``) instead of stopping with an error.
        solver_workers: threads for the CPU solvers (:mod:`structvae.solvers.pool`): the
            direct estimator solves z* on them while the model computes its KL, and solvers
            with per-sample parallelism (ilp, custom functions) use that many threads
            (0: no pool, everything in the training thread).
        labels: semi-supervised training (models with ``uses_labels``): a balanced subset of
            this many training images (``labels / K`` per class, drawn by ``seed`` from the
            training split only) keeps its labels; every step takes one unlabelled batch of
            ``batch_size`` from the whole training split (labelled images included, ``y = -1``)
            plus one labelled batch of ``labelled_batch_size`` (default ``batch_size``, at most
            ``labels``), cycled and re-shuffled (:mod:`structvae.semisup_data`). ``None``:
            every training label is passed to such models (fully supervised).
        label_eps: ε of direct's labelled rows (z_ε = label); default 0.01 with ``labels``.
        alpha: the labelled rows' cross-entropy weight for estimators without label support
            (the Gumbel-softmax baseline); semisupervised model only.
        labelled_batch_size: labelled rows per step (see ``labels``).
        attributes: ``--dataset celeba`` / ``--model celeba``: comma-separated CelebA attributes
            (``None``: ``Eyeglasses,Smiling,Male``; ``all``: the 40).
        label_fraction: ``--dataset celeba``: fraction of training images that keep their
            attribute labels (``None``: 1.0); the others are unlabelled (-1).

    Distributed (``torchrun --nproc_per_node N -m structvae train``, :mod:`structvae.distributed`):
    ``batch_size`` is the global batch, split over the processes.
    """

    dataset: str = "mnist-sample"
    data_root: str | None = None
    download: bool = False
    binarize: str = "fixed"
    split_seed: int = 0
    model: str = "categorical"
    latent: str = "1x10"
    estimator: str = "direct"
    objective: str = "elbo"
    solver: str | None = None
    pairwise: str | None = None
    graph: str | None = None
    kl: str | None = None
    eps: float | None = None
    temperature: float | None = None
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = 100
    lr: float = 1e-3
    seed: int = 0
    device: str = "cpu"
    out: str | None = None
    resume: bool = False
    overwrite: bool = False
    eval_samples: int = 100
    max_steps: int | None = None
    max_time_s: float | None = None
    log_every: int = 10
    num_workers: int = 0
    quiet: bool = False
    skip_nonfinite: bool = False
    solver_workers: int = 0
    attributes: str | None = None
    label_fraction: float | None = None
    labels: int | None = None
    label_eps: float | None = None
    alpha: float | None = None
    labelled_batch_size: int | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# ---------------------------------------------------------------------------- config checks


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
    from . import data

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
    from .data import BINARIZE_MODES, dataset_image_shape

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
    from .celeba import check_label_fraction, parse_attributes

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


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(obj: dict, path: str | os.PathLike) -> None:
    """``torch.save`` atomically: a temporary file in the same folder, fsync, ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; a bad file raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated/corrupt archives
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated and cannot be loaded "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "delete it (and resume from another copy) or start the run afresh"
        ) from e
    if not isinstance(obj, dict) or "model" not in obj:
        raise CheckpointError(f"checkpoint {path} is not a structvae checkpoint (no 'model' entry)")
    return obj


def _rng_state(device: torch.device, data_generator: torch.Generator | None) -> dict:
    np_state = np.random.get_state()  # noqa: NPY002 (the global state is what we save)
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_internal, dtype=torch.int64),
            "gauss_next": py_gauss,
        },
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    if data_generator is not None:
        state["data"] = data_generator.get_state()
    return state


def _set_rng_state(state: dict, device: torch.device, data_generator) -> None:
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            "MT19937",
            npst["keys"].numpy().astype(np.uint32),
            int(npst["pos"]),
            int(npst["has_gauss"]),
            float(npst["cached_gaussian"]),
        )
    )
    py = state["python"]
    random.setstate(
        (int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss_next"])
    )
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
    if data_generator is not None and "data" in state:
        data_generator.set_state(state["data"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)  # also seeds every CUDA device


def _epoch_seed(seed: int, epoch: int) -> int:
    """The data-order seed of ``epoch`` (0-based): a function of ``(seed, epoch)`` only."""
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + 12_345) % (2**62)


def _eval_generator(seed: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(seed) + _EVAL_SEED_OFFSET)
    return g


def _reset_binarization(dataset, seed: int) -> None:
    """Fixed dynamic-binarisation noise for evaluation splits (same images every epoch)."""
    if hasattr(dataset, "manual_seed") and hasattr(dataset, "generator"):
        dataset.manual_seed(int(seed) + _EVAL_SEED_OFFSET)


# ------------------------------------------------------------------------------ run folder


def _auto_out(config: TrainConfig) -> Path:
    parts = [config.dataset, config.model, config.latent, config.estimator]
    if config.solver:
        parts.append(config.solver)
    name = "-".join(str(p) for p in parts) + f"-seed{config.seed}"
    return Path("runs") / name.replace(os.sep, "_")


_ARTIFACTS = (
    "config.json",
    "metrics.jsonl",
    "metrics.csv",
    "last.pt",
    "best.pt",
    "results.json",
    "reconstructions.png",
    "samples.png",
    "best_reconstructions.png",
    "best_samples.png",
    "curves.png",
    "attribute_grid.png",
    "best_attribute_grid.png",
    "generation_grid.png",
    "best_generation_grid.png",
    "labelled_indices.json",
)


def _resolve_out(config: TrainConfig) -> Path:
    if config.out is None:
        base = _auto_out(config)
        if config.resume or not (base / "last.pt").exists():
            return base
        i = 2
        while (base.with_name(f"{base.name}-{i}") / "last.pt").exists():
            i += 1
        return base.with_name(f"{base.name}-{i}")
    out = Path(config.out)
    if not config.resume and (out / "last.pt").exists() and not config.overwrite:
        raise ValueError(
            f"run folder {out} already holds a run (last.pt); pass --resume to continue it, "
            "--overwrite to replace it, or another --out"
        )
    return out


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def _metric_fields(history: list[dict]) -> tuple[str, ...]:
    """``METRIC_FIELDS`` plus the extra keys of the rows (e.g. ``val_accuracy``), in order."""
    extra = dict.fromkeys(k for row in history for k in row if k not in METRIC_FIELDS)
    return METRIC_FIELDS + tuple(extra)


def _write_metrics(out: Path, history: list[dict]) -> None:
    fields = _metric_fields(history)
    with open(out / "metrics.jsonl", "w") as f:
        for row in history:
            f.write(json.dumps(row) + "\n")
    with open(out / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fields)
        for row in history:
            w.writerow(["" if row.get(k) is None else row.get(k) for k in fields])


def _append_metrics(out: Path, row: dict) -> None:
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    with open(out / "metrics.csv", "a", newline="") as f:
        csv.writer(f).writerow(["" if row.get(k) is None else row.get(k) for k in METRIC_FIELDS])


def _plot_curves(out: Path, history: list[dict]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    ep = [r["epoch"] for r in history]
    ts = [r["time_s"] for r in history]
    shown = []
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        ys = [r[key] for r in history]
        shown += ys[max(1, len(ys) // 10) :] if len(ys) >= 5 else ys
        ax1.plot(ep, ys, marker="." if len(ep) < 30 else None, label=label)
        ax2.plot(ts, ys, marker="." if len(ep) < 30 else None, label=label)
    finite = [v for v in shown if v is not None and math.isfinite(v)]
    if len(history) >= 5 and finite:  # the first epoch's loss would flatten the rest: clip it
        lo, hi = min(finite), max(finite)
        pad = 0.05 * (hi - lo) + 1e-6
        for ax in (ax1, ax2):
            ax.set_ylim(lo - pad, hi + pad)
    ax1.set_xlabel("epoch")
    ax2.set_xlabel("training time (s)")
    for ax in (ax1, ax2):
        ax.set_ylabel("loss (nats, BCE + KL)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)


def _fixed_images(dataset, n: int, seed: int) -> torch.Tensor:
    """``n`` validation images evenly spaced through the split (datasets may be sorted by class)."""
    _reset_binarization(dataset, seed)
    n = min(n, len(dataset))
    idx = torch.linspace(0, len(dataset) - 1, n).round().long()
    if getattr(dataset, "supports_batch_index", False):
        return dataset[idx][0].float()
    return torch.stack([torch.as_tensor(dataset[int(i)][0]) for i in idx]).float()


def _save_images(model, fixed_x, image_shape, out: Path, prefix: str, seed: int, device) -> None:
    from torchvision.utils import save_image

    was_training = model.training
    model.eval()
    try:
        shape = (-1, *image_shape)
        recon = model.reconstruct(fixed_x)
        grid = torch.cat([fixed_x.float(), recon.float()]).view(shape).cpu()
        save_image(grid, out / f"{prefix}reconstructions.png", nrow=fixed_x.shape[0], pad_value=0.5)
        samples = model.sample(_SAMPLE_IMAGES, generator=_eval_generator(seed, device))
        save_image(
            samples.float().view(shape).cpu(), out / f"{prefix}samples.png", nrow=8, pad_value=0.5
        )
        if hasattr(model, "attribute_grid"):  # the celeba model: attributes switched off / on
            from .grids import save_attribute_grid

            save_attribute_grid(model, fixed_x[:8], out / f"{prefix}attribute_grid.png")
    finally:
        model.train(was_training)


def _save_generation_grid(model, image_shape, out: Path, prefix: str, seed: int, device) -> None:
    """``<prefix>generation_grid.png`` from ``model.generation_grid`` (rows: class, columns:
    style) when the model has one."""
    fn = getattr(model, "generation_grid", None)
    if not callable(fn):
        return
    from torchvision.utils import save_image

    was_training = model.training
    model.eval()
    try:
        images = fn(_GRID_STYLES, generator=_eval_generator(seed, device))
        save_image(
            images.float().view(-1, *image_shape).cpu(),
            out / f"{prefix}generation_grid.png",
            nrow=_GRID_STYLES,
            pad_value=0.5,
        )
    finally:
        model.train(was_training)


# ------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def _evaluate_model(
    model: nn.Module,
    dataset,
    device: torch.device,
    seed: int,
    batch_size: int = 500,
    iwae_samples: int | None = None,
) -> dict:
    """Mean one-sample loss / recon / KL (and IWAE NLL) of ``model`` on ``dataset``."""
    from .data import make_loader

    was_training = model.training
    model.eval()
    _reset_binarization(dataset, seed)
    gen = _eval_generator(seed, device)
    sums = {"loss": 0.0, "recon": 0.0, "kl": 0.0}
    label_sums: dict[str, float] = {}
    label_metrics = getattr(model, "label_metrics", None)
    iwae = 0.0
    count = 0
    try:
        for x, y in make_loader(dataset, batch_size, shuffle=False, seed=0, drop_last=False):
            x = x.to(device)
            stats = model.one_sample_loss(x, generator=gen)
            for k in sums:
                sums[k] += float(stats[k].double().sum())
            if callable(label_metrics):  # per-row values, e.g. {"accuracy": [B]}
                for k, v in label_metrics(x, y.to(device)).items():
                    label_sums[k] = label_sums.get(k, 0.0) + float(v.double().sum())
            if iwae_samples and getattr(model, "iwae_available", True):
                iwae += float(model.iwae_nll(x, samples=iwae_samples, generator=gen).double().sum())
            count += x.shape[0]
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("cannot evaluate on an empty dataset split")
    result = {k: v / count for k, v in sums.items()}
    result["labels"] = {k: v / count for k, v in label_sums.items()}
    if iwae_samples:
        result["iwae_nll"] = iwae / count if getattr(model, "iwae_available", True) else None
    return result


def _load_data(config: TrainConfig):
    from .data import load_dataset

    return load_dataset(
        config.dataset,
        root=config.data_root,
        download=config.download,
        binarize=config.binarize,
        split_seed=config.split_seed,
        **_data_options(config),
    )


def evaluate(
    run_dir: str | os.PathLike,
    split: str = "test",
    samples: int | None = None,
    checkpoint: str = "best.pt",
    device: str | None = None,
    batch_size: int = 500,
) -> dict:
    """Evaluate a finished (or running) run's checkpoint on ``split`` (train / val / test).

    Reloads ``run_dir/config.json`` and ``run_dir/<checkpoint>``. Returns ``loss`` (one-sample
    BCE + KL, the paper's test loss), ``recon``, ``kl`` and ``iwae_nll`` (``samples``
    importance samples; default the run's ``eval_samples``; 0 skips it), means over the split.
    """
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: {run_dir} is not a structvae run folder")
    config = TrainConfig.from_dict(json.loads(cfg_path.read_text()))
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    dev = _device(device or config.device)
    ckpt = load_checkpoint(run_dir / checkpoint)
    splits = _load_data(config)
    input_dim = int(np.prod(splits.image_shape))
    model = build_model(
        config.model, latent=config.latent, input_dim=input_dim, **_model_options(config)
    )
    model.load_state_dict(ckpt["model"])
    model.to(dev)
    samples = config.eval_samples if samples is None else int(samples)
    res = _evaluate_model(
        model, getattr(splits, split), dev, config.seed, batch_size, iwae_samples=samples or None
    )
    res.update(res.pop("labels"))  # label metrics, e.g. accuracy
    res.update(
        {"split": split, "checkpoint": str(run_dir / checkpoint), "epoch": ckpt.get("epoch")}
    )
    if samples:
        res["iwae_samples"] = samples
    return res


# -------------------------------------------------------------------------------- training


def _labelled_subset(config: TrainConfig, splits) -> torch.Tensor | None:
    """With ``config.labels``: the balanced labelled training indices (drawn by ``seed``)."""
    if config.labels is None:
        return None
    from .semisup_data import balanced_label_subset

    return balanced_label_subset(splits.train.y, config.labels, splits.num_classes, config.seed)


def _estimator_state(estimator):
    fn = getattr(estimator, "state_dict", None)
    return fn() if callable(fn) else None


def train(config: TrainConfig) -> dict:
    """Train ``config.model`` with ``config.estimator``; returns the final results (also in
    ``results.json``) with ``run_dir`` added. See the module docstring for the run folder."""
    from .data import make_loader

    config = dataclasses.replace(config)
    model, estimator = check_config(config)  # fails fast, before any data is read
    device = _device(config.device)
    out = _resolve_out(config)
    config.out = str(out)
    ctx, device = distributed.setup(device)  # torchrun: rank 0 evaluates and writes
    config.quiet = config.quiet or not ctx.is_main
    if ctx.enabled and config.max_time_s is not None:
        raise ValueError(
            "--max-time is not supported under torchrun: each process measures its own time and "
            "they would stop at different steps; use --max-steps or --epochs"
        )
    log = (lambda msg: None) if config.quiet else tqdm.write

    # data and model (the model is rebuilt after seeding so that its initialisation is seeded)
    splits = _load_data(config)
    labelled = _labelled_subset(config, splits)  # checked before the run folder is touched
    image_shape = tuple(splits.image_shape)
    input_dim = int(np.prod(image_shape))
    _seed_everything(config.seed)
    model = build_model(
        config.model, latent=config.latent, input_dim=input_dim, **_model_options(config)
    ).to(device)
    set_objective(model, config.objective)
    if hasattr(estimator, "setup"):  # estimators with networks sized by the latents
        estimator.setup(*model.latent_shape)
    if isinstance(estimator, nn.Module):
        estimator.to(device)
    params = list(model.parameters())
    if isinstance(estimator, nn.Module):
        params += [p for p in estimator.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    ctx.broadcast_parameters(params)
    attach_pool(estimator, config.solver_workers)
    named = [(f"model.{k}", p) for k, p in model.named_parameters()]
    named += [(f"estimator.param{i}", p) for i, p in enumerate(params[len(named) :])]
    train_gen = getattr(splits.train, "generator", None)
    if not isinstance(train_gen, torch.Generator):
        train_gen = None

    start_epoch, iteration, elapsed = 0, 0, 0.0
    best_val, best_epoch = math.inf, None
    history: list[dict] = []
    if config.resume:
        ckpt = load_checkpoint(out / "last.pt")
        saved = TrainConfig.from_dict(ckpt.get("config", {}))
        for field in _IDENTITY_FIELDS:
            a, b = getattr(saved, field), getattr(config, field)
            if a != b:
                raise ValueError(
                    f"cannot resume {out}: {field} was {a!r} in that run, now {b!r}; "
                    "use the same settings (epochs, max_steps and device may change)"
                )
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            if ckpt.get("estimator") is not None:
                estimator.load_state_dict(ckpt["estimator"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(
                f"checkpoint {out / 'last.pt'} does not fit this model: {e}"
            ) from e
        start_epoch = int(ckpt["epoch"])
        iteration = int(ckpt["iteration"])
        elapsed = float(ckpt["time_s"])
        best_val = float(ckpt["best_val"])
        best_epoch = ckpt.get("best_epoch")
        history = list(ckpt["history"])
        estimator.iteration = int(ckpt.get("estimator_iteration", iteration))
        _set_rng_state(ckpt["rng"], device, train_gen)
        if ctx.is_main:
            _write_metrics(out, history)
        log(f"resuming {out} at epoch {start_epoch + 1} (iteration {iteration})")
    elif ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        for name in _ARTIFACTS:
            (out / name).unlink(missing_ok=True)
        _write_metrics(out, history)
    if ctx.is_main:
        _write_json(out / "config.json", config.to_dict())
    if labelled is not None and ctx.is_main:  # as rows of the training split and of the source file
        src = getattr(splits.train, "source_index", None)
        record = {"train_index": labelled.tolist()}
        if src is not None:
            record["source_index"] = src[labelled].tolist()
        _write_json(out / "labelled_indices.json", record)

    fixed_x = _fixed_images(splits.val, _RECON_IMAGES, config.seed).to(device)
    kw_labels = bool(getattr(model, "uses_labels", False))

    if not config.quiet:
        log(
            f"training {config.model} {config.latent} with {config.estimator} on "
            f"{config.dataset} ({len(splits.train)} train / {len(splits.val)} val / "
            f"{len(splits.test)} test) on {device}; run folder {out}"
        )
    stopped = config.max_steps is not None and iteration >= config.max_steps
    stopped = stopped or (config.max_time_s is not None and elapsed >= config.max_time_s)
    epoch = start_epoch
    restore_sigterm = sigterm_as_interrupt()  # kill (SIGTERM) takes the Ctrl-C path below
    try:
        for epoch in range(start_epoch, config.epochs):
            if stopped:
                break
            model.train()
            loader = make_loader(
                splits.train,
                config.batch_size,
                shuffle=True,
                seed=_epoch_seed(config.seed, epoch),
                drop_last=False,
            )
            ctx.seed_epoch(config.seed, epoch)
            skipped = 0
            if labelled is not None:  # semi-supervised: unlabelled + labelled batch per step
                from .semisup_data import MixedBatches

                loader = MixedBatches(
                    splits.train,
                    labelled,
                    config.batch_size,
                    seed=_epoch_seed(config.seed, epoch),
                    labelled_batch_size=config.labelled_batch_size,
                )
            sums: dict[str, torch.Tensor | float] = {}
            last_info: dict[str, float] = {}
            count = 0
            t0 = time.perf_counter()
            bar = tqdm(
                loader,
                desc=f"epoch {epoch + 1}/{config.epochs}",
                disable=True if config.quiet else None,
                leave=False,
                dynamic_ncols=True,
            )
            for x, y in bar:
                if config.max_steps is not None and iteration >= config.max_steps:
                    stopped = True
                    break
                if config.max_time_s is not None and count:
                    if elapsed + time.perf_counter() - t0 >= config.max_time_s:
                        stopped = True
                        break
                global_batch = x.shape[0]
                part = ctx.shard(x, y)  # this process's slice (the whole batch alone)
                if part is None:
                    continue
                x, y = part
                x = x.to(device, non_blocking=True)
                estimator.iteration = iteration
                kw = {"y": y.to(device)} if kw_labels else {}
                stats = train_step(
                    model,
                    estimator,
                    optimizer,
                    named,
                    x,
                    step=iteration + 1,
                    skip_nonfinite=config.skip_nonfinite,
                    ctx=ctx,
                    global_batch=global_batch,
                    **kw,
                )
                iteration += 1
                if stats is None:
                    skipped += 1
                    continue
                b = x.shape[0]
                count += b
                for k, v in stats.items():
                    if isinstance(v, torch.Tensor):
                        sums[k] = sums.get(k, 0.0) + v.detach().double() * b
                    else:
                        last_info[k] = float(v)
                if iteration % config.log_every == 0 and not bar.disable:
                    bar.set_postfix(loss=f"{float(sums['loss']) / count:.2f}")
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed += time.perf_counter() - t0
            sums, count = ctx.reduce_sums(sums, count)
            if count == 0:
                if skipped:
                    raise FloatingPointError(
                        f"every batch of epoch {epoch + 1} had NaN or inf (skipped {skipped})"
                    )
                break
            means = {k: float(v) / count for k, v in sums.items()}
            if not math.isfinite(means["loss"]):
                raise FloatingPointError(
                    f"training loss became {means['loss']} in epoch {epoch + 1} "
                    f"(iteration {iteration}); lower --lr or check the estimator"
                )
            if not ctx.is_main:
                continue  # rank 0 evaluates, checkpoints and writes the run folder
            val = _evaluate_model(model, splits.val, device, config.seed)
            row = {
                "epoch": epoch + 1,
                "iteration": iteration,
                "train_loss": means["loss"],
                "train_recon": means.get("recon"),
                "train_kl": means.get("kl"),
                "val_loss": val["loss"],
                "val_recon": val["recon"],
                "val_kl": val["kl"],
                "time_s": elapsed,
                "eps": last_info.get("eps"),
                "temperature": last_info.get("temperature"),
                "skipped": skipped,
            }
            row.update({f"val_{k}": v for k, v in val["labels"].items()})
            history.append(row)
            improved = val["loss"] < best_val
            if improved:
                best_val, best_epoch = val["loss"], epoch + 1
            state = {
                "model": model.state_dict(),
                "epoch": epoch + 1,
                "iteration": iteration,
                "val_loss": val["loss"],
                "config": config.to_dict(),
            }
            if improved:
                save_checkpoint(state, out / "best.pt")
            state.update(
                {
                    "optimizer": optimizer.state_dict(),
                    "estimator": _estimator_state(estimator),
                    "estimator_iteration": iteration,
                    "time_s": elapsed,
                    "best_val": best_val,
                    "best_epoch": best_epoch,
                    "history": history,
                    "rng": _rng_state(device, train_gen),
                }
            )
            save_checkpoint(state, out / "last.pt")
            if set(row) <= set(METRIC_FIELDS):
                _append_metrics(out, row)
            else:  # extra columns (val_accuracy …): rewrite so the CSV header has them
                _write_metrics(out, history)
            _plot_curves(out, history)
            _save_images(model, fixed_x, image_shape, out, "", config.seed, device)
            _save_generation_grid(model, image_shape, out, "", config.seed, device)
            extra = "".join(
                f" {k}={row[k]:.3g}" for k in ("eps", "temperature") if row[k] is not None
            )
            extra += "".join(f" val_{k}={v:.4f}" for k, v in val["labels"].items())
            log(
                f"epoch {epoch + 1}/{config.epochs} it {iteration}: train {means['loss']:.2f} "
                f"(recon {means.get('recon', math.nan):.2f} kl {means.get('kl', math.nan):.2f}) "
                f"val {val['loss']:.2f}{' *' if improved else ''}{extra} [{elapsed:.1f}s]"
            )
    except KeyboardInterrupt:
        log(f"interrupted; continue with --resume --out {out} (from the last finished epoch)")
        raise
    finally:
        restore_sigterm()
    if not ctx.is_main:
        return {"run_dir": str(out), "rank": ctx.rank, "iterations": iteration}

    # final evaluation of the best model on the test set
    if not (out / "best.pt").exists():
        raise CheckpointError(f"no epoch finished, so {out / 'best.pt'} was never written")
    best = load_checkpoint(out / "best.pt")
    model.load_state_dict(best["model"])
    test = _evaluate_model(
        model, splits.test, device, config.seed, iwae_samples=config.eval_samples
    )
    _save_images(model, fixed_x, image_shape, out, "best_", config.seed, device)
    _save_generation_grid(model, image_shape, out, "best_", config.seed, device)
    results = {
        "test_loss": test["loss"],
        "test_recon": test["recon"],
        "test_kl": test["kl"],
        "test_iwae_nll": test["iwae_nll"],
        "iwae_samples": config.eval_samples,
        # what test_loss is: the KL it adds, and whether it estimates a bound on -log p(x)
        "kl_kind": getattr(model, "kl_kind", None),
        "test_loss_is_bound": getattr(model, "loss_is_bound", None),
        "best_epoch": best_epoch,
        "best_val_loss": best_val,
        "epochs": history[-1]["epoch"] if history else 0,
        "iterations": iteration,
        "time_s": elapsed,
        "dataset": config.dataset,
        "model": config.model,
        "latent": config.latent,
        "estimator": config.estimator,
        "seed": config.seed,
    }
    results.update({f"test_{k}": v for k, v in test["labels"].items()})
    if config.labels is not None:
        results["labels"] = config.labels
    _write_json(out / "results.json", results)
    iwae = test["iwae_nll"]
    iwae_text = "n/a (intractable)" if iwae is None else f"{iwae:.2f}"
    bound = "" if results["test_loss_is_bound"] is not False else " (not a bound)"
    kind = f", KL {results['kl_kind']}" if results["kl_kind"] else ""
    log(
        f"best epoch {best_epoch}: test loss {test['loss']:.2f}{bound}{kind}, "
        f"IWAE NLL ({config.eval_samples} samples) {iwae_text}; results in {out}"
    )
    return {**results, "run_dir": str(out)}

"""The run configuration: :class:`TrainConfig` and the defaults ``structvae train`` uses."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = [
    "TrainConfig",
    "DEFAULT_EPOCHS",
    "DEFAULT_EPS",
    "DEFAULT_LABEL_EPS",
    "IDENTITY",
    "INHERIT",
    "INVOCATION",
    "resume_policy",
    "identity_fields",
    "model_latent",
]

IDENTITY = "identity"
"""Resume policy: part of the run's identity; ``resume`` refuses a different value."""
INHERIT = "inherit"
"""Resume policy: may change on ``resume``; the CLI takes the run's value unless it is given."""
INVOCATION = "invocation"
"""Resume policy: belongs to one invocation (a budget, where to write, output); never taken
from the run being resumed."""

#: Default epochs: ``structvae train`` with no arguments (mnist-sample, direct, 1x10, batch 100)
#: finishes in about two minutes on two CPU cores.
DEFAULT_EPOCHS = 50

DEFAULT_EPS = 0.1
"""ε₀ that ``structvae train`` uses for direct optimization when ``--eps`` is not given."""

DEFAULT_LABEL_EPS = 0.01
"""ε of direct's labelled rows (z_ε = label) with ``--labels``. The reference code's 0.05 gave
lower validation accuracy on MNIST with 100 labels (docs/semisupervised.md)."""


def _field(default, resume: str = IDENTITY):
    """A :class:`TrainConfig` field with its resume policy in ``metadata["resume"]``
    (a ``dict`` default: a fresh empty dict per config)."""
    if isinstance(default, dict):
        return dataclasses.field(default_factory=dict, metadata={"resume": resume})
    return dataclasses.field(default=default, metadata={"resume": resume})


@dataclass
class TrainConfig:
    """Everything a run needs; every field is a ``structvae train`` flag (``--batch-size`` …).

    Attributes:
        dataset, data_root, download, binarize, split_seed: see :func:`structvae.data.load_dataset`.
        model: a registered model (:func:`structvae.models.build_model`), e.g. ``"categorical"``,
            or a spec with options, ``"structured:pairwise=general"``
            (:mod:`structvae.training.specs`).
        latent: the model's latent spec; ``"NxK"`` (N variables × K categories) for categorical.
        estimator: a registered estimator (``direct``, ``gumbel-softmax``, ``exact`` …), or a spec
            ``"direct:eps=0.1,solver=ilp"``; options with a field of their own (``eps``,
            ``solver`` …) are that field.
        objective: ``"elbo"`` (every estimator trains the negative ELBO, KL gradient included)
            or ``"paper"`` (the reference code's objective: direct's KL is computed but not
            trained and its default ε₀ is 1; :mod:`structvae.models.reference`).
        solver: the run's arg-max solver, for the model and for estimators that take one
            (``None``: :func:`structvae.solvers.select` picks it by structure).
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
        max_steps: the budget of this call: stop after it has taken this many optimisation
            steps (for smoke runs and jobs in slices). The cut epoch is validated, a mid-epoch
            ``last.pt`` is written and ``resume`` continues exactly where it stopped
            (:mod:`structvae.training.trainer`).
        max_time_s: the same with the training seconds this call has spent, checked before
            every step (for equal wall-clock budgets across estimators).
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
            ``labels``), cycled and re-shuffled (:mod:`structvae.data.semisup`). ``None``:
            every training label is passed to such models (fully supervised).
        label_eps: ε of direct's labelled rows (z_ε = label); default 0.01 with ``labels``.
        alpha: the labelled rows' cross-entropy weight for estimators without label support
            (the Gumbel-softmax baseline); semisupervised model only.
        labelled_batch_size: labelled rows per step (see ``labels``).
        attributes: ``--dataset celeba`` / ``--model celeba``: comma-separated CelebA attributes
            (``None``: ``Eyeglasses,Smiling,Male``; ``all``: the 40).
        label_fraction: ``--dataset celeba``: fraction of training images that keep their
            attribute labels (``None``: 1.0); the others are unlabelled (-1).
        model_options, estimator_options: further options the model / estimator declares
            (``--model-opt hidden=400,200``; values converted by their
            :class:`~structvae.options.Option`).

    Distributed (``torchrun --nproc_per_node N -m structvae train``, :mod:`structvae.distributed`):
    ``batch_size`` is the global batch, split over the processes.
    """

    dataset: str = _field("mnist-sample")
    data_root: str | None = _field(None, INHERIT)
    download: bool = _field(False, INHERIT)
    binarize: str = _field("fixed")
    split_seed: int = _field(0)
    model: str = _field("categorical")
    latent: str = _field("1x10")
    estimator: str = _field("direct")
    objective: str = _field("elbo")
    solver: str | None = _field(None)
    pairwise: str | None = _field(None)
    graph: str | None = _field(None)
    kl: str | None = _field(None)
    eps: float | None = _field(None)
    temperature: float | None = _field(None)
    epochs: int = _field(DEFAULT_EPOCHS, INHERIT)
    batch_size: int = _field(100)
    lr: float = _field(1e-3)
    seed: int = _field(0)
    device: str = _field("cpu", INHERIT)
    out: str | None = _field(None, INVOCATION)
    resume: bool = _field(False, INVOCATION)
    overwrite: bool = _field(False, INVOCATION)
    eval_samples: int = _field(100, INHERIT)
    max_steps: int | None = _field(None, INVOCATION)
    max_time_s: float | None = _field(None, INVOCATION)
    log_every: int = _field(10, INHERIT)
    num_workers: int = _field(0, INHERIT)
    quiet: bool = _field(False, INVOCATION)
    skip_nonfinite: bool = _field(False, INHERIT)
    solver_workers: int = _field(0, INHERIT)
    attributes: str | None = _field(None)
    label_fraction: float | None = _field(None)
    labels: int | None = _field(None)
    label_eps: float | None = _field(None)
    alpha: float | None = _field(None)
    labelled_batch_size: int | None = _field(None)
    model_options: dict = _field({})
    estimator_options: dict = _field({})

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict (``config.json``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """The config of ``d`` (``config.json``); unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def resume_policy(name: str) -> str:
    """:data:`IDENTITY`, :data:`INHERIT` or :data:`INVOCATION`: what ``resume`` does with field
    ``name`` of :class:`TrainConfig` (its ``metadata["resume"]``)."""
    for f in dataclasses.fields(TrainConfig):
        if f.name == name:
            return f.metadata.get("resume", IDENTITY)
    raise KeyError(f"TrainConfig has no field {name!r}")


def identity_fields() -> tuple[str, ...]:
    """The fields that must agree between a run and its resumption (a field declared without
    a policy is one)."""
    return tuple(
        f.name
        for f in dataclasses.fields(TrainConfig)
        if f.metadata.get("resume", IDENTITY) == IDENTITY
    )


def model_latent(config: TrainConfig):
    """The latent spec the model is built from: ``config.latent``, except that the attribute
    model (whose ``--latent`` is its style-code size) gets its own default in place of the
    categorical default ``1x10``."""
    if config.model in ("attribute", "celeba") and config.latent == TrainConfig.latent:
        return None
    return config.latent

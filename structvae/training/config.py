"""The run configuration: :class:`TrainConfig` and the defaults ``structvae train`` uses."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["TrainConfig", "DEFAULT_EPOCHS", "DEFAULT_EPS", "DEFAULT_LABEL_EPS"]

#: Default epochs: ``structvae train`` with no arguments (mnist-sample, direct, 1x10, batch 100)
#: finishes in about two minutes on two CPU cores.
DEFAULT_EPOCHS = 50

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

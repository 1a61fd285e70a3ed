"""Training: one loop for every model and estimator, with a run folder, resume and evaluation.

    from structvae.training import TrainConfig, train, evaluate
    results = train(TrainConfig(dataset="mnist-sample", estimator="direct", epochs=20))
    evaluate(results["run_dir"], split="test")

The run folder (``config.out``) holds:

- ``config.json``: the configuration (specs resolved, with the run folder) and
  ``solver_used``, the solver the run's one decision picked;
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
  ``results.json``; every grid of ``model.grids(x, generator)`` is a ``<name>.png`` (each
  epoch; e.g. ``generation_grid``, ``attribute_grid``) and ``best_<name>.png``; with ``labels``,
  ``labelled_indices.json`` records the labelled subset;
- ``results.json``: the final evaluation of ``best.pt`` on the test set: ``test_loss`` (the
  paper's Table 1 metric: BCE at one sample z ~ q plus KL, averaged over the test set) and
  ``test_iwae_nll`` (importance-weighted −log p(x) with ``eval_samples`` samples).

Validation and test losses use the same one-sample metric for every estimator, with noise from
a dedicated generator seeded by ``seed`` (the same noise every epoch), so model selection and
resume do not depend on, nor disturb, the training RNG.

Resume (``resume=True``) restarts from ``last.pt`` and reproduces the uninterrupted run
exactly: the checkpoint holds the model, the optimizer, the epoch, the position in it and that
epoch's running sums (a mid-epoch checkpoint after a ``max_steps`` / ``max_time_s`` stop), the
iteration counter, the best validation loss, the metric history, the estimator's state, the
torch (CPU and CUDA), numpy and Python RNG states and the dynamic-binarisation generator; the
data order of epoch ``e`` is a function of ``(seed, e)`` only. Which settings must agree is
each :class:`TrainConfig` field's ``metadata["resume"]`` (:func:`config.resume_policy`).

Modules: ``config`` (TrainConfig, resume policy), ``specs`` (the spec parser), ``build``
(checks, specs, the model / estimator / solver of a run), ``trainer`` (Trainer, train),
``evaluation`` (evaluate), ``loading`` (load_model), ``checkpoints``, ``rundir`` (run folder,
metric files), ``artefacts`` (images, curves), ``rng`` (seeds and RNG state).
"""

from __future__ import annotations

from .build import build_estimator, check_config
from .checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from .config import DEFAULT_EPOCHS, DEFAULT_EPS, DEFAULT_LABEL_EPS, TrainConfig
from .evaluation import evaluate
from .loading import load_model
from .specs import Spec, parse_spec
from .trainer import Trainer, train

__all__ = [
    "TrainConfig",
    "CheckpointError",
    "train",
    "Trainer",
    "evaluate",
    "load_model",
    "parse_spec",
    "Spec",
    "check_config",
    "build_estimator",
    "save_checkpoint",
    "load_checkpoint",
    "DEFAULT_EPOCHS",
    "DEFAULT_EPS",
    "DEFAULT_LABEL_EPS",
]

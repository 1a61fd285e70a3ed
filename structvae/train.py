"""Compatibility module: the trainer now lives in the :mod:`structvae.training` package.

Every name this module had (public and the private helpers used by ``cli.py``, ``lab/`` and the
tests) is re-exported from there. Setting an attribute here (``monkeypatch.setattr(train_mod,
"train_step", ...)``, as tests do) also sets it in :mod:`structvae.training.trainer`, the module
whose globals the training loop reads, so patching keeps the effect it had before the move.
"""

from __future__ import annotations

import sys
import time
import types

from .guard import sigterm_as_interrupt, train_step
from .training import trainer as _trainer
from .training.artefacts import (
    _RECON_IMAGES,
    _SAMPLE_IMAGES,
    _fixed_images,
    _plot_curves,
    _save_images,
)
from .training.build import (
    _canonical_dataset,
    _data_options,
    _device,
    _label_eps,
    _labelled_subset,
    _load_data,
    _model_options,
    _schedule,
    build_estimator,
    check_config,
)
from .training.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from .training.config import (
    DEFAULT_EPOCHS,
    DEFAULT_EPS,
    DEFAULT_LABEL_EPS,
    TrainConfig,
    identity_fields,
)
from .training.evaluation import _evaluate_model, evaluate
from .training.rng import (
    _EVAL_SEED_OFFSET,
    _epoch_seed,
    _eval_generator,
    _reset_binarization,
    _rng_state,
    _seed_everything,
    _set_rng_state,
)
from .training.rundir import (
    _ARTIFACTS,
    METRIC_FIELDS,
    _append_metrics,
    _auto_out,
    _metric_fields,
    _resolve_out,
    _write_json,
    _write_metrics,
)
from .training.trainer import Trainer, train

_IDENTITY_FIELDS = identity_fields()  # the fields that must agree between a run and its resumption

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

_COMPAT = (
    time,
    sigterm_as_interrupt,
    train_step,
    _RECON_IMAGES,
    _SAMPLE_IMAGES,
    _fixed_images,
    _plot_curves,
    _save_images,
    _canonical_dataset,
    _data_options,
    _device,
    _label_eps,
    _labelled_subset,
    _load_data,
    _model_options,
    _schedule,
    _IDENTITY_FIELDS,
    DEFAULT_EPS,
    DEFAULT_LABEL_EPS,
    _evaluate_model,
    _EVAL_SEED_OFFSET,
    _epoch_seed,
    _eval_generator,
    _reset_binarization,
    _rng_state,
    _seed_everything,
    _set_rng_state,
    _ARTIFACTS,
    METRIC_FIELDS,
    _append_metrics,
    _auto_out,
    _metric_fields,
    _resolve_out,
    _write_json,
    _write_metrics,
    Trainer,
)  # re-exported names (listed so that linters see them used)


class _ForwardingModule(types.ModuleType):
    """Attribute writes also reach :mod:`structvae.training.trainer` when it has the name."""

    def __setattr__(self, name: str, value) -> None:
        super().__setattr__(name, value)
        if not name.startswith("__") and hasattr(_trainer, name):
            setattr(_trainer, name, value)


sys.modules[__name__].__class__ = _ForwardingModule

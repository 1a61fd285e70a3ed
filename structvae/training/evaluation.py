"""Evaluation of a model on a split, and of a run folder's checkpoint (:func:`evaluate`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .build import _device, _load_data
from .checkpoints import load_checkpoint
from .loading import load_run_config, model_for_run
from .rng import _eval_generator, _reset_binarization


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
    from ..data import make_loader

    was_training = model.training
    model.eval()
    _reset_binarization(dataset, seed)
    gen = _eval_generator(seed, device)
    sums = {"loss": 0.0, "recon": 0.0, "kl": 0.0}
    label_sums: dict[str, float] = {}
    iwae = 0.0
    count = 0
    try:
        for x, y in make_loader(dataset, batch_size, shuffle=False, seed=0, drop_last=False):
            x = x.to(device)
            stats = model.one_sample_loss(x, generator=gen)
            for k in sums:
                sums[k] += float(stats[k].double().sum())
            # per-row values against the labels, e.g. {"accuracy": [B]}
            for k, v in model.label_metrics(x, y.to(device)).items():
                label_sums[k] = label_sums.get(k, 0.0) + float(v.double().sum())
            if iwae_samples and model.iwae_available:
                iwae += float(model.iwae_nll(x, samples=iwae_samples, generator=gen).double().sum())
            count += x.shape[0]
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("cannot evaluate on an empty dataset split")
    result = {k: v / count for k, v in sums.items()}
    result["labels"] = {k: v / count for k, v in label_sums.items()}
    if iwae_samples:
        result["iwae_nll"] = iwae / count if model.iwae_available else None
    return result


def evaluate(
    run_dir: str | os.PathLike,
    split: str = "test",
    samples: int | None = None,
    checkpoint: str = "best.pt",
    device: str | None = None,
    batch_size: int = 500,
) -> dict:
    """Evaluate a finished (or running) run's checkpoint on ``split`` (train / val / test).

    Reloads ``run_dir/config.json`` and ``run_dir/<checkpoint>``; the model gets the solver
    the run trained with. Returns ``loss`` (one-sample
    BCE + KL, the paper's test loss), ``recon``, ``kl`` and ``iwae_nll`` (``samples``
    importance samples; default the run's ``eval_samples``; 0 skips it), means over the split.
    """
    run_dir = Path(run_dir)
    config, raw = load_run_config(run_dir)
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    dev = _device(device or config.device)
    ckpt = load_checkpoint(run_dir / checkpoint)
    splits = _load_data(config)
    input_dim = int(np.prod(splits.image_shape))
    model = model_for_run(config, raw, input_dim)  # with the solver the run trained with
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

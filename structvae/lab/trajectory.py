"""Models at points along a training trajectory: from run checkpoints, or trained here."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from torch import nn

from ..training import TrainConfig, load_checkpoint, train
from ..training.build import build_run_model, resolve_specs

__all__ = ["load_run_model", "initial_model", "trajectory_models"]


def _build(config: TrainConfig, input_dim: int, seed: bool = False) -> nn.Module:
    """The model of ``config`` with the run's solver (``seed``: initialised as the run is)."""
    return build_run_model(resolve_specs(config), input_dim, seed=seed)


def load_run_model(
    checkpoint: str | Path, device: str = "cpu", input_dim: int = 784
) -> tuple[nn.Module, TrainConfig, dict]:
    """The model of a structvae run checkpoint (``RUN/best.pt``, ``RUN/last.pt``, …).

    The architecture is rebuilt from ``RUN/config.json`` (as :func:`structvae.train.evaluate`
    does). Returns ``(model, config, checkpoint dict)``.
    """
    path = Path(checkpoint)
    cfg_path = path.parent / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(
            f"{cfg_path} not found: a checkpoint must sit in a structvae run folder"
        )
    config = TrainConfig.from_dict(json.loads(cfg_path.read_text()))
    ckpt = load_checkpoint(path)
    model = _build(config, input_dim)
    model.load_state_dict(ckpt["model"])
    return model.to(device), config, ckpt


def initial_model(config: TrainConfig, input_dim: int = 784) -> nn.Module:
    """The model :func:`structvae.train.train` starts from with ``config`` (seeded the same way)."""
    return _build(config, input_dim, seed=True).to(config.device)


def _snapshot(run_dir: Path, epoch: int) -> Path:
    return run_dir / f"epoch{epoch}.pt"


def trajectory_models(
    config: TrainConfig, epochs: Sequence[int], input_dim: int = 784
) -> Iterator[tuple[int, nn.Module, dict | None]]:
    """``(epoch, model, estimator state)`` after each of ``epochs`` epochs of ``train(config)``.

    Epoch 0 is the initialisation. The run goes in ``config.out``; the checkpoint after epoch
    ``e`` is kept as ``OUT/epoch{e}.pt`` and reused on later calls, and training continues by
    resuming (:func:`structvae.train.train` with ``resume=True``), so the points lie on one
    trajectory.
    """
    if config.out is None:
        raise ValueError("trajectory_models needs config.out (the training run folder)")
    run_dir = Path(config.out)
    for e in sorted(set(int(v) for v in epochs)):
        if e < 0:
            raise ValueError(f"trajectory epochs must be >= 0, got {e}")
        if e == 0:
            yield 0, initial_model(config, input_dim), None
            continue
        snap = _snapshot(run_dir, e)
        if not snap.is_file():
            last = run_dir / "last.pt"
            done = int(load_checkpoint(last)["epoch"]) if last.is_file() else 0
            resume = 0 < done < e
            cfg = dataclasses.replace(config, epochs=e, resume=resume, overwrite=not resume)
            train(cfg)
            shutil.copyfile(last, snap)
        ckpt = load_checkpoint(snap)
        model = _build(config, input_dim)
        model.load_state_dict(ckpt["model"])
        yield e, model.to(config.device), ckpt.get("estimator")

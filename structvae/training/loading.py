"""Loading a run back: its configuration and its trained model (:func:`load_model`).

model = structvae.load_model("runs/mnist-sample-categorical-1x10-direct-seed0")
out = model(x)                        # ModelOutput: loss, recon, kl [B], z [B, n]
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from .build import _device, build_run_model
from .checkpoints import CheckpointError, load_checkpoint
from .config import TrainConfig

__all__ = ["load_model", "load_run_config"]

_CHECKPOINTS = {"best": "best.pt", "last": "last.pt"}


def load_run_config(run_dir: str | os.PathLike) -> tuple[TrainConfig, dict]:
    """``(config, raw)`` from ``run_dir/config.json`` (``raw``: the file's dict, with keys such
    as ``solver_used`` that are not config fields). ``FileNotFoundError`` when ``run_dir``
    holds no run; :class:`CheckpointError` when the file is not a run's configuration."""
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{run_dir} holds no structvae run ({path.name} not found); give the folder that "
            "`structvae train --out` wrote"
        )
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        return TrainConfig.from_dict(raw), raw
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path} is not a structvae run configuration ({e})") from None


def model_for_run(config: TrainConfig, raw: dict, input_dim: int) -> nn.Module:
    """The model of a run's configuration with the solver the run trained with
    (``config.json``'s ``solver_used``; older runs: the same decision again)."""
    return build_run_model(config, input_dim, raw.get("solver_used"), seed=False)


def load_model(
    run_dir: str | os.PathLike, which: str = "best", device: str | torch.device | None = None
) -> nn.Module:
    """The trained model of the run in ``run_dir``, in eval mode, with its solver.

    ``which``: ``"best"`` (``best.pt``, the lowest validation loss) or ``"last"`` (``last.pt``,
    the latest checkpoint). ``device``: where to put it (default: the run's device when it is
    available here, else the CPU). No data is read: the input size comes from the dataset's
    image shape. Raises ``FileNotFoundError`` for a folder without a run, ``ValueError`` for a
    bad ``which``, :class:`CheckpointError` for a missing or corrupt checkpoint.
    """
    from ..data import dataset_image_shape

    if which not in _CHECKPOINTS:
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    run_dir = Path(run_dir)
    config, raw = load_run_config(run_dir)
    ckpt = load_checkpoint(run_dir / _CHECKPOINTS[which])
    input_dim = int(torch.tensor(dataset_image_shape(config.dataset)).prod())
    model = model_for_run(config, raw, input_dim)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(
            f"{run_dir / _CHECKPOINTS[which]} does not fit the model of {run_dir / 'config.json'}"
            f": {str(e).splitlines()[0]}"
        ) from None
    if device is None:
        try:
            device = _device(config.device)
        except ValueError:  # e.g. trained on CUDA, loaded on a machine without it
            device = "cpu"
    return model.to(device).eval()

"""Seeding, the per-epoch data-order seed, the evaluation generators and the saved RNG state."""

from __future__ import annotations

import random

import numpy as np
import torch

_EVAL_SEED_OFFSET = 1_000_003  # the evaluation generators' seed is seed + this


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

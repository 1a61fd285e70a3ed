"""``omniglot``: the 28x28 Omniglot of the IWAE repository (``chardata.mat``)."""

from __future__ import annotations

import numpy as np
import torch

from .datasets import NUM_PIXELS
from .errors import HOW_TO as _HOW_TO
from .errors import DatasetCorruptError, DatasetNotFoundError
from .files import _cache_slot, _download_target, _download_url
from .splits import _split_indices

OMNIGLOT_URL = "https://raw.githubusercontent.com/yburda/iwae/master/datasets/OMNIGLOT/chardata.mat"
_OMNIGLOT_FILE = "chardata.mat"
_OMNIGLOT_COUNTS = {"data": 24345, "testdata": 8070}
_OMNIGLOT_VAL = 1345


def _load_omniglot(root, download, split_seed, val_size, verify, cache):
    slot = _cache_slot(cache, "omniglot", root)
    candidates = [root / "omniglot" / _OMNIGLOT_FILE, root / _OMNIGLOT_FILE, slot / _OMNIGLOT_FILE]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        if not download:
            raise DatasetNotFoundError(
                f"omniglot not found: expected {candidates[0]} (or {candidates[1]}).\n"
                "It is the 28x28 Omniglot of the IWAE repository (Burda et al.), file "
                f"datasets/OMNIGLOT/chardata.mat, e.g. {OMNIGLOT_URL}\n{_HOW_TO}"
            )
        target = _download_target(root / "omniglot", slot, "omniglot")
        try:
            _download_url(OMNIGLOT_URL, target, _OMNIGLOT_FILE, None)
        except Exception as e:
            raise DatasetNotFoundError(
                f"downloading {OMNIGLOT_URL} into {target} failed: {e}\n"
                f"Put chardata.mat at {candidates[0]} by hand, or point --data-root at it."
            ) from e
        path = target / _OMNIGLOT_FILE

    try:
        import scipy.io
    except ImportError as e:  # pragma: no cover - scipy comes with mlxtend
        raise ImportError("the omniglot dataset needs scipy (pip install scipy)") from e
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as e:
        raise DatasetCorruptError(f"{path}: not a readable MATLAB .mat file ({e})") from e

    arrays = {}
    for split, key, target_key in (("train", "data", "target"), ("test", "testdata", "testtarget")):
        if key not in mat:
            found = sorted(k for k in mat if not k.startswith("__"))
            raise DatasetCorruptError(f"{path}: no variable {key!r} (found {found})")
        x = np.asarray(mat[key])
        if x.ndim != 2 or x.shape[0] != NUM_PIXELS:
            raise DatasetCorruptError(
                f"{path}: {key!r} has shape {x.shape}; expected [784, N] (one image per column)"
            )
        n = x.shape[1]
        if verify and n != _OMNIGLOT_COUNTS[key]:
            raise DatasetCorruptError(
                f"{path}: {key!r} holds {n} images, expected {_OMNIGLOT_COUNTS[key]}"
            )
        # Column j is a MATLAB img(:) of a 28x28 image (column-major): reshape it with
        # order="F" to get the upright image, then flatten row-major like MNIST.
        imgs = x.T.reshape(n, 28, 28).transpose(0, 2, 1).reshape(n, NUM_PIXELS)
        if x.dtype == np.uint8:
            imgs = imgs.astype(np.float32) / 255.0
        imgs = np.ascontiguousarray(imgs, dtype=np.float32)
        if not np.isfinite(imgs).all() or imgs.min() < 0.0 or imgs.max() > 1.0:
            raise DatasetCorruptError(f"{path}: {key!r} has values outside [0, 1]")
        labels = _omniglot_labels(mat.get(target_key), n)
        arrays[split] = (torch.from_numpy(imgs), labels, torch.arange(n))

    num_classes = None
    if (arrays["train"][1] >= 0).any():
        num_classes = int(np.asarray(mat["target"]).shape[0])
    train_x, train_y, _ = arrays["train"]
    val_size = _OMNIGLOT_VAL if val_size is None else int(val_size)
    tr, va = _split_indices(train_x.shape[0], val_size, split_seed)
    splits = {
        "train": (train_x[tr], train_y[tr], tr),
        "val": (train_x[va], train_y[va], va),
        "test": arrays["test"],
    }
    return splits, num_classes


def _omniglot_labels(target, n: int) -> torch.Tensor:
    """Alphabet index from a one-hot ``[K, N]`` matrix; -1 when absent or unusable."""
    if target is not None:
        t = np.asarray(target)
        if t.ndim == 2 and t.shape[1] == n and t.shape[0] > 1:
            return torch.from_numpy(t.argmax(axis=0).astype(np.int64))
    return torch.full((n,), -1, dtype=torch.long)

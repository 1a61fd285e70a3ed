"""``load_dataset``: name -> ``DataSplits``, dispatching to one module per source."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .binarized import _load_binarized_mnist
from .datasets import IMAGE_SHAPE, DataSplits, DynamicBinarized, ImageDataset
from .files import default_cache_dir, default_data_root
from .mnist import _load_torchvision_mnist
from .mnist_sample import _load_mnist_sample
from .omniglot import _load_omniglot
from .splits import _derived_seed

__all__ = ["BINARIZE_MODES", "DATASETS", "dataset_image_shape", "load_dataset"]

logger = logging.getLogger(__name__)

DATASETS = ("mnist-sample", "mnist", "fashion-mnist", "omniglot", "binarized-mnist", "celeba")
BINARIZE_MODES = ("fixed", "dynamic", "none")

_ALIASES = {
    "mnistsample": "mnist-sample",
    "mnist": "mnist",
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "omniglot": "omniglot",
    "binarizedmnist": "binarized-mnist",
    "binarisedmnist": "binarized-mnist",
    "bmnist": "binarized-mnist",
    "celeba": "celeba",
}


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    download: bool = False,
    binarize: str = "fixed",
    split_seed: int = 0,
    val_size: int | None = None,
    *,
    verify: bool = False,
    cache_dir: str | os.PathLike | None = None,
    attributes: str | Sequence[str] | None = None,
    label_fraction: float = 1.0,
) -> DataSplits:
    """Load ``name`` (one of ``DATASETS``) as train / validation / test splits.

    Args:
        name: dataset name (case, ``_`` and ``-`` are forgiven: ``"fashion_mnist"``).
        root: folder holding the files (layout in the module docstring); default
            :func:`default_data_root`. Ignored by ``mnist-sample``.
        download: fetch missing files from the internet (into ``root``, or into the
            cache when ``root`` is read-only).
        binarize: ``"fixed"`` (``x > 0.5`` once), ``"dynamic"`` (``Bernoulli(x)`` on
            every read) or ``"none"`` (grey levels in [0, 1]).
        split_seed: seed of the permutation that carves the validation set out of the
            training set, and of the dynamic-binarisation generators.
        val_size: validation-set size; default 500 (mnist-sample), 10,000 (mnist,
            fashion-mnist), 1,345 (omniglot). binarized-mnist has a fixed split.
        verify: check file checksums (the MNIST/Fashion-MNIST ``.gz`` archives against
            torchvision's MD5s, the binarized-MNIST ``.amat`` contents against the
            original MD5s) and the expected image counts.
        cache_dir: where extracted copies of read-only data go; default
            :func:`default_cache_dir`.
        attributes, label_fraction: ``celeba`` only (:mod:`structvae.celeba`): the attributes
            that form ``y`` (``"Eyeglasses,Smiling,Male"`` by default) and the fraction of
            training images that keep their labels (the others get -1).
    """
    key = _canonical_name(name)
    if binarize not in BINARIZE_MODES:
        raise ValueError(f"binarize must be one of {BINARIZE_MODES}, got {binarize!r}")
    if isinstance(split_seed, bool) or not isinstance(split_seed, (int, np.integer)):
        raise ValueError(f"split_seed must be an int, got {split_seed!r}")
    if val_size is not None and (
        isinstance(val_size, bool) or not isinstance(val_size, (int, np.integer)) or val_size < 0
    ):
        raise ValueError(f"val_size must be a non-negative int or None, got {val_size!r}")
    root_path = Path(root).expanduser() if root is not None else default_data_root()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if key == "celeba":
        options = {"attributes": attributes, "label_fraction": label_fraction}
        return _load_celeba(root_path, download, binarize, split_seed, val_size, verify, options)
    if attributes is not None or label_fraction != 1.0:
        raise ValueError("attributes and label_fraction apply to the celeba dataset only")

    if key == "mnist-sample":
        splits, num_classes = _load_mnist_sample(split_seed, val_size)
    elif key in ("mnist", "fashion-mnist"):
        splits, num_classes = _load_torchvision_mnist(
            key, root_path, download, split_seed, val_size, verify, cache
        )
    elif key == "omniglot":
        splits, num_classes = _load_omniglot(
            root_path, download, split_seed, val_size, verify, cache
        )
    else:
        splits, num_classes = _load_binarized_mnist(root_path, download, val_size, verify, cache)

    datasets = {}
    for i, split in enumerate(("train", "val", "test")):
        x, y, index = splits[split]
        if binarize == "fixed":
            x = (x > 0.5).to(torch.float32)
        base = ImageDataset(x.contiguous(), y, IMAGE_SHAPE, source_index=index)
        if binarize == "dynamic":
            datasets[split] = DynamicBinarized(base, seed=_derived_seed(split_seed, i))
        else:
            datasets[split] = base
    result = DataSplits(
        train=datasets["train"],
        val=datasets["val"],
        test=datasets["test"],
        name=key,
        image_shape=IMAGE_SHAPE,
        num_classes=num_classes,
        binarize=binarize,
    )
    logger.info("loaded %s", result.describe())
    return result


def dataset_image_shape(name: str) -> tuple[int, int, int]:
    """The ``(C, H, W)`` of the images ``load_dataset(name)`` returns, without reading files."""
    if _canonical_name(name) == "celeba":
        from .celeba import CELEBA_IMAGE_SHAPE

        return CELEBA_IMAGE_SHAPE
    return IMAGE_SHAPE


def _load_celeba(root, download, binarize, split_seed, val_size, verify, options) -> DataSplits:
    from .celeba import CELEBA_IMAGE_SHAPE, load_celeba

    if binarize != "none":
        raise ValueError(
            "celeba images are colour intensities in [0, 1] (Bernoulli likelihood on "
            f"them); binarize must be 'none' (--binarize none), got {binarize!r}"
        )
    if val_size is not None:
        raise ValueError(
            f"celeba has the official train/val/test partition; val_size must be None, got {val_size}"
        )
    splits = load_celeba(root, download, split_seed=split_seed, verify=verify, **options)
    result = DataSplits(
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        name="celeba",
        image_shape=CELEBA_IMAGE_SHAPE,
        num_classes=None,
        binarize="none",
    )
    logger.info("loaded %s", result.describe())
    return result


# --------------------------------------------------------------------------- helpers


def _canonical_name(name: str) -> str:
    if not isinstance(name, str):
        raise ValueError(f"dataset name must be a string, got {name!r}")
    key = _ALIASES.get(name.strip().lower().replace("-", "").replace("_", ""))
    if key is None:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return key

"""``load_dataset``: name -> ``DataSplits`` through the dataset registry."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .builtin import register_builtin_datasets
from .datasets import DataSplits
from .files import default_cache_dir, default_data_root
from .registry import (
    _REGISTRY,
    BINARIZE_MODES,
    DATASETS,
    DatasetRequest,
    canonical_name,
    get_dataset,
    image_splits,
)

__all__ = ["BINARIZE_MODES", "DATASETS", "dataset_image_shape", "load_dataset"]

logger = logging.getLogger(__name__)

_canonical_name = canonical_name  # the old private name (train.py reads it)

register_builtin_datasets()


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
    **options: Any,
) -> DataSplits:
    """Load ``name`` (one of ``DATASETS``, or a registered dataset) as train / val / test splits.

    Args:
        name: dataset name (case, ``_`` and ``-`` are forgiven: ``"fashion_mnist"``).
        root: folder holding the files (layout in the package docstring); default
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
        attributes, label_fraction: ``celeba`` only (:mod:`structvae.data.celeba`): the
            attributes that form ``y`` (``"Eyeglasses,Smiling,Male"`` by default) and the
            fraction of training images that keep their labels (the others get -1).
        options: the options a registered dataset declares (``register_dataset(options=)``).
    """
    info = get_dataset(name)
    _check_arguments(binarize, split_seed, val_size)
    if binarize not in info.binarize_modes:
        modes = ", ".join(info.binarize_modes)
        raise ValueError(f"dataset {info.name!r} takes binarize in ({modes}), got {binarize!r}")
    if attributes is not None:
        options["attributes"] = attributes
    if label_fraction != 1.0:
        options["label_fraction"] = label_fraction
    _check_options(info.name, info.options, options)
    request = DatasetRequest(
        name=info.name,
        root=Path(root).expanduser() if root is not None else default_data_root(),
        download=bool(download),
        binarize=binarize,
        split_seed=int(split_seed),
        val_size=None if val_size is None else int(val_size),
        verify=bool(verify),
        cache_dir=Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(),
        options=options,
    )
    result = info.factory(request)
    if isinstance(result, Mapping):
        result = image_splits(
            info.name,
            result,
            image_shape=info.image_shape,
            binarize=binarize,
            split_seed=request.split_seed,
            num_classes=info.num_classes,
        )
    if not isinstance(result, DataSplits):
        raise TypeError(
            f"dataset {info.name!r}: its factory returned {type(result).__name__}; "
            "return a DataSplits or a mapping {'train'|'val'|'test': (x, y)}"
        )
    logger.info("loaded %s", result.describe())
    return result


def _check_arguments(binarize: str, split_seed: int, val_size: int | None) -> None:
    if binarize not in BINARIZE_MODES:
        raise ValueError(f"binarize must be one of {BINARIZE_MODES}, got {binarize!r}")
    if isinstance(split_seed, bool) or not isinstance(split_seed, (int, np.integer)):
        raise ValueError(f"split_seed must be an int, got {split_seed!r}")
    if val_size is not None and (
        isinstance(val_size, bool) or not isinstance(val_size, (int, np.integer)) or val_size < 0
    ):
        raise ValueError(f"val_size must be a non-negative int or None, got {val_size!r}")


def _check_options(name: str, accepted: Sequence[str], options: Mapping[str, Any]) -> None:
    """Options ``name`` does not declare are an error naming the datasets that take them."""
    unknown = [k for k in options if k not in accepted]
    if not unknown:
        return
    owners = sorted(
        {d for d in _REGISTRY.in_order() for k in unknown if k in get_dataset(d).options}
    )
    where = f"the {' / '.join(owners)} dataset only" if owners else "no registered dataset"
    raise ValueError(
        f"{' and '.join(unknown)} {'applies' if len(unknown) == 1 else 'apply'} to {where}, "
        f"not to {name!r}"
    )


def dataset_image_shape(name: str) -> tuple[int, int, int]:
    """The ``(C, H, W)`` of the images ``load_dataset(name)`` returns, without reading files."""
    return get_dataset(name).image_shape

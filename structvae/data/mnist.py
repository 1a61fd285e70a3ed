"""``mnist`` and ``fashion-mnist``: torchvision's IDX files, extracted from ``.gz`` if needed."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from .errors import HOW_TO as _HOW_TO
from .errors import DatasetCorruptError, DatasetNotFoundError
from .files import (
    _cache_slot,
    _copy_atomic,
    _download_target,
    _gunzip,
    _md5_file,
    _writable_dir,
    is_current_copy,
    write_extraction_record,
)
from .splits import _split_indices, _to_float

logger = logging.getLogger(__name__)

_MNIST_COUNTS = {True: 60000, False: 10000}
_MNIST_VAL = 10000


def _torchvision_class(key: str):
    from torchvision import datasets

    return datasets.MNIST if key == "mnist" else datasets.FashionMNIST


def _prepare_torchvision_root(
    key: str, root: Path, download: bool, verify: bool, cache: Path
) -> Path:
    """A folder from which torchvision's class reads the extracted IDX files."""
    cls = _torchvision_class(key)
    folder = cls.__name__
    gz_md5 = {os.path.basename(f): md5 for f, md5 in cls.resources}
    names = [os.path.splitext(f)[0] for f in gz_md5]
    raw = root / folder / "raw"
    slot = _cache_slot(cache, key, root)
    slot_raw = slot / folder / "raw"

    sources: dict[str, Path] = {}  # the archive when there is one: an extraction follows it
    for n in names:
        if (raw / f"{n}.gz").is_file():
            sources[n] = raw / f"{n}.gz"
        elif (raw / n).is_file():
            sources[n] = raw / n
    missing = [n for n in names if n not in sources]

    if not missing:
        if verify:
            _verify_archives(sources.values(), gz_md5)
        if all(src == raw / n or is_current_copy(src, raw / n) for n, src in sources.items()):
            return root
        if _writable_dir(raw):
            try:
                _materialize(sources, raw)
                return root
            except OSError as e:
                logger.info("could not extract into %s (%s); using the cache instead", raw, e)
        if _materialize(sources, slot_raw):
            logger.info(
                "%s is read-only: extracted %s from its .gz archives into the cache %s",
                raw,
                folder,
                slot_raw,
            )
        else:
            logger.info(
                "%s is read-only: reading %s extracted in the cache %s", raw, folder, slot_raw
            )
        return slot

    if all((slot_raw / n).is_file() for n in names):
        logger.info("using the cached copy of %s in %s", folder, slot_raw)
        return slot
    if download:
        target = _download_target(root, slot, folder)
        try:
            cls(str(target), train=True, download=True)
        except Exception as e:
            raise DatasetNotFoundError(
                f"downloading {folder} into {target / folder / 'raw'} failed: {e}\n"
                f"Put the files {', '.join(n + '.gz' for n in names)} there by hand, "
                "or point --data-root (root=...) at a folder that holds them."
            ) from e
        return target
    lines = "\n".join(f"  {raw / (n + '.gz')}  (or the extracted {n})" for n in names)
    raise DatasetNotFoundError(
        f"{key} not found: expected these files (torchvision's {folder}/raw layout):\n{lines}\n"
        f"missing: {', '.join(missing)}.\n{_HOW_TO}"
    )


def _verify_archives(sources, gz_md5: dict[str, str]) -> None:
    for src in sources:
        if src.suffix == ".gz":
            got, want = _md5_file(src), gz_md5[src.name]
            if got != want:
                raise DatasetCorruptError(
                    f"{src}: MD5 {got} differs from the original release's {want}; "
                    "the file is corrupt or not the original archive"
                )


def _materialize(sources: dict[str, Path], dst_raw: Path) -> int:
    """Make ``dst_raw/<name>`` an up-to-date extracted copy of every source.

    A copy is up to date when its record says it was made from the source as it is now
    (:func:`~structvae.data.files.is_current_copy`); a replaced archive is extracted again.
    Returns the number of files written (0 when every copy was already up to date).
    """
    written = 0
    for n, src in sources.items():
        dst = dst_raw / n
        if dst == src or is_current_copy(src, dst):
            continue
        if src.suffix == ".gz":
            logger.info("extracting %s -> %s", src, dst)
            _gunzip(src, dst)
        else:
            logger.info("copying %s -> %s", src, dst)
            _copy_atomic(src, dst)
        write_extraction_record(src, dst)
        written += 1
    return written


def _read_torchvision(key: str, tv_root: Path, train: bool, verify: bool):
    cls = _torchvision_class(key)
    raw = tv_root / cls.__name__ / "raw"
    try:
        ds = cls(str(tv_root), train=train, download=False)
        data, targets = ds.data, ds.targets
    except (AssertionError, RuntimeError, TypeError, ValueError, IndexError) as e:
        raise DatasetCorruptError(
            f"could not read the {'training' if train else 'test'} IDX files in {raw}: "
            f"{e or type(e).__name__}"
        ) from e
    if data.dim() != 3 or tuple(data.shape[1:]) != (28, 28) or data.dtype != torch.uint8:
        raise DatasetCorruptError(
            f"{raw}: images have shape {tuple(data.shape)} and dtype {data.dtype}; "
            "expected [N, 28, 28] uint8"
        )
    if targets.shape != (data.shape[0],):
        raise DatasetCorruptError(
            f"{raw}: {data.shape[0]} images but {targets.numel()} labels "
            f"({'train' if train else 't10k'} files)"
        )
    if verify and data.shape[0] != _MNIST_COUNTS[train]:
        raise DatasetCorruptError(
            f"{raw}: {data.shape[0]} {'training' if train else 'test'} images, "
            f"expected {_MNIST_COUNTS[train]}"
        )
    return data, targets.to(torch.long)


def _load_torchvision_mnist(key, root, download, split_seed, val_size, verify, cache):
    tv_root = _prepare_torchvision_root(key, root, download, verify, cache)
    train_x, train_y = _read_torchvision(key, tv_root, True, verify)
    test_x, test_y = _read_torchvision(key, tv_root, False, verify)
    val_size = _MNIST_VAL if val_size is None else int(val_size)
    tr, va = _split_indices(train_x.shape[0], val_size, split_seed)
    splits = {
        "train": (_to_float(train_x[tr]), train_y[tr], tr),
        "val": (_to_float(train_x[va]), train_y[va], va),
        "test": (_to_float(test_x), test_y, torch.arange(test_x.shape[0])),
    }
    return splits, 10


def load_request_arrays(key: str, request) -> tuple:
    """``_load_torchvision_mnist`` for dataset ``key`` with a ``DatasetRequest``'s file options:
    ``(arrays, k)`` as that function returns them."""
    return _load_torchvision_mnist(
        key,
        request.root,
        request.download,
        request.split_seed,
        request.val_size,
        request.verify,
        request.cache_dir,
    )

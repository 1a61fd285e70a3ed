"""``binarized-mnist``: the fixed binarisation of Larochelle & Murray (``.amat`` files)."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np
import torch

from .datasets import NUM_PIXELS
from .errors import HOW_TO as _HOW_TO
from .errors import DatasetCorruptError, DatasetNotFoundError
from .files import _cache_slot, _download_target, _download_url

BINARIZED_MNIST_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
_BMNIST_SPLITS = {"train": "train", "val": "valid", "test": "test"}
_BMNIST_MD5 = {
    "train": "db28b1a6ae0fe70cbd3da91acf46e477",
    "valid": "bf37822a04e94123630de6a7dfd9c9ef",
    "test": "14e41ae11040adba6ab8cb291eda0dd8",
}
_BMNIST_FOLDER = "BinarizedMNIST"


def _bmnist_filename(part: str) -> str:
    return f"binarized_mnist_{part}.amat"


def _load_binarized_mnist(root, download, val_size, verify, cache):
    slot = _cache_slot(cache, "binarized-mnist", root)
    folders = [root / _BMNIST_FOLDER, root, slot]
    found: dict[str, Path] = {}
    for part in _BMNIST_SPLITS.values():
        fname = _bmnist_filename(part)
        for folder in folders:
            hit = next(
                (p for p in (folder / fname, folder / f"{fname}.gz") if p.is_file()),
                None,
            )
            if hit is not None:
                found[part] = hit
                break
    missing = [p for p in _BMNIST_SPLITS.values() if p not in found]
    if missing and download:
        target = _download_target(root / _BMNIST_FOLDER, slot, "binarized MNIST")
        for part in missing:
            fname = _bmnist_filename(part)
            try:
                _download_url(BINARIZED_MNIST_URL + fname, target, fname, _BMNIST_MD5[part])
            except Exception as e:
                raise DatasetNotFoundError(
                    f"downloading {BINARIZED_MNIST_URL + fname} into {target} failed: {e}\n"
                    f"Put the file in {root / _BMNIST_FOLDER} by hand, or point --data-root at it."
                ) from e
            found[part] = target / fname
        missing = []
    if missing:
        want = "\n".join(
            f"  {root / _BMNIST_FOLDER / _bmnist_filename(p)}  (or .amat.gz)" for p in missing
        )
        raise DatasetNotFoundError(
            "binarized-mnist not found: expected the Larochelle & Murray files\n"
            f"{want}\n(the files may also lie directly in {root}). They are published at "
            f"{BINARIZED_MNIST_URL}\n{_HOW_TO}"
        )
    if val_size is not None and val_size != 10000:
        raise ValueError(
            "binarized-mnist has a fixed 50,000 / 10,000 / 10,000 split; "
            f"val_size must be None, got {val_size}"
        )
    splits = {}
    for split, part in _BMNIST_SPLITS.items():
        x = _read_amat(found[part], _BMNIST_MD5[part] if verify else None)
        labels = torch.full((x.shape[0],), -1, dtype=torch.long)
        index = torch.arange(x.shape[0])
        splits[split] = (torch.from_numpy(x).to(torch.float32), labels, index)
    return splits, None


def _read_amat(path: Path, md5: str | None) -> np.ndarray:
    """Read a binarized-MNIST ``.amat`` (optionally gzipped) into uint8 ``[N, 784]``."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            raise DatasetCorruptError(f"{path}: not a valid gzip file ({e})") from e
    if md5 is not None:
        got = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if got != md5:
            raise DatasetCorruptError(
                f"{path}: MD5 of the uncompressed content is {got}, expected {md5} "
                "(the original Larochelle & Murray file); it is corrupt or a different file"
            )
    return _parse_amat(data, path)


def _parse_amat(data: bytes, path: Path) -> np.ndarray:
    # Fast path for the canonical layout: "d d ... d\n", 784 digits 0/1, single spaces.
    if data and not data.endswith(b"\n"):
        data = data + b"\n"
    width = 2 * NUM_PIXELS
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size and buf.size % width == 0:
        rows = buf.reshape(-1, width)
        digits, seps = rows[:, 0::2], rows[:, 1::2]
        if (
            (seps[:, :-1] == ord(" ")).all()
            and (seps[:, -1] == ord("\n")).all()
            and ((digits == ord("0")) | (digits == ord("1"))).all()
        ):
            return digits - np.uint8(ord("0"))
    return _parse_amat_slow(data, path)


def _parse_amat_slow(data: bytes, path: Path) -> np.ndarray:
    """Any whitespace layout; names the first bad line."""
    lines = data.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DatasetCorruptError(f"{path}: no data")
    out = np.empty((len(lines), NUM_PIXELS), dtype=np.uint8)
    for i, line in enumerate(lines):
        tokens = line.split()
        if len(tokens) != NUM_PIXELS:
            raise DatasetCorruptError(
                f"{path}: line {i + 1}: expected {NUM_PIXELS} values, found {len(tokens)} "
                "(truncated or corrupt file?)"
            )
        try:
            values = np.array(tokens, dtype=np.float64)
        except ValueError as e:
            raise DatasetCorruptError(f"{path}: line {i + 1}: non-numeric value ({e})") from e
        if not np.isin(values, (0.0, 1.0)).all():
            bad = values[~np.isin(values, (0.0, 1.0))][0]
            raise DatasetCorruptError(f"{path}: line {i + 1}: value {bad} is not 0 or 1")
        out[i] = values.astype(np.uint8)
    return out

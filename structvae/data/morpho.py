"""Morpho-MNIST-style attribute datasets: real digits with seeded ``small``/``slant``/``thick`` bits.

``morpho-mnist``
    MNIST's files under ``root`` (as dataset ``mnist``: 50,000 train / 10,000 validation carved
    by ``split_seed`` from the training file, the 10,000 official test digits), one attribute
    draw per digit.
``morpho-mnist-sample``
    The bundled 5,000-digit MNIST sample (as ``mnist-sample``: 4,000 / 500 / 500), the training
    digits drawn ``draws`` times (default 3: 12,000 training images), validation and test once.

Every image is its digit with the attributes of :mod:`structvae.morpho` applied (deslanted,
then ``small`` scales it by 0.7, ``slant`` shears it by 0.5, ``thick`` dilates it by a 1.5-pixel
disc); ``y`` is long ``[N, A]`` in {0, 1} (the chosen ``attributes``, all three by default, in
that order), -1 on the training rows that ``label_fraction`` does not keep
(:func:`~structvae.data.labels.keep_labels`, default 0.1: a semi-supervised benchmark;
``label_fraction=1`` keeps all; validation and test keep theirs). The bits are fair
coins, or with ``correlation = p`` ``thick`` equals ``slant`` with probability ``p``. The draws
are seeded: the test split's by a fixed seed (comparable across ``split_seed``), the others' by
``split_seed``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..morpho import MORPHO_ATTRIBUTES, apply_attributes, draw_attributes, parse_morpho_attributes
from .datasets import IMAGE_SHAPE, DataSplits, DynamicBinarized, ImageDataset
from .labels import check_label_fraction, keep_labels, mask_labels
from .splits import _derived_seed

__all__ = [
    "AttributeImages",
    "DEFAULT_DRAWS",
    "DEFAULT_LABEL_FRACTION",
    "MORPHO_OPTIONS",
    "morpho_splits",
]

MORPHO_OPTIONS = ("attributes", "label_fraction", "correlation", "draws")
DEFAULT_DRAWS = 1
DEFAULT_LABEL_FRACTION = 0.1
_TEST_SEED = 12012  # fixed: the test split's attributes do not move with split_seed


class AttributeImages(ImageDataset):
    """Flattened images ``x`` (float32 ``[N, D]``) with attribute labels ``y`` (long ``[N, A]``,
    -1 where unlabelled); ``ds[indices]`` returns the batch ``(x, y)``, ``ds[i]`` one row."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        attributes: Sequence[str],
        image_shape: tuple[int, ...] = IMAGE_SHAPE,
        source_index: torch.Tensor | None = None,
    ) -> None:
        if y.dim() != 2 or y.shape != (x.shape[0], len(attributes)):
            raise ValueError(f"y must be [{x.shape[0]}, {len(attributes)}], got {list(y.shape)}")
        super().__init__(x, torch.zeros(x.shape[0], dtype=torch.long), image_shape, source_index)
        self.y = y.long()
        self.attributes = tuple(attributes)

    def __getitem__(self, index):
        if isinstance(index, int) or (isinstance(index, torch.Tensor) and index.dim() == 0):
            return self.x[index], self.y[index]
        return super().__getitem__(index)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, attributes={','.join(self.attributes)})"


def _one_split(x, index, draws: int, seed: int, correlation, columns, binarize: str):
    """``draws`` attribute draws of the digits ``x [N, 784]`` -> (images, bits ``[N·draws, A]``,
    source index)."""
    g = torch.Generator().manual_seed(int(seed))
    x = x.repeat(draws, 1)
    bits = draw_attributes(x.shape[0], g, correlation)
    images = apply_attributes(x, bits)
    if binarize == "fixed":
        images = (images > 0.5).float()
    return images, bits[:, columns], index.repeat(draws)


def morpho_splits(
    name: str,
    arrays: dict[str, tuple],
    *,
    binarize: str = "fixed",
    split_seed: int = 0,
    attributes: str | Sequence[str] | None = None,
    label_fraction: float = DEFAULT_LABEL_FRACTION,
    correlation: float | None = None,
    draws: int = 1,
) -> DataSplits:
    """The Morpho-MNIST splits from digit arrays ``{"train"|"val"|"test": (x [N, 784], y,
    source_index)}`` (module docstring); ``draws`` applies to the training split."""
    names = parse_morpho_attributes(attributes)
    columns = [MORPHO_ATTRIBUTES.index(a) for a in names]
    fraction = check_label_fraction(label_fraction)
    if isinstance(draws, bool) or int(draws) != draws or int(draws) < 1:
        raise ValueError(f"draws must be a positive integer, got {draws!r}")
    out = {}
    for i, split in enumerate(("train", "val", "test")):
        x, _, index = arrays[split]
        seed = _TEST_SEED if split == "test" else _derived_seed(split_seed, 100 + i)
        n_draws = int(draws) if split == "train" else 1
        images, y, source = _one_split(x, index, n_draws, seed, correlation, columns, binarize)
        if split == "train" and fraction < 1.0:
            y = mask_labels(y, keep_labels(y, fraction=fraction, seed=split_seed))
        base = AttributeImages(images.contiguous(), y, names, IMAGE_SHAPE, source)
        if binarize == "dynamic":
            base = DynamicBinarized(base, seed=_derived_seed(split_seed, i))
        out[split] = base
    return DataSplits(
        **out, name=name, image_shape=IMAGE_SHAPE, num_classes=None, binarize=binarize
    )


def _options(request, draws: int) -> dict:
    """The request's options with the defaults, checked before any file is read."""
    opts = {"draws": draws, **request.options}
    parse_morpho_attributes(opts.get("attributes"))
    check_label_fraction(opts.get("label_fraction", DEFAULT_LABEL_FRACTION))
    if opts.get("correlation") is not None:
        draw_attributes(0, torch.Generator(), opts["correlation"])
    return opts


def morpho_mnist(request) -> DataSplits:
    """Morpho-MNIST attributes on MNIST's files (50,000 / 10,000 / 10,000), y long [N, 3]."""
    from .mnist import load_request_arrays

    opts = _options(request, 1)
    arrays, _ = load_request_arrays("mnist", request)
    return morpho_splits(
        request.name, arrays, binarize=request.binarize, split_seed=request.split_seed, **opts
    )


def morpho_mnist_sample(request) -> DataSplits:
    """Morpho-MNIST attributes on the bundled MNIST sample (3 x 4,000 / 500 / 500), offline."""
    from .mnist_sample import _load_mnist_sample

    opts = _options(request, DEFAULT_DRAWS)
    arrays, _ = _load_mnist_sample(request.split_seed, request.val_size)
    return morpho_splits(
        request.name, arrays, binarize=request.binarize, split_seed=request.split_seed, **opts
    )


def register_morpho_datasets() -> None:
    """Register ``morpho-mnist`` and ``morpho-mnist-sample`` (idempotent)."""
    from .registry import register_dataset

    register_dataset("morpho-mnist", morpho_mnist, options=MORPHO_OPTIONS)
    register_dataset("morpho-mnist-sample", morpho_mnist_sample, options=MORPHO_OPTIONS)

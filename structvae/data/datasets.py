"""In-memory image datasets (``ImageDataset``, ``DynamicBinarized``) and ``DataSplits``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["IMAGE_SHAPE", "NUM_PIXELS", "DataSplits", "DynamicBinarized", "ImageDataset"]

IMAGE_SHAPE = (1, 28, 28)
NUM_PIXELS = 784


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


def _describe(t) -> str:
    if isinstance(t, torch.Tensor):
        return f"tensor of shape {tuple(t.shape)}"
    return type(t).__name__


def _is_scalar_index(index) -> bool:
    if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
        return True
    return isinstance(index, torch.Tensor) and index.dim() == 0

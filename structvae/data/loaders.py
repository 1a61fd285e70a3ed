"""Reproducible, batch-indexed ``DataLoader`` construction."""

from __future__ import annotations

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

__all__ = ["make_loader"]


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

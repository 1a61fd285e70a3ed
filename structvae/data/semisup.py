"""Semi-supervised data: a balanced labelled subset of the training split and mixed batches.

    idx = balanced_label_subset(splits.train.y, 100, num_classes=10, seed=0)   # 10 per class
    for x, y in MixedBatches(splits.train, idx, batch_size=100, seed=epoch_seed):
        ...   # x [B_u + B_l, 784]; y: -1 on the first B_u rows, the labels on the last B_l

The schedule: one epoch is one pass over the **whole** training split as unlabelled data (the
labelled images included, with ``y = -1``), in batches of ``batch_size`` shuffled by ``seed``;
every step appends one labelled batch of ``min(N, labelled_batch_size)`` images drawn from the
N labelled ones by cycling through a fresh permutation (re-shuffled each time the labelled set
is used up). Labelled images come only from the training split, so validation and test stay
unseen; they are read through the same dataset, so they are binarised like every other image.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from .labels import keep_labels
from .loaders import make_loader

__all__ = ["balanced_label_subset", "MixedBatches"]


def balanced_label_subset(
    y: torch.Tensor, num_labels: int, num_classes: int | None = None, seed: int = 0
) -> torch.Tensor:
    """Indices (sorted, long ``[num_labels]``) of ``num_labels / K`` images of each class.

    ``y`` long ``[N]``: the training split's labels. The draw is a function of ``seed`` only
    (:func:`structvae.data.labels.keep_labels` with ``count=num_labels``). Raises
    ``ValueError`` when ``num_labels`` is not a positive multiple of K, when a class has
    too few images, or when ``y`` has no labels (``-1``).
    """
    return keep_labels(y, count=num_labels, seed=seed, num_classes=num_classes)


class MixedBatches:
    """One epoch of mixed batches: an unlabelled batch (``y = -1``) then a labelled batch.

    Args:
        dataset: the training split (``ds[indices] -> (x, y)``).
        labelled: indices of the labelled images (:func:`balanced_label_subset`).
        batch_size: unlabelled rows per step (an epoch is ``ceil(len(dataset) / batch_size)``
            steps).
        labelled_batch_size: labelled rows per step (default ``batch_size``), capped at
            ``len(labelled)``.
        seed: the epoch's order (unlabelled shuffle and labelled cycling).
    """

    def __init__(
        self,
        dataset: Dataset,
        labelled: torch.Tensor,
        batch_size: int,
        seed: int = 0,
        labelled_batch_size: int | None = None,
    ) -> None:
        self.labelled = torch.as_tensor(labelled).long()
        if self.labelled.numel() == 0:
            raise ValueError("MixedBatches needs at least one labelled index")
        self.dataset = dataset
        self.loader = make_loader(dataset, batch_size, shuffle=True, seed=seed, drop_last=False)
        lb = batch_size if labelled_batch_size is None else int(labelled_batch_size)
        if lb < 1:
            raise ValueError(f"labelled_batch_size must be positive, got {lb}")
        self.labelled_batch_size = min(lb, self.labelled.numel())
        self.generator = torch.Generator().manual_seed(int(seed) + 7)

    def __len__(self) -> int:
        return len(self.loader)

    def _labelled_batches(self):
        buf = torch.empty(0, dtype=torch.long)
        while True:
            while buf.numel() < self.labelled_batch_size:
                perm = torch.randperm(self.labelled.numel(), generator=self.generator)
                buf = torch.cat([buf, self.labelled[perm]])
            yield buf[: self.labelled_batch_size]
            buf = buf[self.labelled_batch_size :]

    def __iter__(self):
        lab = self._labelled_batches()
        for x_u, _ in self.loader:
            idx = next(lab)
            x_l, y_l = self.dataset[idx]
            y_u = torch.full((x_u.shape[0],), -1, dtype=torch.long)
            yield torch.cat([x_u, torch.as_tensor(x_l).to(x_u.dtype)]), torch.cat([y_u, y_l])

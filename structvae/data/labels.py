"""The one labelling policy: which training rows keep their labels.

    kept = keep_labels(splits.train.y, count=100, seed=0)        # 10 per class (MNIST)
    kept = keep_labels(celeba.train.y, fraction=0.1, seed=0)     # 10% of the rows, [N, A] labels
    y = mask_labels(splits.train.y, kept)                        # the others get -1

Call it on the *training* split's labels only (validation and test keep theirs). Two ways:

- ``count=N``: a class-balanced subset, ``N / K`` rows of each of the K classes (class labels
  ``[N]``); for multi-attribute labels ``[N, A]`` there are no classes to balance, and the first
  ``N`` rows of the seeded permutation are kept (the rows ``fraction = N / len(y)`` keeps).
- ``fraction=f`` in [0, 1]: ``round(f · len(y))`` rows, the first of a seeded permutation of the
  rows (not balanced), for any label shape.

The result is a function of ``seed`` and the labels only: the same seed gives the same rows as
``balanced_label_subset`` (``--labels``) and the CelebA loader (``--label-fraction``) gave before
this module existed.
"""

from __future__ import annotations

import torch

__all__ = ["check_label_fraction", "keep_labels", "mask_labels"]


def check_label_fraction(fraction: float) -> float:
    """``fraction`` as a float in [0, 1], else ``ValueError``."""
    try:
        f = float(fraction)
    except (TypeError, ValueError):
        raise ValueError(f"--label-fraction must be a number in [0, 1], got {fraction!r}") from None
    if not 0.0 <= f <= 1.0:  # also refuses NaN
        raise ValueError(f"--label-fraction must lie in [0, 1], got {fraction!r}")
    return f


def keep_labels(
    y: torch.Tensor,
    *,
    count: int | None = None,
    fraction: float | None = None,
    seed: int = 0,
    num_classes: int | None = None,
) -> torch.Tensor:
    """Sorted indices (long ``[M]``) of the rows of ``y`` that keep their labels.

    ``y``: long ``[N]`` class labels or ``[N, A]`` attribute labels of the training split.
    Exactly one of ``count`` (class-balanced for ``[N]``) and ``fraction`` (in [0, 1]) is given.
    ``num_classes`` (class labels with ``count``): K, default ``max(y) + 1``.
    Raises ``ValueError`` with what to change for a bad count or fraction.
    """
    y = torch.as_tensor(y).long().cpu()
    if y.dim() not in (1, 2):
        raise ValueError(f"labels must be [N] or [N, A], got shape {tuple(y.shape)}")
    if (count is None) == (fraction is None):
        raise ValueError("keep_labels: give exactly one of count= and fraction=")
    n = y.shape[0]
    if fraction is not None:
        return _first_of_permutation(n, round(check_label_fraction(fraction) * n), seed)
    if isinstance(count, bool) or int(count) != count or count < 1:
        raise ValueError(f"--labels must be a positive integer, got {count!r}")
    count = int(count)
    if bool((y < 0).any()):
        raise ValueError("--labels needs a labelled dataset, but the training split has y = -1")
    if y.dim() == 2:
        if count > n:
            raise ValueError(f"--labels {count} exceeds the {n} training images")
        return _first_of_permutation(n, count, seed)
    return _balanced(y, count, num_classes, seed)


def _first_of_permutation(n: int, keep: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n, generator=g)[:keep].sort().values


def _balanced(y: torch.Tensor, count: int, num_classes: int | None, seed: int) -> torch.Tensor:
    """``count / K`` rows per class: the first of each class in a seeded permutation."""
    K = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if count % K:
        raise ValueError(
            f"--labels {count} must be divisible by the {K} classes (a balanced subset "
            f"takes the same number per class); try {max(K, count // K * K)}"
        )
    per = count // K
    counts = torch.bincount(y, minlength=K)
    if int(counts.min()) < per:
        k = int(counts.argmin())
        raise ValueError(
            f"--labels {count} needs {per} images per class, but class {k} has only "
            f"{int(counts[k])} in the training split"
        )
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(len(y), generator=g)
    ys = y[perm]
    order = torch.argsort(ys, stable=True)
    start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(y)) - start[ys[order]]
    return perm[order[rank < per]].sort().values


def mask_labels(y: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """A copy of ``y`` (``[N]`` or ``[N, A]``) with every row not in ``kept`` set to -1."""
    out = torch.full_like(torch.as_tensor(y).long(), -1)
    kept = torch.as_tensor(kept).long()
    out[kept] = torch.as_tensor(y).long()[kept]
    return out

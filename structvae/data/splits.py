"""Seeded split permutations and the helpers the loaders share."""

from __future__ import annotations

import hashlib

import torch


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

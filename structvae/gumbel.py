"""Numerically safe Gumbel noise: the one place structvae draws it."""

from __future__ import annotations

import torch

__all__ = ["sample_gumbel", "gumbel_like"]


def sample_gumbel(
    shape: torch.Size | tuple[int, ...],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw i.i.d. standard Gumbel noise of ``shape``.

    Uniforms are drawn in float32 (even when ``dtype`` is float16/bfloat16, whose
    coarse grid near 1 would give ``log(1) = 0`` and an infinite sample) and clamped
    to ``[tiny, 1)`` so that ``-log(-log(u))`` is always finite. The result is cast
    to ``dtype``; its range (about -4.5 to 16.7) fits every floating dtype.
    """
    u = torch.rand(shape, device=device, dtype=torch.float32, generator=generator)
    u = u.clamp_(min=torch.finfo(torch.float32).tiny)
    g = -torch.log(-torch.log(u))
    return g.to(dtype)


def gumbel_like(t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard Gumbel noise with the shape, device and dtype of ``t``."""
    return sample_gumbel(t.shape, device=t.device, dtype=t.dtype, generator=generator)

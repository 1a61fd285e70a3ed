"""Morpho-MNIST-style attributes: real digits thickened, slanted and shrunk by seeded bits.

After Morpho-MNIST (Castro et al., JMLR 2019), three binary attributes are applied to a
grey-level 28×28 digit (values in [0, 1]):

- ``small``: scaled down about the digit's centre of mass by :data:`SMALL_SCALE`;
- ``slant``: a horizontal shear, the top leaning right by :data:`SLANT_SHEAR` pixels per pixel
  of height;
- ``thick``: stroke thickening, a grey-level dilation with a disc of radius
  :data:`THICK_RADIUS` pixels.

Handwriting already varies in slant, so every digit is first *deslanted* (the shear that makes
its second moment ``cov(row, col)`` zero, the classical MNIST deskew); a digit with ``slant = 0``
is therefore upright and one with ``slant = 1`` leans by :data:`SLANT_SHEAR`. The geometric part
(deskew, scale, shear) is one affine resampling (bilinear, about the centre of mass, which is
moved to the image centre); the dilation comes last, so ``thick`` adds the same width at either
size. The magnitudes were chosen so that each attribute is identifiable from the image (a
supervised classifier on all labels: docs/celeba.md, "Morpho-MNIST").

    x2 = apply_attributes(x, bits)   # x [N, 784] or [N, 28, 28] in [0, 1], bits long [N, 3]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "MORPHO_ATTRIBUTES",
    "SMALL_SCALE",
    "SLANT_SHEAR",
    "THICK_RADIUS",
    "apply_attributes",
    "draw_attributes",
    "deslant_shear",
    "parse_morpho_attributes",
]

MORPHO_ATTRIBUTES = ("small", "slant", "thick")
"""The attribute names, in the column order of ``y``."""
SMALL_SCALE = 0.7
SLANT_SHEAR = 0.5
THICK_RADIUS = 1.5
_SIDE = 28


def parse_morpho_attributes(attributes) -> tuple[str, ...]:
    """``"small,slant,thick"`` (or a sequence; ``None``: all three) -> the names, in the given
    order; ``ValueError`` listing the valid ones for an unknown or repeated name."""
    if attributes is None:
        return MORPHO_ATTRIBUTES
    names = attributes.split(",") if isinstance(attributes, str) else list(attributes)
    names = [str(a).strip().lower() for a in names if str(a).strip()]
    if not names:
        raise ValueError("--attributes is empty; give comma-separated names of small, slant, thick")
    unknown = [a for a in names if a not in MORPHO_ATTRIBUTES]
    if unknown:
        raise ValueError(
            f"unknown Morpho-MNIST attribute(s) {', '.join(map(repr, unknown))}; the attributes "
            f"are: {', '.join(MORPHO_ATTRIBUTES)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"--attributes names an attribute twice: {','.join(names)}")
    return tuple(names)


def _as_images(x: torch.Tensor) -> torch.Tensor:
    """``[N, 784]`` or ``[N, 28, 28]`` or ``[N, 1, 28, 28]`` -> float ``[N, 1, 28, 28]``."""
    x = torch.as_tensor(x)
    if x.dim() == 2 and x.shape[1] == _SIDE * _SIDE:
        x = x.view(-1, 1, _SIDE, _SIDE)
    elif x.dim() == 3 and x.shape[1:] == (_SIDE, _SIDE):
        x = x[:, None]
    elif not (x.dim() == 4 and x.shape[1:] == (1, _SIDE, _SIDE)):
        raise ValueError(f"expected 28x28 grey images [N, 784], got shape {list(x.shape)}")
    return x.float()


def _moments(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Intensity-weighted centre (row, col) ``[N, 2]``, ``var(row)`` and ``cov(row, col)`` ``[N]``
    of ``img [N, 1, H, W]`` (pixel coordinates)."""
    H, W = img.shape[-2:]
    w = img[:, 0].clamp_min(0)
    mass = w.sum((1, 2)).clamp_min(1e-6)
    r = torch.arange(H, dtype=w.dtype)[None, :, None]
    c = torch.arange(W, dtype=w.dtype)[None, None, :]
    mr = (w * r).sum((1, 2)) / mass
    mc = (w * c).sum((1, 2)) / mass
    dr, dc = r - mr[:, None, None], c - mc[:, None, None]
    var_r = (w * dr * dr).sum((1, 2)) / mass
    cov = (w * dr * dc).sum((1, 2)) / mass
    return torch.stack([mr, mc], 1), var_r, cov


def deslant_shear(x: torch.Tensor) -> torch.Tensor:
    """The shear ``cov(row, col) / var(row)`` of each image ``[N]`` (columns per row; positive
    when the top leans left in image coordinates, rows growing downwards)."""
    _, var_r, cov = _moments(_as_images(x))
    return cov / var_r.clamp_min(1e-6)


def _disc_dilate(img: torch.Tensor, radius: float) -> torch.Tensor:
    """Grey-level dilation of ``img [N, 1, H, W]`` with a disc of ``radius`` pixels (the offsets
    ``(dr, dc)`` with ``dr² + dc² <= radius²``; radius 1.5 is the 3×3 square)."""
    k = int(radius)
    if radius * radius >= 2 * k * k:  # the disc covers the whole (2k+1)² square
        return F.max_pool2d(img, 2 * k + 1, stride=1, padding=k)
    H, W = img.shape[-2:]
    padded = F.pad(img, (k, k, k, k))
    out = img
    for dr in range(-k, k + 1):
        for dc in range(-k, k + 1):
            if dr * dr + dc * dc <= radius * radius and (dr, dc) != (0, 0):
                out = torch.maximum(out, padded[..., k + dr : k + dr + H, k + dc : k + dc + W])
    return out


def apply_attributes(
    x: torch.Tensor,
    bits: torch.Tensor,
    scale: float = SMALL_SCALE,
    shear: float = SLANT_SHEAR,
    radius: float = THICK_RADIUS,
) -> torch.Tensor:
    """Apply the attributes ``bits`` (long ``[N, 3]``: small, slant, thick in {0, 1}) to the
    digits ``x`` (``[N, 784]`` in [0, 1]) -> ``[N, 784]`` in [0, 1] (see the module docstring)."""
    img = _as_images(x)
    N = img.shape[0]
    bits = torch.as_tensor(bits).long()
    if bits.shape != (N, len(MORPHO_ATTRIBUTES)) or not bool(((bits == 0) | (bits == 1)).all()):
        raise ValueError(f"bits must be 0/1 of shape [{N}, 3] (small, slant, thick)")
    centre, var_r, cov = _moments(img)
    a = cov / var_r.clamp_min(1e-6)  # deskew: col -= a * (row - centre)
    s = torch.where(bits[:, 0] == 1, scale, 1.0)
    k = torch.where(bits[:, 1] == 1, shear, 0.0)
    # forward map on (row, col) about the centre: deskew, scale by s, shear col -= k * row
    # (the top, row < 0, moves right); grid_sample needs its inverse, output -> input.
    zeros, ones = torch.zeros(N), torch.ones(N)
    D = torch.stack([torch.stack([ones, zeros], 1), torch.stack([-a, ones], 1)], 1)
    Hm = torch.stack([torch.stack([ones, zeros], 1), torch.stack([-k, ones], 1)], 1)
    fwd = Hm @ (s[:, None, None] * D)
    inv = torch.linalg.inv(fwd)  # [N, 2, 2] in (row, col)
    # affine_grid works in normalised (x = col, y = row) coordinates in [-1, 1]
    half = (_SIDE - 1) / 2
    swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    theta_lin = swap @ inv @ swap  # (x, y) form
    off = (centre[:, [1, 0]] - half) / half  # the input's centre of mass, normalised (x, y)
    theta = torch.cat([theta_lin, off[:, :, None]], 2)
    grid = F.affine_grid(theta, list(img.shape), align_corners=True)
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    thick = bits[:, 2] == 1
    if bool(thick.any()):
        out[thick] = _disc_dilate(out[thick], radius)
    return out.clamp(0, 1).reshape(N, -1)


def draw_attributes(
    n: int, generator: torch.Generator, correlation: float | None = None
) -> torch.Tensor:
    """``n`` seeded attribute draws, long ``[n, 3]``: independent fair bits, or with
    ``correlation = p`` the ``thick`` bit equal to ``slant`` with probability ``p``."""
    bits = torch.randint(2, (int(n), len(MORPHO_ATTRIBUTES)), generator=generator)
    if correlation is not None:
        p = float(correlation)
        if not 0.0 <= p <= 1.0:
            raise ValueError(
                f"the attribute correlation P(thick = slant) must be in [0, 1], got {p}"
            )
        same = torch.rand(int(n), generator=generator) < p
        bits[:, 2] = torch.where(same, bits[:, 1], 1 - bits[:, 1])
    return bits

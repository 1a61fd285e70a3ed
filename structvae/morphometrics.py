"""Model-independent measurements of digit images, and the attribute-switching metrics.

The measurements (one number per image, computed from the pixels only, so they can score images
decoded by any model):

- ``thickness``: twice the mean Euclidean distance transform on the ridge of the ink (the pixels
  of the ink mask, intensity > 0.5, whose distance to the background is a local maximum): the
  stroke width in pixels (after Morpho-MNIST's distance-transform thickness);
- ``slant``: ``-cov(row, col) / var(row)`` of the intensity-weighted pixels, the horizontal shear
  of the ink (positive: the top leans right);
- ``size``: the standard deviation of the ink's rows, ``sqrt(var(row))`` (intensity weighted;
  a horizontal shear leaves it unchanged).

The switching metrics, for each attribute ``a`` with on/off difference ``d_a`` (the mean
measurement of data images with ``a = 1`` minus that with ``a = 0``):

- switch success: the fraction of images where ``m_a(on) - m_a(off)`` has the sign of ``d_a``
  and at least half its size, ``sign(d_a)·(m_a(on) - m_a(off)) >= |d_a| / 2``;
- others kept: the fraction of images where, in the same switch, every other attribute ``b``
  moves by less than half its own difference, ``|m_b(on) - m_b(off)| < |d_b| / 2`` for all ``b``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "MEASUREMENTS",
    "ATTRIBUTE_MEASUREMENT",
    "measure",
    "on_off_difference",
    "switch_metrics",
    "switch_rows",
]

MEASUREMENTS = ("size", "slant", "thickness")
ATTRIBUTE_MEASUREMENT = {"small": "size", "slant": "slant", "thick": "thickness"}
"""Which measurement each Morpho-MNIST attribute moves."""
_INK = 0.5


def _images(x) -> np.ndarray:
    """``[N, 784]``, ``[N, 28, 28]`` or ``[N, 1, H, W]`` -> float64 ``[N, H, W]``."""
    a = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, float)
    if a.ndim == 2:
        side = int(round(a.shape[1] ** 0.5))
        if side * side != a.shape[1]:
            raise ValueError(f"flat images must be square, got {a.shape[1]} pixels")
        a = a.reshape(-1, side, side)
    elif a.ndim == 4:
        if a.shape[1] != 1:
            raise ValueError(f"morphometrics measure grey images, got {a.shape[1]} channels")
        a = a[:, 0]
    elif a.ndim != 3:
        raise ValueError(f"expected images [N, D], [N, H, W] or [N, 1, H, W], got {a.shape}")
    return a


def _thickness(a: np.ndarray) -> np.ndarray:
    """Stroke widths ``[N]`` of images ``a [N, H, W]``: one anisotropic distance transform of
    the stack (the image axis so coarsely sampled that distances never cross images)."""
    from scipy import ndimage

    mask = np.pad(a > _INK, ((0, 0), (1, 1), (1, 1)))
    dist = ndimage.distance_transform_edt(mask, sampling=(1e4, 1.0, 1.0))
    ridge = mask & (dist >= ndimage.maximum_filter(dist, size=(1, 3, 3)))
    count = ridge.sum((1, 2))
    total = np.where(ridge, dist, 0.0).sum((1, 2))
    return np.where(count > 0, 2.0 * total / np.maximum(count, 1), 0.0)


def measure(x) -> dict[str, np.ndarray]:
    """The measurements of the images ``x`` (values in [0, 1]): ``{name: float64 [N]}`` for the
    names in :data:`MEASUREMENTS` (module docstring)."""
    a = _images(x)
    N, H, W = a.shape
    w = np.clip(a, 0, None)
    mass = np.maximum(w.sum((1, 2)), 1e-6)
    r = np.arange(H, dtype=float)[None, :, None]
    c = np.arange(W, dtype=float)[None, None, :]
    mr = (w * r).sum((1, 2)) / mass
    mc = (w * c).sum((1, 2)) / mass
    dr, dc = r - mr[:, None, None], c - mc[:, None, None]
    var_r = (w * dr * dr).sum((1, 2)) / mass
    cov = (w * dr * dc).sum((1, 2)) / mass
    return {
        "size": np.sqrt(var_r),
        "slant": -cov / np.maximum(var_r, 1e-6),
        "thickness": _thickness(a),
    }


def on_off_difference(
    measured: dict[str, np.ndarray], y, attributes: Sequence[str]
) -> dict[str, float]:
    """``{attribute: mean m_a | a = 1 - mean m_a | a = 0}`` over the rows of ``y`` (long
    ``[N, A]``, -1 ignored) of each attribute's own measurement (:data:`ATTRIBUTE_MEASUREMENT`)."""
    y = np.asarray(torch.as_tensor(y).cpu())
    out = {}
    for j, name in enumerate(attributes):
        m = measured[ATTRIBUTE_MEASUREMENT[name]]
        on, off = m[y[:, j] == 1], m[y[:, j] == 0]
        if on.size == 0 or off.size == 0:
            raise ValueError(f"attribute {name!r}: need labelled images with it on and off")
        out[name] = float(on.mean() - off.mean())
    return out


def switch_rows(
    on_images, off_images, attribute: str, difference: dict[str, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Per image, for a switch of ``attribute`` (``on_images`` / ``off_images`` the same rows
    with it forced on / off): (switch success, others kept), bool ``[N]`` each (module
    docstring); ``difference`` holds every attribute's data difference."""
    m_on, m_off = measure(on_images), measure(off_images)
    delta = {
        b: m_on[ATTRIBUTE_MEASUREMENT[b]] - m_off[ATTRIBUTE_MEASUREMENT[b]] for b in difference
    }
    d = difference[attribute]
    success = np.sign(d) * delta[attribute] >= abs(d) / 2
    kept = np.ones_like(success)
    for b in difference:
        if b != attribute:
            kept &= np.abs(delta[b]) < abs(difference[b]) / 2
    return success, kept


def switch_metrics(
    on_images: dict[str, object],
    off_images: dict[str, object],
    difference: dict[str, float],
) -> dict[str, dict[str, float]]:
    """Switch success and others kept per attribute (module docstring).

    ``on_images[a]`` / ``off_images[a]``: the same rows with attribute ``a`` forced on / off
    (``[N, 784]`` in [0, 1]), for some or all attributes; ``difference``: :func:`on_off_difference`
    of the data, for every attribute (the others' thresholds). Returns
    ``{a: {"switch_success": fraction, "others_kept": fraction}}``."""
    unknown = [a for a in on_images if a not in difference]
    if unknown or set(on_images) != set(off_images):
        raise ValueError(f"need on and off images and a data difference for {unknown or 'each'}")
    out = {}
    for a in on_images:
        success, kept = switch_rows(on_images[a], off_images[a], a, difference)
        out[a] = {"switch_success": float(success.mean()), "others_kept": float(kept.mean())}
    return out

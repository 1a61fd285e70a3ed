"""Morpho-MNIST-style attributes and the model-independent morphometrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from structvae.morpho import MORPHO_ATTRIBUTES, apply_attributes, deslant_shear, draw_attributes
from structvae.morphometrics import measure, on_off_difference, switch_metrics

_SHARED_MNIST = Path("/work/shared/data/MNIST/raw/t10k-images-idx3-ubyte")


def _digits(n: int = 300) -> torch.Tensor:
    """Real digits: MNIST's test file when the shared data is present, else the bundled sample."""
    if _SHARED_MNIST.is_file():
        raw = np.frombuffer(_SHARED_MNIST.read_bytes()[16:], dtype=np.uint8)
        x = raw.reshape(-1, 784)[:n]
    else:
        from structvae.data.mnist_sample import _mnist_sample_arrays

        x = _mnist_sample_arrays()[0][:: 5000 // n][:n]
    return torch.from_numpy(x.astype(np.float32) / 255)


def test_transforms_keep_shape_range_and_identity():
    x = _digits(20)
    out = apply_attributes(x, torch.zeros(20, 3, dtype=torch.long))
    assert out.shape == (20, 784) and 0 <= out.min() and out.max() <= 1
    # all-off only deslants: the second-moment shear is (near) zero afterwards
    assert deslant_shear(out).abs().max() < 0.05
    assert deslant_shear(x).abs().max() > 0.1  # real handwriting was slanted
    # ink is kept: the deslanted digit has about the mass of the original
    assert torch.allclose(out.sum(1), x.sum(1), rtol=0.1)


@pytest.mark.parametrize("j,name", list(enumerate(MORPHO_ATTRIBUTES)))
def test_morphometrics_separate_on_and_off(j, name):
    """Each attribute moves its own measurement on (nearly) every real digit, the others less."""
    x = _digits()
    g = torch.Generator().manual_seed(0)
    bits = draw_attributes(len(x), g)
    on, off = bits.clone(), bits.clone()
    on[:, j], off[:, j] = 1, 0
    m_on, m_off = measure(apply_attributes(x, on)), measure(apply_attributes(x, off))
    key = {"small": "size", "slant": "slant", "thick": "thickness"}[name]
    sign = -1 if name == "small" else 1
    delta = sign * (m_on[key] - m_off[key])
    assert (delta > 0).mean() > 0.97
    # data-level difference and the metric on the true transforms
    m = measure(apply_attributes(x, bits))
    d = on_off_difference(m, bits, MORPHO_ATTRIBUTES)
    assert np.sign(d[name]) == sign
    res = switch_metrics(
        {name: apply_attributes(x, on)}, {name: apply_attributes(x, off)}, {name: d[name]}
    )
    assert res[name]["switch_success"] > 0.95


def test_switch_metrics_definition_on_hand_made_images():
    """A do-nothing switch fails and keeps the others; swapping on/off scores zero."""
    x = _digits(50)
    bits = draw_attributes(50, torch.Generator().manual_seed(1))
    m = measure(apply_attributes(x, bits))
    d = on_off_difference(m, bits, MORPHO_ATTRIBUTES)
    same = apply_attributes(x, bits)
    res = switch_metrics({a: same for a in d}, {a: same for a in d}, d)
    for a in d:
        assert res[a] == {"switch_success": 0.0, "others_kept": 1.0}
    on, off = bits.clone(), bits.clone()
    on[:, 2], off[:, 2] = 1, 0
    good = switch_metrics(
        {"thick": apply_attributes(x, on)}, {"thick": apply_attributes(x, off)}, d
    )
    bad = switch_metrics({"thick": apply_attributes(x, off)}, {"thick": apply_attributes(x, on)}, d)
    assert good["thick"]["switch_success"] > 0.95 and bad["thick"]["switch_success"] == 0.0


def test_correlated_draws_and_bad_input():
    g = torch.Generator().manual_seed(0)
    b = draw_attributes(20000, g, correlation=0.8)
    assert abs((b[:, 1] == b[:, 2]).float().mean().item() - 0.8) < 0.02
    assert abs(b.float().mean().item() - 0.5) < 0.02
    with pytest.raises(ValueError, match="correlation"):
        draw_attributes(5, g, correlation=1.5)
    with pytest.raises(ValueError, match="bits"):
        apply_attributes(torch.zeros(2, 784), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="28x28"):
        apply_attributes(torch.zeros(2, 100), torch.zeros(2, 3, dtype=torch.long))


@pytest.mark.parametrize("radius", [1.0, 1.5, 2.0])
def test_dilation_is_the_max_over_the_disc(radius):
    from structvae.morpho import _disc_dilate

    img = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    k = int(radius)
    padded = torch.nn.functional.pad(img, (k, k, k, k))
    want = torch.empty_like(img)
    for r in range(12):
        for c in range(12):
            vals = [
                padded[:, 0, k + r + dr, k + c + dc]
                for dr in range(-k, k + 1)
                for dc in range(-k, k + 1)
                if dr * dr + dc * dc <= radius * radius
            ]
            want[:, 0, r, c] = torch.stack(vals).max(0).values
    assert torch.equal(_disc_dilate(img, radius), want)

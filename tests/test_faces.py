"""The procedural synthetic CelebA is read by the (unchanged) CelebA loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from structvae.celeba import CELEBA_ATTRIBUTES
from structvae.data import load_dataset
from structvae.faces import make_synthetic_celeba


def test_generated_faces_load_with_the_celeba_loader(tmp_path):
    values = make_synthetic_celeba(tmp_path, num_images=30, seed=3)
    assert values.shape == (30, 40) and set(np.unique(values)) <= {-1, 1}
    splits = load_dataset(
        "celeba", root=tmp_path, binarize="none", attributes="Eyeglasses,Smiling,Male,No_Beard"
    )
    assert splits.sizes == (24, 3, 3)
    x, y = splits.train[list(range(24))]
    assert x.shape == (24, 3 * 64 * 64) and 0 <= x.min() and x.max() <= 1
    col = [CELEBA_ATTRIBUTES.index(a) for a in ("Eyeglasses", "Smiling", "Male", "No_Beard")]
    assert torch.equal(y, torch.from_numpy((values[:24][:, col] > 0).astype(np.int64)))
    # a beard only on men: No_Beard = 0 implies Male = 1
    assert bool((y[:, 2][y[:, 3] == 0] == 1).all())


def test_attributes_are_visible(tmp_path):
    """Eyeglasses add edges at eye height: the eye band's horizontal gradient is larger with
    them than without."""
    make_synthetic_celeba(tmp_path, num_images=80, seed=0)
    train = load_dataset("celeba", root=tmp_path, binarize="none", attributes="Eyeglasses").train
    x, y = train[list(range(len(train)))]
    img = x.view(-1, 3, 64, 64)
    edges = (img[:, :, :, 1:] - img[:, :, :, :-1]).abs().mean((1, 3))  # [N, 64] per row
    eye = edges[:, 24:34].mean(1)
    glasses = y[:, 0] == 1
    assert 10 < int(glasses.sum()) < len(train) - 10
    assert eye[glasses].mean() > 1.3 * eye[~glasses].mean()


def test_bad_image_count(tmp_path):
    with pytest.raises(ValueError, match="at least 3"):
        make_synthetic_celeba(tmp_path, num_images=2)


def test_smiles_are_visible(tmp_path):
    """A smile shows teeth: the mouth band holds more near-white pixels with it than without."""
    make_synthetic_celeba(tmp_path, num_images=80, seed=1)
    train = load_dataset("celeba", root=tmp_path, binarize="none", attributes="Smiling").train
    x, y = train[list(range(len(train)))]
    img = x.view(-1, 3, 64, 64)
    white = (img[:, :, 38:52, 16:48].min(1).values > 0.85).float().mean((1, 2))  # [N]
    smiling = y[:, 0] == 1
    assert 10 < int(smiling.sum()) < len(train) - 10
    assert white[smiling].mean() > 3 * white[~smiling].mean() + 0.01

"""The one labelling policy (structvae.data.labels): which training rows keep their labels."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from structvae.data import balanced_label_subset, keep_labels, load_dataset, mask_labels
from structvae.data.celeba import make_miniature_celeba

ROOT = Path(__file__).resolve().parents[1]

# Produced by the code before structvae/data/labels.py existed (main at 95dd396:
# structvae.semisup_data.balanced_label_subset(load_dataset("mnist-sample").train.y, 100, 10, 0)).
LABELS_100_SEED_0 = [
    42, 44, 89, 133, 138, 209, 247, 251, 313, 373, 407, 450, 499, 521, 567, 594, 598, 613, 746,
    763, 818, 825, 827, 837, 843, 853, 961, 1018, 1159, 1196, 1216, 1227, 1251, 1268, 1322, 1340,
    1341, 1452, 1559, 1575, 1613, 1637, 1683, 1698, 1726, 1778, 1829, 1857, 1961, 1977, 1995,
    1996, 1998, 2002, 2062, 2120, 2128, 2152, 2155, 2240, 2430, 2435, 2442, 2469, 2487, 2550,
    2560, 2654, 2721, 2760, 2801, 2805, 2903, 2984, 3053, 3074, 3081, 3085, 3165, 3177, 3270,
    3283, 3354, 3372, 3381, 3436, 3479, 3559, 3569, 3584, 3636, 3695, 3723, 3732, 3765, 3785,
    3822, 3826, 3891, 3907,
]  # fmt: skip
# Same code: load_dataset("celeba", root=make_miniature_celeba(d, 60, seed=3), binarize="none",
# label_fraction=0.3, split_seed=s).train rows with labels, for s = 0 and 5.
CELEBA_FRACTION_03 = {
    0: [2, 4, 5, 6, 11, 14, 16, 17, 21, 26, 29, 39],
    5: [1, 6, 9, 11, 13, 16, 20, 25, 29, 30, 33, 37],
}


def test_labels_100_seed_0_are_todays():
    y = load_dataset("mnist-sample").train.y
    kept = keep_labels(y, count=100, seed=0)
    assert kept.tolist() == LABELS_100_SEED_0
    assert balanced_label_subset(y, 100, 10, 0).tolist() == LABELS_100_SEED_0
    assert torch.bincount(y[kept], minlength=10).tolist() == [10] * 10


def test_celeba_label_fraction_rows_are_todays(tmp_path):
    make_miniature_celeba(tmp_path, 60, seed=3)
    for seed, want in CELEBA_FRACTION_03.items():
        y = load_dataset(
            "celeba", root=tmp_path, binarize="none", label_fraction=0.3, split_seed=seed
        ).train.y
        labelled = (y >= 0).all(1)
        assert torch.equal(labelled, (y >= 0).any(1))  # a row keeps all its attributes or none
        assert torch.nonzero(labelled).flatten().tolist() == want


def test_balanced_count_against_a_direct_count():
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 4, (500,), generator=g)
    for seed in range(5):
        kept = keep_labels(y, count=40, seed=seed)
        assert kept.tolist() == sorted(set(kept.tolist()))  # sorted, no repeats
        assert torch.bincount(y[kept], minlength=4).tolist() == [10, 10, 10, 10]
        assert torch.equal(kept, keep_labels(y, count=40, seed=seed))  # a function of the seed
    assert not torch.equal(keep_labels(y, count=40, seed=0), keep_labels(y, count=40, seed=1))


def test_fraction_and_count_for_attribute_labels():
    g = torch.Generator().manual_seed(2)
    y = torch.randint(0, 2, (101, 3), generator=g)  # [N, A]
    for f in (0.0, 0.1, 0.5, 1.0):
        kept = keep_labels(y, fraction=f, seed=3)
        assert kept.numel() == round(f * 101)
        assert kept.tolist() == sorted(set(kept.tolist())) and (kept < 101).all()
    assert keep_labels(y, fraction=1.0, seed=0).tolist() == list(range(101))
    # count on [N, A]: the first rows of the same permutation, so subsets grow by prefix
    small, big = keep_labels(y, count=10, seed=4), keep_labels(y, count=30, seed=4)
    assert set(small.tolist()) <= set(big.tolist()) and big.numel() == 30
    assert torch.equal(keep_labels(y, count=50, seed=4), keep_labels(y, fraction=50 / 101, seed=4))
    masked = mask_labels(y, small)
    assert masked.shape == y.shape and torch.equal(masked[small], y[small])
    rest = torch.ones(101, dtype=torch.bool)
    rest[small] = False
    assert (masked[rest] == -1).all() and (y >= 0).all()  # the input is left alone


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan"), "half"])
def test_bad_fraction_is_a_one_line_value_error(fraction):
    with pytest.raises(ValueError, match="--label-fraction") as e:
        keep_labels(torch.zeros(10, 2, dtype=torch.long), fraction=fraction, seed=0)
    assert "\n" not in str(e.value)


def test_bad_counts_say_what_to_do():
    y = torch.arange(30) % 3
    with pytest.raises(ValueError, match="divisible by the 3 classes.*try 9"):
        keep_labels(y, count=10, seed=0)
    with pytest.raises(ValueError, match="class 0 has only 10"):
        keep_labels(y, count=33, seed=0)
    with pytest.raises(ValueError, match="positive integer"):
        keep_labels(y, count=0, seed=0)
    with pytest.raises(ValueError, match="y = -1"):
        keep_labels(torch.tensor([0, 1, -1]), count=2, seed=0)
    with pytest.raises(ValueError, match="exactly one of"):
        keep_labels(y, count=3, fraction=0.5, seed=0)
    with pytest.raises(ValueError, match="exactly one of"):
        keep_labels(y, seed=0)
    with pytest.raises(ValueError, match="exceeds the 4"):
        keep_labels(torch.zeros(4, 2, dtype=torch.long), count=5, seed=0)


def test_cli_label_fraction_out_of_range_is_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = ["--dataset", "celeba", "--model", "celeba", "--binarize", "none"]
    proc = subprocess.run(
        [sys.executable, "-m", "structvae", "train", *args, "--label-fraction", "1.5"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last == "structvae train: error: --label-fraction must lie in [0, 1], got 1.5"

"""The attribute model (``--model attribute``) and the Morpho-MNIST datasets (issue 12)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from structvae.cli import main as cli_main
from structvae.data import load_dataset
from structvae.data.morpho import DEFAULT_DRAWS
from structvae.estimators import DirectEstimator
from structvae.models import AttributeVAE, build_model
from structvae.morpho import MORPHO_ATTRIBUTES
from structvae.train import TrainConfig, check_config

_SHARED = Path("/work/shared/data")


class _HandDecoder(nn.Module):
    """Pixel logits: block ``a`` (rows 4a..4a+3) is bright iff bit ``a`` is on; the last block
    (rows 24..27) is bright iff the style code's first entry is positive."""

    def forward(self, code: torch.Tensor) -> torch.Tensor:  # [N, 2A + S]
        img = torch.full((code.shape[0], 28, 28), -20.0)
        for a in range(3):
            on = code[:, 2 * a + 1] > 0.5
            img[on, 4 * a : 4 * a + 4] = 20.0
        img[code[:, 6] > 0, 24:] = 20.0
        return img.reshape(-1, 784)


def _hand_model() -> AttributeVAE:
    m = AttributeVAE("small,slant,thick", 2, input_dim=784)
    with torch.no_grad():
        for head in (m.attribute_head, m.style_head):
            head.weight.zero_()
        m.attribute_head.bias.copy_(torch.tensor([3.0, -3.0, 3.0]))  # arg max bits: 1, 0, 1
        m.style_head.bias.copy_(torch.tensor([1.0, -1.0, -30.0, -30.0]))  # mean (1, -1), σ ≈ 0
    m.decoder = _HandDecoder()
    return m


def test_switch_on_a_hand_set_decoder():
    m = _hand_model()
    x = torch.rand(5, 784)
    for a, name in enumerate(MORPHO_ATTRIBUTES):
        for on in (False, True):
            img = m.switch(x, name, on)
            assert img.shape == (5, 1, 28, 28)
            bits = {0: 1, 1: 0, 2: 1}
            bits[a] = int(on)
            for b in range(3):  # the switched bit as asked, the others at the arg max
                block = img[:, 0, 4 * b : 4 * b + 4]
                assert bool((block > 0.99).all()) == bool(bits[b]), (name, on, b)
                assert bool((block < 0.01).all()) == (not bits[b])
            assert bool((img[:, 0, 24:] > 0.99).all())  # style at the encoder's mean (+1)
    assert torch.equal(m.switch(x, 1, True), m.switch(x, "SLANT", True))
    images, titles = m.attribute_grid(x[:2])
    assert titles[:2] == ["input", "reconstruction"] and images.shape == (2, 8, 1, 28, 28)
    assert torch.equal(images[:, 0].reshape(2, -1), x[:2])
    assert torch.equal(images[:, 5], m.switch(x[:2], "slant", True))


def test_unknown_attribute_names_list_the_valid_ones():
    m = _hand_model()
    with pytest.raises(ValueError, match="small, slant, thick"):
        m.switch(torch.rand(1, 784), "bold", True)
    with pytest.raises(ValueError, match="small, slant, thick"):
        AttributeVAE("small,bold", input_dim=784)
    with pytest.raises(ValueError, match="small, slant, thick"):
        load_dataset("morpho-mnist-sample", attributes="italic")
    with pytest.raises(ValueError, match="Eyeglasses.*Young"):
        build_model("attribute", input_dim=12288, attributes="Sunglasses")
    with pytest.raises(ValueError, match="28x28 grey.*64x64 colour"):
        build_model("attribute", input_dim=100)


def test_label_fraction_outside_the_unit_interval_is_a_one_line_error(capsys):
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"--label-fraction must lie in \[0, 1\]"):
            load_dataset("morpho-mnist-sample", label_fraction=bad)
        with pytest.raises(ValueError, match="label-fraction"):
            check_config(TrainConfig(model="attribute", dataset="morpho-mnist-sample",
                                     label_fraction=bad))  # fmt: skip
    with pytest.raises(SystemExit):
        cli_main(["train", "--model", "attribute", "--dataset", "morpho-mnist-sample",
                  "--label-fraction", "2"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("structvae train: error: --label-fraction must lie in [0, 1]")


def test_morpho_sample_dataset():
    s = load_dataset("morpho-mnist-sample", draws=2, correlation=0.8, label_fraction=0.25)
    assert s.sizes == (8000, 500, 500) and s.image_shape == (1, 28, 28)
    x, y = s.train[[0, 1, 2]]
    assert x.shape == (3, 784) and y.shape == (3, 3) and y.dtype == torch.long
    kept = (s.train.y >= 0).all(1)
    assert int(kept.sum()) == 2000 and bool(((s.train.y == -1).all(1) | kept).all())
    assert bool(((s.test.y == 0) | (s.test.y == 1)).all())
    same = (s.val.y[:, 1] == s.val.y[:, 2]).float().mean()
    assert 0.7 < float(same) < 0.9  # P(thick = slant) = 0.8
    assert set(torch.unique(x).tolist()) <= {0.0, 1.0}  # fixed binarisation by default
    # each training digit drawn twice: the source index repeats
    assert torch.equal(s.train.source_index[:4000], s.train.source_index[4000:])
    default = load_dataset("morpho-mnist-sample", binarize="none")
    assert abs(float((default.train.y >= 0).all(1).float().mean()) - 0.1) < 1e-6
    assert default.sizes == (4000 * DEFAULT_DRAWS, 500, 500)
    one = load_dataset("morpho-mnist-sample", attributes="thick")
    assert one.train.y.shape == (4000 * DEFAULT_DRAWS, 1)
    assert torch.equal(one.test.y[:, 0], default.test.y[:, 2])  # test draws do not move


@pytest.mark.slow
@pytest.mark.skipif(not (_SHARED / "MNIST").is_dir(), reason="needs MNIST under /work/shared/data")
def test_morpho_mnist_from_the_mnist_files():
    s = load_dataset("morpho-mnist", root=_SHARED, label_fraction=0.1)
    assert s.sizes == (50000, 10000, 10000)
    assert s.train.y.shape == (50000, 3)
    assert int((s.train.y >= 0).all(1).sum()) == 5000


def test_training_step_and_metrics():
    m = build_model("attribute", input_dim=784, pairwise="general")
    x = (torch.rand(6, 784) > 0.5).float()
    y = torch.tensor([[1, 0, 1], [0, 1, 1], [-1, -1, -1], [-1, -1, -1], [0, 0, 0], [1, 1, 0]])
    total, stats = m.objective(x, DirectEstimator(eps=0.1), y=y)
    total.backward()
    assert math.isfinite(float(total.detach())) and {"cycle", "labelled", "loss"} <= set(stats)
    assert float(stats["labelled"]) == pytest.approx(4 / 6)
    assert float(m.decoder[0].weight.grad.abs().sum()) > 0
    out = m.label_metrics(x, y.clamp(min=0))
    assert {"accuracy", "switch_thick", "kept_thick"} <= set(out)
    assert all(v.shape == (6,) for v in out.values())
    assert torch.isfinite(m.iwae_nll(x, samples=4)).all()


@pytest.mark.slow
def test_short_training_makes_the_bits_switch_the_image():
    """A short run (1,500 images, 20% labelled, 4 epochs) raises the measured switch success
    well above the untrained model's (which is ~0: its bits barely move the image)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    s = load_dataset("morpho-mnist-sample", draws=1, label_fraction=0.2)
    x_test, y_test = s.test[list(range(200))]
    m = build_model("attribute", input_dim=784)

    def switch_success() -> float:
        metrics = m.label_metrics(x_test, y_test)
        return sum(float(metrics[f"switch_{a}"].mean()) for a in MORPHO_ATTRIBUTES) / 3

    before = switch_success()
    est = DirectEstimator(eps=0.1, label_eps=0.01)
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    for epoch in range(4):
        perm = torch.randperm(1500, generator=torch.Generator().manual_seed(epoch))
        for i in range(0, 1500, 50):
            x, y = s.train[perm[i : i + 50]]
            total, _ = m.objective(x, est, y=y)
            opt.zero_grad()
            total.backward()
            opt.step()
    after = switch_success()
    assert before < 0.2 and after > before + 0.3, (before, after)
    assert float(m.label_metrics(x_test, y_test)["acc_slant"].mean()) > 0.9


def test_make_celeba_demo_command(tmp_path, capsys):
    assert cli_main(["make-celeba-demo", str(tmp_path / "demo"), "--images", "12"]) == 0
    s = load_dataset("celeba", root=tmp_path / "demo", binarize="none")
    assert sum(s.sizes) == 12
    assert cli_main(["make-celeba-demo", str(tmp_path / "x"), "--images", "2"]) == 1
    assert "at least 3" in capsys.readouterr().err

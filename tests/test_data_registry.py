"""The dataset registry: built-ins registered, user datasets loadable by name."""

from __future__ import annotations

import pytest
import torch

import structvae.data as data
from structvae.data import (
    DATASETS,
    DataSplits,
    DynamicBinarized,
    ImageDataset,
    available_datasets,
    dataset_image_shape,
    get_dataset,
    load_dataset,
    register_dataset,
    unregister_dataset,
)

BUILTIN = ("mnist-sample", "mnist", "fashion-mnist", "omniglot", "binarized-mnist", "celeba")


@pytest.fixture
def toy():
    """A user dataset returning a mapping of tensors; removed again afterwards."""
    calls = []

    def make_toy(request):
        """Random grey images, label = brighter than average."""
        calls.append(request)
        g = torch.Generator().manual_seed(request.split_seed)
        x = torch.rand(60, 4 * 4, generator=g)
        y = (x.mean(1) > 0.5).long()
        return {"train": (x[:40], y[:40]), "val": (x[40:50], y[40:50]), "test": (x[50:], None)}

    register_dataset("toy-set", make_toy, image_shape=(1, 4, 4), aliases=("toy",))
    yield calls
    unregister_dataset("toy-set")


def test_builtins_are_registered_in_order():
    assert tuple(DATASETS) == BUILTIN and DATASETS == BUILTIN
    assert available_datasets() == sorted(BUILTIN)
    assert ", ".join(DATASETS).startswith("mnist-sample, mnist,") and "celeba" in DATASETS
    assert dataset_image_shape("celeba") == (3, 64, 64)
    assert dataset_image_shape("Fashion_MNIST") == (1, 28, 28)
    assert data._canonical_name("bmnist") == "binarized-mnist"
    assert data._canonical_name("FMNIST") == "fashion-mnist"
    assert get_dataset("celeba").options == ("attributes", "label_fraction")
    assert get_dataset("mnist-sample").description.startswith("The 5,000-image")


def test_a_user_dataset_loads_by_name(toy):
    assert "toy-set" in DATASETS and DATASETS[-1] == "toy-set"
    assert "toy-set" in available_datasets()
    assert dataset_image_shape("TOY") == (1, 4, 4)
    s = load_dataset("toy", binarize="none", split_seed=3, root="/nonexistent")
    assert isinstance(s, DataSplits) and s.name == "toy-set" and s.sizes == (40, 10, 10)
    assert s.image_shape == (1, 4, 4) and s.num_classes == 2
    assert isinstance(s.train, ImageDataset) and s.train.images().shape == (40, 1, 4, 4)
    assert (s.test.y == -1).all()  # no labels given
    request = toy[-1]
    assert (
        request.split_seed == 3
        and request.binarize == "none"
        and str(request.root) == ("/nonexistent")
    )
    fixed = load_dataset("toy-set", binarize="fixed", split_seed=3)
    assert torch.equal(fixed.train.x, (s.train.x > 0.5).float())
    dyn = load_dataset("toy-set", binarize="dynamic", split_seed=3)
    assert isinstance(dyn.train, DynamicBinarized) and torch.equal(dyn.train.probs, s.train.x)


def test_factory_returning_datasplits_with_options():
    seen = {}

    @register_dataset("opt-set", options=("level",), binarize_modes=("none",))
    def opt_set(request):
        seen.update(request.options)
        x = torch.full((6, 784), float(request.options.get("level", 0.5)))
        part = ImageDataset(x)
        return DataSplits(part, part, part, name="opt-set", binarize="none")

    try:
        s = load_dataset("opt-set", binarize="none", level=0.25)
        assert seen == {"level": 0.25} and float(s.train.x[0, 0]) == 0.25
        with pytest.raises(ValueError, match=r"takes binarize in \(none\), got 'fixed'"):
            load_dataset("opt-set")
        with pytest.raises(ValueError, match="level applies to the opt-set dataset only"):
            load_dataset("mnist-sample", level=1)
        with pytest.raises(ValueError, match="colour applies to no registered dataset"):
            load_dataset("opt-set", binarize="none", colour=1)
        with pytest.raises(ValueError, match="celeba dataset only"):
            load_dataset("opt-set", binarize="none", attributes="Smiling")
    finally:
        unregister_dataset("opt-set")
    assert "opt-set" not in DATASETS


def test_registration_errors():
    def bad(request):
        return [1, 2, 3]

    register_dataset("bad-set", bad)
    try:
        with pytest.raises(TypeError, match="returned list"):
            load_dataset("bad-set")
        register_dataset("bad-set", bad)  # the same definition again: replaces, no error

        def other(request):
            return {}

        with pytest.raises(ValueError, match="'bad-set' is already registered"):
            register_dataset("bad-set", other)
        register_dataset("bad-set", other, overwrite=True)
        with pytest.raises(ValueError, match="no train, val, test split"):
            load_dataset("bad-set")
    finally:
        unregister_dataset("bad-set")
    with pytest.raises(ValueError, match="'MNIST' already names dataset 'mnist'"):
        register_dataset("my-mnist", bad, aliases=("MNIST",))
    with pytest.raises(ValueError, match="image_shape must be"):
        register_dataset("flat", bad, image_shape=(784,))
    with pytest.raises(ValueError, match="binarize_modes"):
        register_dataset("flat", bad, binarize_modes=("sometimes",))
    with pytest.raises(ValueError, match="unknown dataset 'flat'; choose one of mnist-sample"):
        load_dataset("flat")

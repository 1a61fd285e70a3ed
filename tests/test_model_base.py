"""The model contract (models.base.VAE), the estimators' declared defaults, and Option."""

import inspect

import pytest
import torch

from structvae.estimators import available_estimators, get_estimator
from structvae.estimators.base import Estimator
from structvae.models import (
    MODELS,
    AttributeVAE,
    CategoricalVAE,
    SemiSupervisedVAE,
    StructuredVAE,
    build_model,
)
from structvae.models.base import VAE, BaseVAE, ModelOutput
from structvae.options import Option, boolean, int_tuple, optional

# the estimators structvae registers itself (tests elsewhere register more; under xdist the
# parameters must not depend on which test modules a worker imported first)
BUILT_IN = sorted(
    n for n in available_estimators() if type(get_estimator(n)).__module__.startswith("structvae.")
)

MODEL_CLASSES = [CategoricalVAE, StructuredVAE, SemiSupervisedVAE, AttributeVAE]


def _small(name):
    if name == "categorical":
        return build_model(name, latent="3x4", input_dim=16, hidden=(8,))
    if name == "structured":
        return build_model(name, latent=4, input_dim=16, hidden=(8,), pairwise="general")
    if name == "semisupervised":
        return build_model(name, latent="1x3+2", input_dim=16, hidden=(8, 6), class_hidden=5)
    return build_model(name, latent=4, attributes="Smiling,Male", channels=4, hidden=8)


def test_every_model_subclasses_the_base():
    assert BaseVAE is VAE
    for cls in MODEL_CLASSES:
        assert issubclass(cls, VAE)
        assert MODELS.build(cls.name, **({"attributes": "Smiling"} if cls is AttributeVAE else {}))
        assert all(isinstance(o, Option) for o in cls.options)


def _keywords(fn) -> set[str]:
    return {
        k
        for k, p in inspect.signature(fn).parameters.items()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and k != "self"
    }


@pytest.mark.parametrize("cls", MODEL_CLASSES, ids=lambda c: c.__name__)
def test_model_options_are_constructor_keywords_with_their_defaults(cls):
    params = inspect.signature(cls.__init__).parameters
    for opt in cls.options:
        assert opt.name in params, (cls.__name__, opt.name)
        default = params[opt.name].default
        assert opt.type(opt.default) == opt.default if opt.default is not None else True
        assert default == opt.default or default is None, (cls.__name__, opt.name)
        if opt.choices is not None and opt.default is not None:
            assert opt.default in opt.choices


@pytest.mark.parametrize("name", BUILT_IN)
def test_estimator_options_are_constructor_keywords(name):
    cls = type(get_estimator(name))
    assert issubclass(cls, Estimator)
    keywords = _keywords(cls.__init__)
    declared = {o.name for o in cls.options}
    assert declared <= keywords, (name, declared - keywords)
    assert declared == keywords, (name, keywords - declared)


def test_estimator_defaults_from_the_contract():
    gs = get_estimator("gumbel-softmax")
    assert not gs.supports_labels and not gs.uses_solver
    assert gs.state_dict() == {}
    gs.load_state_dict({})
    with pytest.raises(ValueError, match="keeps no state"):
        gs.load_state_dict({"x": 1})
    gs.set_step(1234)
    assert gs.iteration == 1234
    assert gs.setup((3, 4)) is gs and gs.setup(3, 4) is gs
    d = get_estimator("direct")
    assert d.supports_labels and d.uses_solver and d.solver is None
    nvil = get_estimator("nvil")
    nvil.setup((3, 4))
    assert nvil.latent_shape == (3, 4)
    assert set(nvil.state_dict()) and all(torch.is_tensor(v) for v in nvil.state_dict().values())
    with pytest.raises(ValueError, match="latent shape"):
        gs.setup(3)


def test_option_converters():
    assert boolean("yes") and not boolean("off") and boolean(True)
    with pytest.raises(ValueError, match="boolean"):
        boolean("maybe")
    assert int_tuple("400,200") == (400, 200) and int_tuple(300) == (300,)
    assert int_tuple([5]) == (5,)
    with pytest.raises(ValueError, match="integers"):
        int_tuple("a,b")
    f = optional(float)
    assert f("none") is None and f(None) is None and f("0.5") == 0.5


@pytest.mark.parametrize("name", ["categorical", "structured", "semisupervised"])
def test_model_call_is_the_one_sample_evaluation(name):
    torch.manual_seed(0)
    m = _small(name)
    x = torch.rand(5, m.input_dim).bernoulli()
    out = m(x, generator=torch.Generator().manual_seed(3))
    assert isinstance(out, ModelOutput)
    n, K = m.latent_shape
    for t in (out.loss, out.recon, out.kl):
        assert t.shape == (5,) and bool(torch.isfinite(t).all())
    assert torch.allclose(out.loss, out.recon + out.kl)
    assert out.z.shape == (5, n) and out.z.dtype == torch.long
    assert int(out.z.min()) >= 0 and int(out.z.max()) < K
    same = m.one_sample_loss(x, generator=torch.Generator().manual_seed(3))
    assert set(same) == {"loss", "recon", "kl"} and torch.equal(same["loss"], out.loss)


def test_grids_default_empty_and_named_for_labelled_models():
    torch.manual_seed(0)
    assert _small("categorical").grids(torch.rand(2, 16)) == {}
    ss = _small("semisupervised")
    ((images, nrow),) = ss.grids(torch.rand(2, 16)).values()
    assert "generation_grid" in ss.grids(torch.rand(2, 16))
    assert images.shape == (3 * nrow, 1, 4, 4) and nrow == 10
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    att = _small("celeba")
    x = torch.rand(3, 3 * 64 * 64)
    images, nrow = att.grids(x)["attribute_grid"]
    assert nrow == 1 + 2 * 2 and images.shape == (3 * nrow, 3, 64, 64)
    old, titles = att.attribute_grid(x)
    assert torch.allclose(old.flatten(0, 1), images) and len(titles) == nrow


def test_label_metrics_default_and_latent_shapes():
    assert _small("categorical").label_metrics(torch.rand(2, 16), torch.zeros(2)) == {}
    assert _small("semisupervised").latent_shape == (1, 3)
    assert _small("structured").latent_shape == (4, 2)

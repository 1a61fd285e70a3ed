"""Semi-supervised VAE: labelled subset, mixed batches, label handling, gradients, training."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from structvae.cli import main
from structvae.data import ImageDataset, load_dataset
from structvae.estimators import DirectEstimator, get_estimator
from structvae.models import SemiSupervisedVAE, build_model, parse_semisup_latent
from structvae.potentials import Potentials
from structvae.semisup_data import MixedBatches, balanced_label_subset
from structvae.train import TrainConfig, check_config, train

# ------------------------------------------------------------------------- labelled subset


@pytest.fixture(scope="module")
def sample_splits():
    return load_dataset("mnist-sample")


def test_balanced_subset_on_train_split_only(sample_splits):
    s = sample_splits
    idx = balanced_label_subset(s.train.y, 100, num_classes=10, seed=3)
    assert idx.shape == (100,) and len(set(idx.tolist())) == 100
    assert int(idx.min()) >= 0 and int(idx.max()) < len(s.train)
    assert torch.bincount(s.train.y[idx], minlength=10).tolist() == [10] * 10
    src = set(s.train.source_index[idx].tolist())
    assert src.isdisjoint(s.val.source_index.tolist())
    assert src.isdisjoint(s.test.source_index.tolist())
    assert torch.equal(idx, balanced_label_subset(s.train.y, 100, 10, seed=3))  # reproducible
    assert not torch.equal(idx, balanced_label_subset(s.train.y, 100, 10, seed=4))


@settings(max_examples=30, deadline=None)
@given(
    counts=st.lists(st.integers(3, 12), min_size=2, max_size=5),
    per=st.integers(1, 3),
    seed=st.integers(0, 1000),
)
def test_balanced_subset_exact_counts(counts, per, seed):
    y = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))]
    idx = balanced_label_subset(y, per * len(counts), seed=seed)
    assert torch.bincount(y[idx], minlength=len(counts)).tolist() == [per] * len(counts)
    assert len(set(idx.tolist())) == len(idx)


def test_balanced_subset_errors():
    y = torch.arange(10).repeat(3)  # 3 images per class
    with pytest.raises(ValueError, match="divisible"):
        balanced_label_subset(y, 15, 10)
    with pytest.raises(ValueError, match="class 0 has only 3"):
        balanced_label_subset(y, 40, 10)
    with pytest.raises(ValueError, match="y = -1"):
        balanced_label_subset(torch.full((20,), -1), 10, 10)


def test_mixed_batches():
    n = 23
    x = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 4)
    y = torch.arange(n) % 3
    ds = ImageDataset(x, y, image_shape=(1, 2, 2))
    labelled = torch.tensor([1, 4, 8, 13, 20])
    mb = MixedBatches(ds, labelled, batch_size=5, seed=0, labelled_batch_size=3)
    batches = list(mb)
    assert len(batches) == len(mb) == 5
    seen_u, seen_l = [], []
    for xb, yb in batches:
        bu = xb.shape[0] - 3
        assert (yb[:bu] == -1).all()
        rows = xb[bu:, 0].long()
        assert torch.equal(yb[bu:], y[rows])  # labelled rows keep their labels
        seen_u += xb[:bu, 0].long().tolist()
        seen_l += rows.tolist()
    assert sorted(seen_u) == list(range(n))  # one pass over the whole split as unlabelled
    assert set(seen_l) <= set(labelled.tolist())
    assert sorted(seen_l[:5]) == labelled.tolist()  # cycles through every labelled image first
    # the same seed gives the same order
    again = list(MixedBatches(ds, labelled, batch_size=5, seed=0, labelled_batch_size=3))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))


# ---------------------------------------------------------------------------------- model


def _tiny(K=3, d=2, D=6, **kw) -> SemiSupervisedVAE:
    torch.manual_seed(0)
    return SemiSupervisedVAE(num_classes=K, cont_dim=d, input_dim=D, hidden=(8, 5), **kw)


def test_latent_spec():
    assert parse_semisup_latent("1x10") == (10, 5)
    assert parse_semisup_latent("1x4+7") == (4, 7)
    with pytest.raises(ValueError, match="one categorical"):
        parse_semisup_latent("2x10")
    m = build_model("semisupervised", latent="1x4+3", input_dim=784)
    assert (m.num_classes, m.cont_dim) == (4, 3)


class _Capture(DirectEstimator):
    # the objective goes through begin/finish (and estimate through finish): capture there
    def finish(self, started, loss_fn):
        self.last = super().finish(started, loss_fn)
        return self.last


def test_labelled_rows_use_the_label():
    model = _tiny()
    x = (torch.rand(6, 6) > 0.5).float()
    y = torch.tensor([-1, 2, -1, 0, 1, -1])
    est = _Capture(eps=0.1, label_eps=0.05)
    total, stats = model.objective(x, est, y=y)
    has = y >= 0
    assert torch.equal(est.last.info["z_eps"][has, 0], y[has])
    assert torch.isfinite(total) and {"loss", "recon", "kl", "ce"} <= set(stats)
    # the loss of a labelled row is the loss at its label whatever the candidate
    _, mu, logvar = model.heads(x)
    fn = model._loss_fn(x, model._reparam(mu, logvar), model.gauss_kl(mu, logvar), y)
    cand = torch.eye(3).expand(6, 3, 3)[:, :, None, :]
    L = fn(cand)
    assert torch.allclose(L[has], L[has][:, :1].expand(-1, 3))
    assert not torch.allclose(L[~has], L[~has][:, :1].expand(-1, 3))
    # class KL: analytic for unlabelled rows, log K (constant) for labelled ones
    kl = model.kl(model.encode(x), y)
    assert torch.allclose(kl[has], torch.full_like(kl[has], math.log(3)))


def _class_grad(model, x, est, y=None, repeats=1):
    """Mean gradient of the objective with respect to the class potentials θ [B, 1, K]."""
    potentials, mu, logvar = model.heads(x)
    theta = potentials.unary.detach().requires_grad_(True)
    z = model._reparam(mu, logvar).detach()
    kl_table = model.gauss_kl(mu, logvar).detach()
    fn = model._loss_fn(x, z, kl_table, y)
    kw = {} if y is None else {"labels": y}
    grad = torch.zeros_like(theta)
    for _ in range(repeats):
        res = est(Potentials(theta), fn, **kw)
        grad += torch.autograd.grad(res.surrogate, theta)[0]
    return theta.detach(), grad / repeats, fn


def test_direct_class_gradient_matches_enumeration():
    """n = 1: E_γ[L(z*)] = Σ_c softmax(θ)_c L(c); direct at small ε follows its gradient."""
    torch.manual_seed(1)
    model = _tiny(K=4, d=2, D=10)
    x = (torch.rand(3, 10) > 0.5).float()
    est = DirectEstimator(eps=0.05, samples=4000)
    theta, grad, fn = _class_grad(model, x, est, repeats=3)
    with torch.no_grad():
        L = fn(torch.eye(4).expand(3, 4, 4)[:, :, None, :])  # [B, K] by enumeration
    t = theta.clone().requires_grad_(True)
    exact = torch.autograd.grad((torch.softmax(t[:, 0], -1) * L).sum(-1).mean(), t)[0]
    cos = torch.nn.functional.cosine_similarity(grad.flatten(), exact.flatten(), dim=0)
    assert cos > 0.9, (cos, grad, exact)


def test_direct_label_gradient_is_scaled_cross_entropy():
    """Labelled rows: E[(φ(z*) − φ(y))] / ε_l = (softmax(θ) − onehot(y)) / ε_l = ∇CE / ε_l."""
    model = _tiny(K=3)
    x = (torch.rand(4, 6) > 0.5).float()
    y = torch.tensor([0, 1, 2, 1])
    est = DirectEstimator(eps=0.1, label_eps=0.05, samples=4000)
    theta, grad, _ = _class_grad(model, x, est, y=y)
    expected = (torch.softmax(theta[:, 0], -1) - torch.eye(3)[y]) / 0.05 / len(y)
    assert torch.allclose(grad[:, 0], expected, atol=0.15 * float(expected.abs().max()))


def test_gumbel_softmax_objective_adds_alpha_cross_entropy():
    model = _tiny(alpha=0.0)
    x = (torch.rand(5, 6) > 0.5).float()
    y = torch.tensor([-1, 1, -1, 2, -1])
    est = get_estimator("gumbel-softmax", temperature=0.5)
    torch.manual_seed(0)
    t0, s0 = model.objective(x, est, y=y)
    model.alpha = 3.0
    torch.manual_seed(0)
    t1, _ = model.objective(x, est, y=y)
    ce = float(s0["ce"]) * 2 / 5  # stats["ce"] is the mean over labelled rows
    assert math.isclose(float((t1 - t0).detach()), 3.0 * ce, rel_tol=1e-4)
    t1.backward()
    assert model.class_head[0].weight.grad.abs().sum() > 0


def test_evaluation_interface():
    model = _tiny(K=3, d=2, D=784)
    x = (torch.rand(4, 784) > 0.5).float()
    out = model.one_sample_loss(x)
    assert all(v.shape == (4,) and torch.isfinite(v).all() for v in out.values())
    assert torch.allclose(out["loss"], out["recon"] + out["kl"])
    nll = model.iwae_nll(x, samples=50)
    assert nll.shape == (4,) and (nll <= out["loss"].mean() + 50).all()
    acc = model.label_metrics(x, model.classify(x))["accuracy"]
    assert torch.equal(acc, torch.ones(4))
    grid = model.generation_grid(5, generator=torch.Generator().manual_seed(0))
    assert grid.shape == (15, 784) and ((grid >= 0) & (grid <= 1)).all()
    assert model.sample(7).shape == (7, 784) and model.reconstruct(x).shape == (4, 784)


# ------------------------------------------------------------------------------- training


@pytest.mark.parametrize("estimator", ["direct", "gumbel-softmax"])
def test_train_semisupervised_on_mnist_sample(tmp_path, estimator):
    cfg = TrainConfig(
        model="semisupervised",
        labels=20,
        estimator=estimator,
        epochs=1,
        max_steps=4,
        eval_samples=2,
        quiet=True,
        out=str(tmp_path / estimator),
    )
    res = train(cfg)
    run = tmp_path / estimator
    assert 0.0 <= res["test_accuracy"] <= 1.0 and math.isfinite(res["test_loss"])
    saved = json.loads((run / "results.json").read_text())
    assert saved["test_accuracy"] == res["test_accuracy"] and saved["labels"] == 20
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0.0 <= row["val_accuracy"] <= 1.0
    assert "val_accuracy" in (run / "metrics.csv").read_text().splitlines()[0]
    for name in ("generation_grid.png", "best_generation_grid.png"):
        assert (run / name).stat().st_size > 0
    idx = json.loads((run / "labelled_indices.json").read_text())
    assert len(idx["train_index"]) == 20


def test_label_options_rejected_where_they_do_not_apply(tmp_path, capsys):
    with pytest.raises(ValueError, match="--labels needs a model that uses labels"):
        check_config(TrainConfig(model="categorical", labels=100))
    with pytest.raises(ValueError, match="--alpha only applies"):
        check_config(TrainConfig(model="categorical", alpha=1.0))
    with pytest.raises(ValueError, match="does not take --label-eps"):
        check_config(TrainConfig(model="semisupervised", estimator="gumbel-softmax", label_eps=0.1))
    with pytest.raises(SystemExit):
        main(["train", "--labels", "100", "--out", str(tmp_path / "x")])
    assert "--labels needs a model" in capsys.readouterr().err
    with pytest.raises(ValueError, match="divisible"):
        train(TrainConfig(model="semisupervised", labels=15, quiet=True, out=str(tmp_path / "y")))

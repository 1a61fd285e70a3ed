"""CelebA: the loader on a generated miniature CelebA folder in the real file formats, the
attribute VAE (one training step per coupling family, KL, IWAE, accuracy, the Fig. 5 grid) and a
short training run through ``structvae.train``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from structvae.celeba import CELEBA_ATTRIBUTES, make_miniature_celeba, parse_attributes
from structvae.data import DatasetCorruptError, DatasetNotFoundError, load_dataset, make_loader
from structvae.estimators import DirectEstimator, get_estimator
from structvae.models import AttributeVAE, build_model
from structvae.potentials import Potentials
from structvae.solvers import all_assignments
from structvae.train import TrainConfig, check_config, train

N_IMAGES = 36
PARTITION = [0, 0, 0, 0, 1, 2] * 6  # 24 train / 6 val / 6 test, interleaved
TINY = dict(channels=4, hidden=16)


def _write_celeba(folder: Path, seed: int = 0) -> np.ndarray:
    """A miniature CelebA in the release's formats; returns the ±1 attribute table [N, 40]."""
    return make_miniature_celeba(folder, N_IMAGES, PARTITION, seed=seed)


@pytest.fixture(scope="module")
def celeba(tmp_path_factory) -> tuple[Path, np.ndarray]:
    root = tmp_path_factory.mktemp("celeba-root")
    return root, _write_celeba(root)


def _load(root, **kw):
    return load_dataset("celeba", root=root, binarize="none", **kw)


# ------------------------------------------------------------------------------- loader


def test_loader_reads_images_labels_and_partition(celeba):
    root, values = celeba
    lines = (root / "list_attr_celeba.txt").read_text().splitlines()  # the release's layout
    assert lines[0] == "36" and lines[1].split() == CELEBA_ATTRIBUTES
    assert lines[2].split()[0] == "000001.jpg" and len(lines[2].split()) == 41
    with Image.open(root / "img_align_celeba" / "000036.jpg") as im:
        assert im.size == (178, 218) and im.format == "JPEG"
    splits = _load(root)
    assert splits.sizes == (24, 6, 6) and splits.image_shape == (3, 64, 64)
    col = [CELEBA_ATTRIBUTES.index(a) for a in ("Eyeglasses", "Smiling", "Male")]
    part = np.array(PARTITION)
    for code, ds in enumerate((splits.train, splits.val, splits.test)):
        idx = ds.source_index.numpy()
        assert (part[idx] == code).all()
        assert torch.equal(ds.y, torch.from_numpy((values[idx][:, col] > 0).astype(np.int64)))
    x, y = splits.train[[0, 5, 7]]
    assert x.shape == (3, 3 * 64 * 64) and x.dtype == torch.float32 and y.shape == (3, 3)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    # the decoding against torchvision's centre crop + resize of the same JPEG
    from torchvision.transforms import functional as TF

    name = splits.train.files[5]
    with Image.open(root / "img_align_celeba" / name) as im:
        ref = TF.to_tensor(TF.resize(TF.center_crop(im.convert("RGB"), 148), [64, 64]))
    assert torch.allclose(x[1].view(3, 64, 64), ref, atol=1.5 / 255)
    xi, yi = splits.train[5]  # a single item
    assert torch.equal(xi, x[1]) and torch.equal(yi, y[1])
    batches = list(make_loader(splits.val, batch_size=4, shuffle=False))
    assert [b[0].shape[0] for b in batches] == [4, 2]


def test_torchvision_layout_and_attribute_choice(tmp_path):
    values = _write_celeba(tmp_path / "celeba", seed=1)
    splits = _load(tmp_path, attributes="young, 5_o_Clock_Shadow")
    assert splits.train.attributes == ("Young", "5_o_Clock_Shadow")
    idx = splits.test.source_index.numpy()
    expected = values[idx][:, [39, 0]] > 0
    assert torch.equal(splits.test.y, torch.from_numpy(expected.astype(np.int64)))
    assert _load(tmp_path, attributes="all").val.y.shape == (6, 40)


@settings(max_examples=15, deadline=None)
@given(fraction=st.floats(0.0, 1.0), seed=st.integers(0, 5))
def test_label_fraction_masks_training_rows_reproducibly(celeba, fraction, seed):
    root, _ = celeba
    full = _load(root)
    part = _load(root, label_fraction=fraction, split_seed=seed)
    labelled = (part.train.y >= 0).all(1)
    assert ((part.train.y >= 0).all(1) | (part.train.y == -1).all(1)).all()  # whole rows
    assert int(labelled.sum()) == round(fraction * 24)
    assert torch.equal(part.train.y[labelled], full.train.y[labelled])
    assert torch.equal(part.val.y, full.val.y) and torch.equal(part.test.y, full.test.y)
    again = _load(root, label_fraction=fraction, split_seed=seed)
    assert torch.equal(again.train.y, part.train.y)


def test_label_fraction_depends_on_the_seed(celeba):
    root, _ = celeba
    a = _load(root, label_fraction=0.5, split_seed=0).train.y[:, 0] >= 0
    b = _load(root, label_fraction=0.5, split_seed=1).train.y[:, 0] >= 0
    assert a.sum() == b.sum() == 12 and not torch.equal(a, b)


def test_missing_files_and_bad_options(tmp_path, celeba, monkeypatch):
    with pytest.raises(DatasetNotFoundError, match="list_attr_celeba.txt"):
        _load(tmp_path)
    import structvae.celeba as mod

    def offline(root):
        raise OSError("no network")

    monkeypatch.setattr(mod, "_download", offline)
    with pytest.raises(DatasetNotFoundError, match="downloading CelebA .* no network"):
        load_dataset("celeba", root=tmp_path, binarize="none", download=True)
    (tmp_path / "list_attr_celeba.txt").write_text((celeba[0] / "list_attr_celeba.txt").read_text())
    with pytest.raises(DatasetNotFoundError, match="list_eval_partition.txt"):
        _load(tmp_path)
    with pytest.raises(ValueError, match="Eyeglasses.*Young"):
        _load(celeba[0], attributes="Eyeglasses,Sunglasses")
    with pytest.raises(ValueError, match="binarize"):
        load_dataset("celeba", root=celeba[0], binarize="fixed")
    with pytest.raises(ValueError, match="label-fraction"):
        _load(celeba[0], label_fraction=1.5)
    with pytest.raises(ValueError, match="celeba .*dataset only"):
        load_dataset("mnist-sample", attributes="Smiling")


def test_download_and_verify(tmp_path, monkeypatch):
    import structvae.celeba as mod

    calls = []

    def fake_download(root):  # what torchvision's downloader leaves: root/celeba/...
        calls.append(root)
        make_miniature_celeba(root / "celeba", N_IMAGES, PARTITION)

    monkeypatch.setattr(mod, "_download", fake_download)
    splits = load_dataset("celeba", root=tmp_path, binarize="none", download=True)
    assert calls == [tmp_path] and splits.sizes == (24, 6, 6)
    _load(tmp_path, download=True)  # present now: no second download
    assert len(calls) == 1
    with pytest.raises(DatasetCorruptError, match="36 images, expected 202599"):
        _load(tmp_path, verify=True)


def test_corrupt_files(tmp_path):
    _write_celeba(tmp_path)
    attr = tmp_path / "list_attr_celeba.txt"
    lines = attr.read_text().splitlines()
    attr.write_text("\n".join(lines[:5] + [lines[5].rsplit(" ", 1)[0]] + lines[6:]))
    with pytest.raises(DatasetCorruptError, match="line 6 has 40 fields"):
        _load(tmp_path)
    attr.write_text("\n".join(lines))
    (tmp_path / "img_align_celeba" / "000001.jpg").unlink()
    splits = _load(tmp_path)
    with pytest.raises(DatasetCorruptError, match="000001.jpg is listed .* but missing"):
        splits.train[0]


def test_parse_attributes():
    assert parse_attributes(None) == ("Eyeglasses", "Smiling", "Male")
    assert len(parse_attributes("all")) == 40
    for bad in ("", "Smiling,smiling", "Glasses"):
        with pytest.raises(ValueError):
            parse_attributes(bad)


# -------------------------------------------------------------------------------- model


def _model(pairwise="none", attributes="Eyeglasses,Smiling,Male", style=6, **kw) -> AttributeVAE:
    torch.manual_seed(0)
    return AttributeVAE(attributes, style, pairwise=pairwise, **TINY, **kw)


def _x(B: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(B, 3 * 64 * 64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("pairwise", "solver"),
    [("none", "independent"), ("supermodular", "graphcut"), ("general", "exact")],
)
def test_one_training_step_per_variant(celeba, pairwise, solver):
    splits = _load(celeba[0], label_fraction=0.5)
    x, y = splits.train[list(range(8))]
    assert (y == -1).any() and (y >= 0).any()
    m = _model(pairwise)
    est = DirectEstimator(eps=0.5)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    total, stats = m.objective(x, est, y=y)
    assert est.solver.name == solver == m.solver.name
    assert math.isfinite(float(total.detach())) and set(stats) >= {
        "loss",
        "recon",
        "kl",
        "eps",
        "labelled",
    }
    assert float(stats["labelled"]) == float((y >= 0).all(1).float().mean())
    opt.zero_grad()
    total.backward()
    for name in ("attribute_head.weight", "style_head.weight", "encoder.0.weight"):
        assert float(m.get_parameter(name).grad.abs().sum()) > 0, name
    opt.step()
    after = m.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before if k.endswith("weight"))
    assert m.attribute_head.out_features == 3 + {"none": 0}.get(pairwise, 3)


def test_labelled_rows_pull_the_potentials_towards_the_label():
    """On a fully labelled batch the encoder term is (h(z*) - h(label)) / ε: its gradient with
    respect to θ_a is (z*_a - y_a) / (ε·B), checked against the sampled z*."""
    m = _model("none")
    x = _x(4)
    y = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]])
    potentials = m.encode(x)
    theta = potentials.unary[..., 1].detach().requires_grad_()
    est = DirectEstimator(eps=0.5)
    res = est(Potentials.binary(theta), lambda z: z.sum((-1, -2)) * 0.0, labels=y)
    res.surrogate.backward()
    expected = (res.z - y).float() / (0.5 * 4)
    assert torch.allclose(theta.grad, expected)


def test_style_kl_and_attribute_kl():
    m = _model("general")
    enc = m.encode_all(_x(3))
    p, (mu, logvar) = enc.potentials, enc.code
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    ref = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(m.style_kl(mu, logvar), ref, atol=1e-5)
    z = all_assignments(3, 2)[None].expand(3, -1, -1)
    logq = torch.log_softmax(p.score(z), 1)
    brute = (logq.exp() * logq).sum(1) + 3 * math.log(2)
    assert torch.allclose(m.kl(p), brute, atol=1e-5)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
@pytest.mark.parametrize("pairwise", ["none", "general"])
def test_iwae_converges_to_the_exact_marginal_without_style(pairwise):
    """style_dim = 0: p(x) = Σ_z p(z) p(x|z) over the 2^A settings, computed exactly."""
    m = _model(pairwise, style=0)
    with torch.no_grad():  # a decoder whose loss varies by nats across z, a peaked encoder
        for name, p in m.decoder.named_parameters():
            if name.endswith("weight"):
                p.mul_(2.0)
        m.attribute_head.weight.mul_(30.0)
    x = _x(1, seed=3)
    z = all_assignments(3, 2)
    with torch.no_grad():
        logits = m.decode(m.one_hot(z)[None], torch.zeros(1, 8, 0))
        recon = F.binary_cross_entropy_with_logits(
            logits, x[:, None].expand_as(logits), reduction="none"
        ).sum(-1)  # [1, 8]
    exact = -(torch.logsumexp(-recon, 1) - 3 * math.log(2))
    assert float(exact - recon.min()) > 0.5  # no single z explains x: the sum matters
    for gibbs in (True, False):  # the Gibbs proposal, and the factorised one for large A
        m.exact_kl_max_vars = 20 if gibbs else 0
        if not m.iwae_available:  # couplings above the enumeration limit: refused, not faked
            with pytest.raises(ValueError, match="exact_kl_max_vars"):
                m.iwae_nll(x, samples=10)
            continue
        est = m.iwae_nll(x, samples=1000, generator=torch.Generator().manual_seed(0))
        assert torch.allclose(est, exact, atol=0.15), (gibbs, est, exact)


def test_label_metrics_by_hand():
    m = _model("supermodular")
    x = _x(3)
    pred = m.predict(x)
    assert torch.equal(pred, m.solver(m.encode(x)))
    y = pred.clone()
    y[1, 0] = 1 - y[1, 0]  # row 1: Eyeglasses wrong, Male unlabelled -> 1 of 2 right
    y[1, 2] = -1
    y[2] = -1  # row 2: no labels
    out = m.label_metrics(x, y)
    assert set(out) == {"accuracy", "acc_Eyeglasses", "acc_Smiling", "acc_Male"}
    assert out["accuracy"][:2].tolist() == [1.0, 0.5] and math.isnan(out["accuracy"][2])
    assert out["acc_Eyeglasses"][:2].tolist() == [1.0, 0.0]
    assert out["acc_Male"][0] == 1.0 and math.isnan(out["acc_Male"][1])
    assert all(v.shape == (3,) for v in out.values())


def test_attribute_grid_switches_one_attribute_per_column():
    m = _model("general")
    x = _x(2)
    images, titles = m.attribute_grid(x)
    assert images.shape == (2, 8, 3, 64, 64) and len(titles) == 8
    assert titles[:4] == ["input", "reconstruction", "Eyeglasses off", "Eyeglasses on"]
    assert torch.allclose(images[:, 0].reshape(2, -1), x)
    assert torch.allclose(images[:, 1].reshape(2, -1), m.reconstruct(x))
    enc = m.encode_all(x)
    base, mu = m.solver(enc.potentials), enc.code[0]
    for a in range(3):
        for v in (0, 1):
            z = base.clone()
            z[:, a] = v
            want = torch.sigmoid(m.decode(m._one_hot(z), mu))
            assert torch.allclose(images[:, 2 + 2 * a + v].reshape(2, -1), want, atol=1e-6)
            assert torch.allclose(m.switch(x, m.attributes[a], bool(v)).reshape(2, -1), want)
    combos, titles = m.attribute_grid(num=3, combinations=True, generator=torch.Generator())
    assert combos.shape == (3, 8, 3, 64, 64) and titles[-1] == "Eyeglasses+ Smiling+ Male+"
    with pytest.raises(ValueError, match="2\\^A"):
        _model(attributes="all").attribute_grid(num=1, combinations=True)


def test_model_errors():
    with pytest.raises(ValueError, match="style code"):
        build_model("celeba", latent="1x10")
    with pytest.raises(ValueError, match="64x64 colour"):
        build_model("celeba", latent=8, input_dim=100)
    with pytest.raises(ValueError, match="graphcut"):
        _model("general", solver="graphcut")
    m = _model("none")
    with pytest.raises(ValueError, match="Eyeglasses, Smiling, Male"):
        m.switch(_x(1), "Sunglasses", True)
    # an estimator without label support learns labelled rows by the fallback cross-entropy
    est = get_estimator("gumbel-softmax")
    total, stats = m.objective(_x(2), est, y=torch.ones(2, 3, dtype=torch.long))
    assert math.isfinite(float(total.detach())) and float(stats["ce"]) > 0
    total, _ = m.objective(_x(2), get_estimator("gumbel-softmax"), y=-torch.ones(2, 3).long())
    assert math.isfinite(float(total.detach()))


def test_many_attributes_with_general_couplings_use_ilp():
    m = _model("general", attributes="all", style=2)
    assert m.num_edges == 40 * 39 // 2 and m.solver.name == "ilp"
    assert m.kl_kind == "factorised-approx" and not m.iwae_available


# ----------------------------------------------------------------------------- training


def _cfg(tmp_path, root, **kw) -> TrainConfig:
    base = dict(
        dataset="celeba",
        data_root=str(root),
        binarize="none",
        model="celeba",
        latent="4",
        pairwise="supermodular",
        label_fraction=0.5,
        batch_size=4,
        epochs=1,
        max_steps=2,
        eval_samples=2,
        quiet=True,
        out=str(tmp_path / "run"),
    )
    base.update(kw)
    return TrainConfig(**base)


def test_train_run_writes_reconstructions_and_the_attribute_grid(tmp_path, celeba):
    res = train(_cfg(tmp_path, celeba[0]))
    run = Path(res["run_dir"])
    for name in (
        "reconstructions.png",
        "samples.png",
        "attribute_grid.png",
        "best_attribute_grid.png",
        "results.json",
    ):
        assert (run / name).is_file(), name
    with Image.open(run / "reconstructions.png") as im:
        assert im.mode == "RGB" and im.size == (6 * 66 + 2, 2 * 66 + 2)  # 6 val images
    assert res["iterations"] == 2 and math.isfinite(res["test_iwae_nll"])


def test_train_config_checks(tmp_path, celeba):
    with pytest.raises(ValueError, match="--binarize none"):
        check_config(_cfg(tmp_path, celeba[0], binarize="fixed"))
    with pytest.raises(ValueError, match="only apply to the attribute datasets"):
        check_config(TrainConfig(label_fraction=0.5))
    with pytest.raises(ValueError, match="unknown CelebA attribute"):
        check_config(_cfg(tmp_path, celeba[0], attributes="Smile"))
    with pytest.raises(ValueError, match="learns attribute labels"):
        check_config(TrainConfig(model="celeba", latent="4"))  # mnist-sample has none
    model, est = check_config(_cfg(tmp_path, celeba[0], pairwise="general", attributes="all"))
    assert model.num_latents == 40 and est.solver.name == "ilp"


def test_cli_flags_reach_the_config():
    from structvae.cli import build_parser

    args = build_parser().parse_args(
        ["train", "--attributes", "Smiling,Male", "--label-fraction", "0.25", "--dataset", "celeba"]
    )
    assert (args.attributes, args.label_fraction, args.dataset) == ("Smiling,Male", 0.25, "celeba")
    assert TrainConfig().attributes is None and TrainConfig().label_fraction is None


def test_block_code_routes_the_style_through_the_bits():
    assert _model("none", style=2).code == "concat"
    assert _model("none", style=2).decoder[0].in_features == 6 + 2
    m = _model("none", style=2, code="block")
    assert m.decoder[0].in_features == 6 + 6 * 2
    with pytest.raises(ValueError, match="code must be one of"):
        _model(code="sum")
    z = torch.tensor([[1, 0, 1], [0, 1, 1]])
    s = torch.tensor([[0.5, -2.0], [3.0, 1.0]])
    rows = []
    for b in range(2):  # the code by hand: one-hot bits, then s in the slot (a, z_a)
        onehot = [float(z[b, a] == k) for a in range(3) for k in range(2)]
        block = [
            float(z[b, a] == k) * float(s[b, j])
            for a in range(3)
            for k in range(2)
            for j in range(2)
        ]
        rows.append(onehot + block)
    want = m.decoder(torch.tensor(rows)).reshape(2, -1)
    assert torch.allclose(m.decode(m._one_hot(z), s), want, atol=1e-6)

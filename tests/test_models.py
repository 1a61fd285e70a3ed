"""CategoricalVAE and the mlp builder: shapes, the loss, the KL, the IWAE estimate."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from structvae import Potentials
from structvae.estimators import get_estimator
from structvae.models import CategoricalVAE, build_model, mlp, parse_latent


def _x(B: int, seed: int = 0, D: int = 784) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, D, generator=g) > 0.5).float()


def _model(N: int = 2, K: int = 3, seed: int = 0, **kw) -> CategoricalVAE:
    torch.manual_seed(seed)
    return CategoricalVAE(N, K, **kw)


def test_mlp_layers():
    net = mlp([5, 7, 3])
    assert [type(m) for m in net] == [nn.Linear, nn.ReLU, nn.Linear]
    assert net(torch.zeros(2, 5)).shape == (2, 3)
    net = mlp([4, 6, 6, 2], activation=nn.Tanh, final_activation=nn.Sigmoid)
    assert [type(m) for m in net] == [nn.Linear, nn.Tanh, nn.Linear, nn.Tanh, nn.Linear, nn.Sigmoid]
    with pytest.raises(ValueError, match="at least"):
        mlp([3])


def test_parse_latent_and_build_model():
    assert parse_latent("1x10") == (1, 10)
    assert parse_latent(" 20X2 ") == (20, 2)
    assert parse_latent((3, 4)) == (3, 4)
    for bad in ("10", "x10", "1x1", "0x5", "2x3x4", "axb"):
        with pytest.raises(ValueError, match="latent"):
            parse_latent(bad)
    m = build_model("categorical", latent="3x4", input_dim=20, hidden=(8, 6))
    assert m.latent_shape == (3, 4)
    assert [layer.out_features for layer in m.encoder if isinstance(layer, nn.Linear)] == [8, 6, 12]
    assert [layer.out_features for layer in m.decoder if isinstance(layer, nn.Linear)] == [6, 8, 20]
    with pytest.raises(ValueError, match="unknown model"):
        build_model("nope")


def test_default_architecture_is_the_papers():
    m = CategoricalVAE(1, 10)
    enc = [
        (layer.in_features, layer.out_features)
        for layer in m.encoder
        if isinstance(layer, nn.Linear)
    ]
    dec = [
        (layer.in_features, layer.out_features)
        for layer in m.decoder
        if isinstance(layer, nn.Linear)
    ]
    assert enc == [(784, 300), (300, 10)] and dec == [(10, 300), (300, 784)]


def test_shapes():
    m = _model(N=2, K=3)
    x = _x(4)
    p = m.encode(x)
    assert isinstance(p, Potentials)
    assert p.unary.shape == (4, 2, 3) and not p.has_edges
    z = F.one_hot(torch.randint(3, (4, 5, 2)), 3).float()
    assert m.decode(z).shape == (4, 5, 784)
    assert m.decode(z[0, 0]).shape == (784,)
    assert m.loss_fn(x)(z).shape == (4, 5)
    assert m.kl(p).shape == (4,)
    s = m.sample(6)
    r = m.reconstruct(x)
    assert s.shape == (6, 784) and r.shape == (4, 784)
    assert float(s.min()) >= 0 and float(s.max()) <= 1
    out = m.one_sample_loss(x, generator=torch.Generator().manual_seed(1))
    assert set(out) == {"loss", "recon", "kl"} and out["loss"].shape == (4,)
    assert torch.allclose(out["loss"], out["recon"] + out["kl"])


def test_loss_fn_is_pixel_summed_bce():
    m = _model(N=2, K=3).double()
    x = _x(3, seed=1).double()
    z = F.one_hot(torch.tensor([[[0, 1], [2, 2]]] * 3), 3).double()  # [3, 2 candidates, 2, 3]
    got = m.loss_fn(x)(z)
    for b in range(3):
        for c in range(2):
            logits = m.decoder(z[b, c].reshape(-1))
            p = torch.sigmoid(logits)
            manual = -(x[b] * torch.log(p) + (1 - x[b]) * torch.log1p(-p)).sum()
            assert torch.allclose(got[b, c], manual, rtol=1e-9, atol=1e-8)


def test_loss_fn_batches_candidates_in_one_decoder_call():
    m = _model(N=1, K=4)
    calls = []
    m.decoder.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape))
    m.loss_fn(_x(5))(F.one_hot(torch.randint(4, (5, 7, 1)), 4).float())
    assert calls == [torch.Size([35, 4])]


def test_kl_matches_enumeration():
    N, K = 2, 3
    m = _model(N, K).double()
    x = _x(4, seed=2).double()
    p = m.encode(x)
    logq = torch.log_softmax(p.unary, -1)  # [B, N, K]
    brute = torch.zeros(4, dtype=torch.float64)
    for z in itertools.product(range(K), repeat=N):
        lq = sum(logq[:, i, z[i]] for i in range(N))
        log_p = -N * math.log(K)  # the uniform prior
        brute += lq.exp() * (lq - log_p)
    assert torch.allclose(m.kl(p), brute, atol=1e-10)
    # uniform q has KL 0, one-hot q has KL N log K
    u = Potentials(torch.zeros(1, N, K, dtype=torch.float64))
    assert float(m.kl(u)) == pytest.approx(0.0, abs=1e-12)
    peaked = Potentials(torch.tensor([[[80.0, 0.0, 0.0]] * N], dtype=torch.float64))
    assert float(m.kl(peaked)) == pytest.approx(N * math.log(K), abs=1e-9)


def test_objective_gradients_and_stats():
    m = _model(N=2, K=3)
    x = _x(6, seed=3)
    for name in ("direct", "gumbel-softmax", "exact"):
        m.zero_grad()
        total, stats = m.objective(x, get_estimator(name))
        assert total.dim() == 0
        total.backward()
        assert all(p.grad is not None for p in m.parameters()), name
        assert {"loss", "recon", "kl"} <= set(stats)
        assert float(stats["loss"]) == pytest.approx(float(stats["recon"] + stats["kl"]))
    # the KL is trained: its gradient alone reaches the encoder
    m.zero_grad()
    m.kl(m.encode(x)).mean().backward()
    assert m.encoder[0].weight.grad.abs().sum() > 0


def _exact_nll(m: CategoricalVAE, x: torch.Tensor) -> torch.Tensor:
    K = m.num_categories
    z = torch.eye(K, dtype=x.dtype)[None, :, None, :].expand(x.shape[0], K, 1, K)
    log_px_z = -m.loss_fn(x)(z)  # [B, K]
    return -(torch.logsumexp(log_px_z, 1) - math.log(K))


def test_iwae_with_the_true_posterior_is_exact():
    """With q = p(z|x) every importance weight equals p(x): exact for any sample count."""
    m = _model(N=1, K=5).double()
    x = _x(3, seed=4).double()
    K = 5
    z = torch.eye(K, dtype=x.dtype)[None, :, None, :].expand(3, K, 1, K)
    log_post = torch.log_softmax(-m.loss_fn(x)(z), dim=1)  # [B, K]
    m.encode = lambda x_: Potentials(log_post[:, None, :])
    got = m.iwae_nll(x, samples=3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(got, _exact_nll(m, x), atol=1e-8)


def test_iwae_approaches_exact_nll():
    m = _model(N=1, K=5, seed=1).double()
    x = _x(3, seed=5).double()
    exact = _exact_nll(m, x)
    g = torch.Generator().manual_seed(0)
    many = m.iwae_nll(x, samples=4000, generator=g, chunk_rows=3000)  # several chunks
    assert torch.allclose(many, exact, atol=0.05)
    # on average over draws, the one-sample estimate (= BCE + log q - log p) is not below exact
    one = torch.stack([m.iwae_nll(x, samples=1, generator=g) for _ in range(200)]).mean(0)
    assert bool((one >= exact - 0.05).all())


def test_iwae_is_deterministic_given_a_generator():
    m = _model(N=2, K=3)
    x = _x(4)
    a = m.iwae_nll(x, samples=7, generator=torch.Generator().manual_seed(3))
    b = m.iwae_nll(x, samples=7, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="samples"):
        m.iwae_nll(x, samples=0)


def test_reconstruct_uses_the_arg_max():
    m = _model(N=2, K=3)
    x = _x(2)
    z = m.encode(x).unary.argmax(-1)
    expected = torch.sigmoid(m.decode(F.one_hot(z, 3).float()))
    assert torch.allclose(m.reconstruct(x), expected)


@pytest.mark.cuda
def test_cuda_forward_and_estimators():
    m = _model(N=2, K=3).cuda()
    x = _x(4).cuda()
    for name in ("direct", "gumbel-softmax", "exact"):
        total, _ = m.objective(x, get_estimator(name))
        total.backward()
    g = torch.Generator(device="cuda").manual_seed(0)
    assert m.iwae_nll(x, samples=10, generator=g).device.type == "cuda"
    assert m.sample(3, generator=g).device.type == "cuda"
    assert m.one_sample_loss(x, generator=g)["loss"].shape == (4,)

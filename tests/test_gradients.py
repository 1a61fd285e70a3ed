"""The gradient-quality lab against brute force, its outputs, its CLI, and train's --max-time."""

from __future__ import annotations

import csv
import itertools
import json
import math
import types

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import structvae.train as train_mod
from structvae.cli import main
from structvae.estimators import Estimator, EstimatorResult, register_estimator
from structvae.lab import (
    LabConfig,
    encoder_gradients,
    exact_gradient,
    expand_specs,
    gradient_metrics,
    load_run_model,
    measure_point,
    run_lab,
    sample_gradients,
    trajectory_models,
)
from structvae.models import CategoricalVAE
from structvae.train import TrainConfig, train


def tiny_model(n: int, K: int, D: int = 6, seed: int = 0) -> CategoricalVAE:
    torch.manual_seed(seed)
    return CategoricalVAE(n, K, hidden=(5,), input_dim=D).double()


def tiny_batch(B: int = 3, D: int = 6, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, D, generator=g) > 0.5).double()


def brute_force_gradient(model, x) -> torch.Tensor:
    """∇_θ (1/B) Σ_b Σ_z q_b(z) L_b(z) by a Python loop over every z and autograd."""
    theta = model.encode(x).unary.detach().requires_grad_(True)
    B, n, K = theta.shape
    logq = torch.log_softmax(theta, -1)
    total = torch.zeros(B, dtype=theta.dtype)
    for z in itertools.product(range(K), repeat=n):
        zt = torch.tensor(z)
        onehot = torch.nn.functional.one_hot(zt, K).to(theta.dtype)
        with torch.no_grad():
            L = model.loss_fn(x)(onehot[None, None].expand(B, 1, n, K))[:, 0]
        total = total + logq[:, torch.arange(n), zt].sum(1).exp() * L
    (g,) = torch.autograd.grad(total.mean(), theta)
    return g


@pytest.mark.parametrize("n,K", [(1, 4), (2, 3), (3, 2)])
def test_exact_gradient_matches_brute_force(n, K):
    model, x = tiny_model(n, K), tiny_batch()
    g, expected = exact_gradient(model.encode(x).unary, model.loss_fn(x))
    torch.testing.assert_close(g, brute_force_gradient(model, x), rtol=1e-9, atol=1e-12)
    assert expected.shape == (3,) and bool((expected > 0).all())


def test_exact_gradient_refuses_a_large_space():
    model, x = tiny_model(5, 3), tiny_batch()
    with pytest.raises(ValueError, match="max_assignments"):
        exact_gradient(model.encode(x).unary, model.loss_fn(x), max_assignments=100)


@settings(max_examples=25, deadline=None)
@given(
    R=st.integers(2, 6),
    D=st.integers(1, 5),
    seed=st.integers(0, 10**6),
)
def test_metrics_decompose_the_mean_squared_error(R, D, seed):
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(D, generator=gen, dtype=torch.float64) + 0.1
    samples = torch.randn(R, D, generator=gen, dtype=torch.float64)
    m = gradient_metrics(g, samples)
    # E‖ĝ − g‖² = ‖ĝ̄ − g‖² + (R − 1)/R · tr Cov (sample moments)
    assert m["rmse"] ** 2 == pytest.approx(m["bias_norm"] ** 2 + m["variance"] * (R - 1) / R)
    assert -1 - 1e-9 <= m["cosine"] <= 1 + 1e-9
    # Cauchy–Schwarz: |EI| <= ‖g‖
    assert abs(m["expected_improvement"]) <= m["grad_norm"] * (1 + 1e-9)
    assert m["bias_debiased"] <= m["bias_norm"] + 1e-12


def test_metrics_of_perfect_and_reversed_estimates():
    g = torch.tensor([3.0, -4.0])
    perfect = gradient_metrics(g, g.repeat(5, 1))
    assert perfect["bias_norm"] == 0 and perfect["variance"] == 0
    assert perfect["cosine"] == pytest.approx(1) and perfect["expected_improvement"] == -5
    assert perfect["ei_rel"] == pytest.approx(-1)
    reverse = gradient_metrics(g, -2 * g.repeat(5, 1))
    assert reverse["cosine"] == pytest.approx(-1) and reverse["expected_improvement"] == 5


def test_exact_estimator_has_no_bias_and_no_variance():
    model, x = tiny_model(2, 3), tiny_batch(4)
    rows = measure_point(model, x, ["exact"], repeats=5, params=True, timing_repeats=1)
    assert [r["wrt"] for r in rows] == ["potentials", "encoder"]
    for r in rows:
        assert r["bias_rel"] < 1e-10 and r["variance_rel"] < 1e-20, r
        assert r["cosine"] == pytest.approx(1) and r["ei_rel"] == pytest.approx(-1)
        assert r["time_s"] > 0 and r["note"] == ""


def test_direct_at_small_eps_points_along_the_exact_gradient():
    # n = 1: z_eps solves the exact loss-perturbed problem; many Gumbel samples per row
    model, x = tiny_model(1, 4), tiny_batch(2)
    torch.nn.init.normal_(model.decoder[-1].weight, std=3.0)  # loss gaps of a few nats
    specs = ["direct:eps=0.05,samples=3000", "direct:eps=30,samples=3000"]
    small, large = measure_point(model, x, specs, repeats=4, timing_repeats=1)
    assert small["cosine"] > 0.95 and small["bias_rel"] < 0.25, small
    assert small["bias_debiased"] < large["bias_debiased"]


def test_repeat_and_loop_modes_separate_rows():
    # a deterministic estimator: every estimate of either mode is the exact gradient
    model, x = tiny_model(2, 2), tiny_batch(3)
    theta = model.encode(x).unary.detach()
    g, _ = exact_gradient(theta, model.loss_fn(x))
    from structvae.estimators import get_estimator

    for mode in ("repeat", "loop"):
        s = sample_gradients(
            get_estimator("exact"),
            theta,
            lambda c: model.loss_fn(x.repeat(c, 1)),
            5,
            mode=mode,
            max_rows=7,
        )
        assert s.shape == (5, 3, 2, 2)
        torch.testing.assert_close(s, g.expand_as(s))


def test_encoder_gradients_are_vector_jacobian_products():
    model, x = tiny_model(2, 3), tiny_batch()
    theta = model.encode(x).unary
    G = torch.randn(4, *theta.shape, dtype=theta.dtype)
    params = list(model.encoder.parameters())
    batched = encoder_gradients(theta, params, G)
    for r in range(4):
        ref = torch.autograd.grad((theta * G[r]).sum(), params, retain_graph=True)
        torch.testing.assert_close(batched[r], torch.cat([p.reshape(-1) for p in ref]))


@register_estimator("lab-test-learned")
class _LearnedScore(Estimator, nn.Module):
    """A test estimator with a learned part, an nn.Module (like NVIL's baseline)."""

    def __init__(self) -> None:
        nn.Module.__init__(self)
        Estimator.__init__(self)
        self.scale = nn.Linear(1, 1)

    def estimate(self, potentials, loss_fn, generator=None):
        theta = potentials.unary
        z = theta.argmax(-1)
        loss = loss_fn(torch.nn.functional.one_hot(z, theta.shape[-1]).to(theta.dtype)[:, None])
        surrogate = (theta.logsumexp(-1).sum(-1) * loss[:, 0].detach()).mean()
        return EstimatorResult(z=z, loss=loss[:, 0].detach(), surrogate=surrogate)


def test_specs_sweeps_and_notes():
    specs = expand_specs(["direct", "gumbel-softmax", "exact"], eps=[0.1, 1], temperature=[2])
    assert specs == ["direct:eps=0.1", "direct:eps=1", "gumbel-softmax:temperature=2", "exact"]
    assert expand_specs(["direct:eps=3"], eps=[0.1]) == ["direct:eps=3"]
    with pytest.raises(ValueError, match="unknown estimator 'nope'.*available"):
        expand_specs(["nope"])
    with pytest.raises(ValueError, match="key=value"):
        expand_specs(["direct:eps"])
    model, x = tiny_model(1, 5), tiny_batch(2)
    rows = measure_point(
        model, x, ["exact:max_assignments=3", "lab-test-learned"], repeats=2, timing_repeats=1
    )
    assert rows[0]["note"].startswith("skipped:") and rows[0]["cosine"] is None
    assert rows[1]["note"] == "learned parts untrained (initialisation)"
    assert math.isfinite(rows[1]["cosine"])


def test_lab_writes_table_and_plots(tmp_path):
    out = tmp_path / "lab"
    rows = run_lab(
        LabConfig(
            latents=["1x3", "2x2"],
            estimators=["direct", "gumbel-softmax", "exact"],
            eps=[0.5, 2],
            temperature=[0.5, 1],
            batch=4,
            repeats=3,
            timing_repeats=1,
            out=str(out),
            train_dir=str(tmp_path / "runs"),
            quiet=True,
        ),
        data=tiny_batch(4, D=784),
    )
    assert len(rows) == 2 * 5
    for name in ("gradients.csv", "gradients.md", "config.json"):
        assert (out / name).stat().st_size > 0
    for name in ("bias_variance.png", "sweeps.png", "latent_sweep.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    table = list(csv.DictReader(open(out / "gradients.csv")))
    assert {r["spec"] for r in table} >= {"direct:eps=0.5", "gumbel-softmax:temperature=1"}
    assert "### latent 2x2, epoch 0" in (out / "gradients.md").read_text()
    assert json.loads((out / "config.json").read_text())["expanded_specs"][0] == "direct:eps=0.5"


def test_trajectory_trains_once_and_reuses_snapshots(tmp_path):
    cfg = TrainConfig(
        latent="1x3", out=str(tmp_path / "run"), max_steps=2, eval_samples=1, quiet=True
    )
    points = [(e, m) for e, m, _ in trajectory_models(cfg, [1, 0])]
    assert [e for e, _ in points] == [0, 1]
    snap = tmp_path / "run" / "epoch1.pt"
    stamp = snap.stat().st_mtime_ns
    again = dict((e, m) for e, m, _ in trajectory_models(cfg, [1]))
    assert snap.stat().st_mtime_ns == stamp  # not retrained
    model, config, ckpt = load_run_model(snap)
    # max_steps=2 cuts epoch 1 after two steps: the snapshot is that mid-epoch checkpoint
    assert config.latent == "1x3" and ckpt["iteration"] == 2 and ckpt["position"] == 2
    for k, v in model.state_dict().items():
        assert torch.equal(v, again[1].state_dict()[k])
        assert torch.equal(v, points[1][1].state_dict()[k])
    assert not torch.equal(points[0][1].encoder[0].weight, points[1][1].encoder[0].weight)


def test_cli_gradients_runs_on_mnist_sample(tmp_path, capsys):
    out = tmp_path / "g"
    argv = ["gradients", "--latent", "1x4", "--estimators", "direct", "exact", "--eps", "1"]
    argv += ["--batch", "4", "--repeats", "3", "--timing-repeats", "1", "--params", "--quiet"]
    assert main([*argv, "--out", str(out), "--train-dir", str(tmp_path / "r")]) == 0
    printed = capsys.readouterr().out
    assert "| direct:eps=1 | encoder |" in printed and "| exact | potentials |" in printed
    assert (out / "gradients.csv").is_file() and (out / "bias_variance.png").is_file()
    (out / "gradients.md").unlink()
    assert main(["gradients", "--replot", str(out)]) == 0  # tables and plots from the CSV
    assert "| direct:eps=1 | encoder |" in (out / "gradients.md").read_text()


def test_cli_gradients_rejects_a_bad_estimator_before_work(tmp_path, capsys):
    argv = ["gradients", "--estimators", "direct", "bogus", "--out", str(tmp_path / "g")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown estimator 'bogus'" in err and "gumbel-softmax" in err
    assert not (tmp_path / "g").exists()


def test_train_stops_at_the_time_budget(tmp_path, monkeypatch):
    clock = iter(range(10**6))  # every perf_counter() call advances one "second"
    monkeypatch.setattr(train_mod, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    cfg = TrainConfig(
        latent="1x3", out=str(tmp_path / "t"), epochs=5, max_time_s=4.5, eval_samples=1, quiet=True
    )
    res = train(cfg)
    # 40 steps per epoch on mnist-sample; checks at t = 1, 2, ... stop within the first epoch
    assert res["epochs"] == 1 and 1 <= res["iterations"] < 40
    assert res["time_s"] >= 4.5 and math.isfinite(res["test_loss"])
    with pytest.raises(ValueError, match="--max-time"):
        train_mod.check_config(TrainConfig(max_time_s=0))


def test_compare_estimators_script_writes_table_and_plot(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / "compare_estimators.py"
    spec = importlib.util.spec_from_file_location("compare_estimators", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    argv = ["--dataset", "mnist-sample", "--latents", "11x2", "--budget", "0.5"]
    argv += ["--estimators", "direct:eps=0.5", "exact", "--eval-samples", "1", "--quiet"]
    md = mod.main([*argv, "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    assert "| 11x2 | direct:eps=0.5 | 0.5 |" in md
    assert "| 11x2 | exact | – |" in md and "skipped: estimator 'exact'" in md
    assert (tmp_path / "out" / "wallclock.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit, match="unknown estimator"):
        mod.main(["--estimators", "bogus", "--out", str(tmp_path / "x")])

"""Faults during training: signals, NaN/inf, failing solvers, bad checkpoints, bad options."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import structvae.train as train_mod
from structvae.cli import main
from structvae.errors import NonFiniteError, SolverError
from structvae.guard import nonfinite_gradient, nonfinite_stats
from structvae.potentials import Potentials
from structvae.solvers import Solver, register
from structvae.train import CheckpointError, TrainConfig, load_checkpoint, train

ROOT = Path(__file__).resolve().parents[1]
COMMON = dict(latent="1x3", batch_size=500, eps=0.5, quiet=True, eval_samples=2)


def _rows(run) -> list[dict]:
    rows = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("time_s")
    return rows


def _wrap_step(monkeypatch, before):
    """Run ``before(step, model, x) -> x`` ahead of every training step."""
    original = train_mod.train_step

    def step(model, estimator, optimizer, named, x, *, step, **kw):
        x = before(step, model, x)
        return original(model, estimator, optimizer, named, x, step=step, **kw)

    monkeypatch.setattr(train_mod, "train_step", step)


def test_sigterm_keeps_the_checkpoint_and_resume_reproduces_the_run(tmp_path, monkeypatch):
    full = train(TrainConfig(out=str(tmp_path / "full"), epochs=3, **COMMON))

    def kill_in_epoch_two(step, model, x):
        if step == 11:  # 8 steps per epoch: the middle of epoch 2
            os.kill(os.getpid(), signal.SIGTERM)
        return x

    _wrap_step(monkeypatch, kill_in_epoch_two)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(out=str(run), epochs=3, **COMMON))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is restored
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    monkeypatch.undo()
    resumed = train(TrainConfig(out=str(run), epochs=3, resume=True, **COMMON))
    assert _rows(run) == _rows(tmp_path / "full")
    assert resumed["test_loss"] == full["test_loss"]


@pytest.mark.slow  # three `python -m structvae` processes (~30 s on two busy cores)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_process_resumes_to_the_same_metrics(tmp_path, sig):
    args = ["--latent", "1x3", "--batch-size", "100", "--eps", "0.5", "--eval-samples", "2"]
    args += ["--quiet"]
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "structvae", "train", *args, "--out", str(run)]
    # far more epochs than the run can finish before the signal: it is always interrupted;
    # --epochs may change on resume, so the resumed run stops after 3 like the reference
    proc = subprocess.Popen([*cmd, "--epochs", "1000"], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (run / "metrics.jsonl").is_file() or not (run / "metrics.jsonl").read_text():
        assert proc.poll() is None and time.time() < deadline, "the run ended before epoch 1"
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, "the run was not interrupted"
    assert "Traceback" not in err
    if sig == signal.SIGTERM:
        assert proc.returncode == 130 and "--resume" in err
    load_checkpoint(run / "last.pt")  # intact
    done = subprocess.run(
        [*cmd, "--epochs", "3", "--resume"], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ref = train(TrainConfig(out=str(tmp_path / "ref"), epochs=3, **{**COMMON, "batch_size": 100}))
    assert _rows(run) == _rows(tmp_path / "ref")
    assert json.loads((run / "results.json").read_text())["test_loss"] == ref["test_loss"]


def test_nan_input_stops_naming_step_and_tensor_or_is_skipped(tmp_path, monkeypatch):
    def poison(step, model, x):
        return torch.full_like(x, math.nan) if step == 3 else x

    _wrap_step(monkeypatch, poison)
    with pytest.raises(FloatingPointError, match=r"step 3: .*Potentials\.unary"):
        train(TrainConfig(out=str(tmp_path / "stop"), epochs=1, **COMMON))
    res = train(TrainConfig(out=str(tmp_path / "skip"), epochs=1, skip_nonfinite=True, **COMMON))
    (row,) = _rows(tmp_path / "skip")
    assert row["skipped"] == 1 and row["iteration"] == 8 and math.isfinite(res["test_loss"])
    state = load_checkpoint(tmp_path / "skip" / "last.pt")["model"]
    assert all(bool(torch.isfinite(v).all()) for v in state.values())


def test_nonfinite_gradient_stops_before_the_update(tmp_path, monkeypatch):
    def hook(step, model, x):
        if step == 2:
            w = model.decoder[0].weight
            w.register_hook(lambda g: torch.full_like(g, math.inf))
        return x

    _wrap_step(monkeypatch, hook)
    with pytest.raises(FloatingPointError, match=r"step 2: the gradient of parameter 'model\."):
        train(TrainConfig(out=str(tmp_path / "g"), epochs=1, **COMMON))


def test_nonfinite_descriptions():
    ok = torch.tensor(1.0)
    assert nonfinite_stats(ok, {"loss": ok, "recon": ok, "kl": ok}) is None
    msg = nonfinite_stats(ok, {"loss": ok, "recon": ok, "kl": torch.tensor(math.inf)})
    assert "kl" in msg and "inf" in msg
    assert "objective" in nonfinite_stats(torch.tensor(math.nan), {"loss": ok})
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([0.0, math.nan])
    assert "'w'" in nonfinite_gradient([("w", p)])
    with pytest.raises(NonFiniteError, match="Potentials.pairwise"):
        Potentials(torch.zeros(1, 2, 2), torch.tensor([[0, 1]]), torch.full((1, 1, 2, 2), math.inf))


def test_checkpoints_load_with_weights_only(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": Path("x")}, path)  # an arbitrary pickled object
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(path)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)


class _Raises(Solver):
    name = "test-raises"

    def solve(self, potentials, hint=None):
        raise KeyError("licence server unreachable")


class _Malformed(Solver):
    name = "test-malformed"

    def __init__(self, kind: str = "range") -> None:
        super().__init__()
        self.kind = kind

    def solve(self, potentials, hint=None):
        B, n, K = potentials.unary.shape
        if self.kind == "shape":
            return torch.zeros(B, n + 1, dtype=torch.long)
        if self.kind == "float":
            return torch.full((B, n), 0.5)
        return torch.full((B, n), K, dtype=torch.long)


@pytest.mark.parametrize(
    "solver, err, match",
    [
        (_Raises(), SolverError, "solver 'test-raises' failed on a batch of 2 .*KeyError"),
        (_Malformed("shape"), ValueError, r"'test-malformed' .*shape \[2, 4\]"),
        (_Malformed("float"), ValueError, "non-integer"),
        (_Malformed("range"), ValueError, r"outside \[0, 1\] \(first at sample 0"),
    ],
)
def test_failing_or_malformed_solver_is_named(solver, err, match):
    p = Potentials(torch.randn(2, 3, 2), torch.tensor([[0, 1]]), torch.randn(2, 1, 2, 2))
    with pytest.raises(err, match=match):
        solver(p)


def test_failing_solver_during_training_is_one_line(tmp_path, capsys):
    register("test-raises-cli", overwrite=True)(_Raises)
    argv = ["train", "--model", "structured", "--latent", "3", "--solver", "test-raises-cli"]
    argv += ["--quiet", "--out", str(tmp_path / "s"), "--max-steps", "2"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "solver 'test-raises" in err[0] and "KeyError" in err[0]


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            [
                "--model",
                "structured",
                "--latent",
                "4",
                "--pairwise",
                "general",
                "--solver",
                "graphcut",
            ],
            "supermodular",
        ),
        (["--model", "structured", "--latent", "3x4"], "K = 4"),
        (["--model", "structured", "--latent", "4", "--solver", "nope"], "unknown solver"),
        (
            ["--model", "structured", "--latent", "4", "--graph", "complete", "--solver", "tree"],
            "forest",
        ),
        (
            ["--model", "categorical", "--pairwise", "general"],
            "only applies to --model attribute or celeba or structured",
        ),
        (["--solver-workers", "-1"], "--solver-workers"),
        (
            ["--estimator", "gumbel-softmax", "--model", "structured", "--latent", "4"],
            "independent",
        ),
    ],
)
def test_incompatible_options_are_one_line_errors(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["train", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_cli_error_in_a_fresh_process_has_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "structvae", "train", "--estimator", "nope"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip().splitlines()[-1].startswith("structvae train: error: unknown estimator")
    )
    assert list(tmp_path.iterdir()) == []


def test_corrupt_dataset_message_says_what_to_do(tmp_path, capsys):
    root = tmp_path / "data"
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (raw / f"{name}.gz").write_bytes(b"\x1f\x8b truncated")
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / f"{name}.gz").write_bytes(b"\x1f\x8b truncated")
    argv = ["train", "--dataset", "mnist", "--data-root", str(root), "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 1
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert ".gz" in err and "--download" in err and "--data-root" in err

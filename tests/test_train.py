"""The training loop, the run folder, resume, checkpoints and the command line (small runs)."""

from __future__ import annotations

import csv
import json
import math
import os

import pytest
import torch

from structvae.cli import main
from structvae.train import (
    DEFAULT_EPOCHS,
    DEFAULT_EPS,
    CheckpointError,
    TrainConfig,
    evaluate,
    load_checkpoint,
    save_checkpoint,
    train,
)

ARTIFACTS = (
    "config.json",
    "metrics.jsonl",
    "metrics.csv",
    "last.pt",
    "best.pt",
    "results.json",
    "reconstructions.png",
    "samples.png",
    "best_reconstructions.png",
    "best_samples.png",
    "curves.png",
)


def _config(tmp_path, name: str, **kw) -> TrainConfig:
    base = dict(out=str(tmp_path / name), quiet=True, eval_samples=3, batch_size=100)
    base.update(kw)
    return TrainConfig(**base)


def _rows(run_dir) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("estimator", ["direct", "gumbel-softmax", "exact"])
def test_run_writes_every_artifact(tmp_path, estimator):
    cfg = _config(tmp_path, estimator, estimator=estimator, latent="1x4", epochs=2, max_steps=3)
    res = train(cfg)
    run = tmp_path / estimator
    for name in ARTIFACTS:
        assert (run / name).is_file(), name
    assert res["run_dir"] == str(run)
    assert res["iterations"] == 3 and res["epochs"] == 1  # max_steps stops inside epoch 1
    for key in ("test_loss", "test_recon", "test_kl", "test_iwae_nll", "best_val_loss"):
        assert math.isfinite(res[key]), key
    assert res["test_loss"] == pytest.approx(res["test_recon"] + res["test_kl"])
    saved = json.loads((run / "results.json").read_text())
    assert saved["test_loss"] == res["test_loss"]
    config = json.loads((run / "config.json").read_text())
    assert config["estimator"] == estimator and config["out"] == str(run)
    rows = _rows(run)
    assert len(rows) == 1 and rows[0]["epoch"] == 1 and rows[0]["iteration"] == 3
    with open(run / "metrics.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 1
    assert {
        "epoch",
        "iteration",
        "train_loss",
        "train_recon",
        "train_kl",
        "val_loss",
        "time_s",
    } <= set(table[0])
    assert float(table[0]["val_loss"]) == pytest.approx(rows[0]["val_loss"])
    if estimator == "direct":
        assert rows[0]["eps"] == DEFAULT_EPS and table[0]["temperature"] == ""
    if estimator == "gumbel-softmax":
        assert rows[0]["temperature"] == 1.0
    # evaluate() reloads config + best.pt and reproduces the final numbers exactly
    ev = evaluate(run, samples=3)
    assert ev["loss"] == pytest.approx(res["test_loss"], rel=1e-12)
    assert ev["iwae_nll"] == pytest.approx(res["test_iwae_nll"], rel=1e-12)


@pytest.mark.parametrize("binarize", ["fixed", "dynamic"])
def test_resume_reproduces_the_uninterrupted_run(tmp_path, binarize):
    # 8 steps per epoch on mnist-sample; dynamic binarisation has its own generator to restore
    common = dict(latent="1x3", batch_size=500, eps=0.5, binarize=binarize)
    full = train(_config(tmp_path, "full", epochs=2, **common))
    train(_config(tmp_path, "split", epochs=1, **common))
    with pytest.raises(CheckpointError):  # guards against a silently fresh run below
        load_checkpoint(tmp_path / "split" / "missing.pt")
    resumed = train(_config(tmp_path, "split", epochs=2, resume=True, **common))

    a, b = _rows(tmp_path / "full"), _rows(tmp_path / "split")
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b, strict=True):
        ra.pop("time_s"), rb.pop("time_s")
        assert ra == rb
    for key in ("test_loss", "test_iwae_nll", "best_val_loss", "best_epoch", "iterations"):
        assert full[key] == resumed[key], key
    sa = load_checkpoint(tmp_path / "full" / "last.pt")
    sb = load_checkpoint(tmp_path / "split" / "last.pt")
    for k, v in sa["model"].items():
        assert torch.equal(v, sb["model"][k]), k
    with open(tmp_path / "split" / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == 2


def test_resume_refuses_changed_settings(tmp_path):
    train(_config(tmp_path, "r", latent="1x3", epochs=1, max_steps=2))
    with pytest.raises(ValueError, match="lr"):
        train(_config(tmp_path, "r", latent="1x3", epochs=2, lr=0.1, resume=True))


def test_existing_run_is_not_overwritten_silently(tmp_path):
    train(_config(tmp_path, "o", latent="1x3", epochs=1, max_steps=1))
    with pytest.raises(ValueError, match="--resume"):
        train(_config(tmp_path, "o", latent="1x3", epochs=1, max_steps=1))
    train(_config(tmp_path, "o", latent="1x3", epochs=1, max_steps=1, overwrite=True))


def test_corrupt_checkpoint_names_the_file(tmp_path):
    train(_config(tmp_path, "c", latent="1x3", epochs=1, max_steps=2))
    last = tmp_path / "c" / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(CheckpointError, match=str(last)):
        train(_config(tmp_path, "c", latent="1x3", epochs=2, resume=True))
    best = tmp_path / "c" / "best.pt"
    best.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="best.pt"):
        evaluate(tmp_path / "c")
    assert main(["evaluate", str(tmp_path / "c")]) == 1


def test_save_checkpoint_is_atomic(tmp_path):
    path = tmp_path / "x.pt"
    obj = {"model": {"w": torch.arange(3.0)}, "rng": torch.get_rng_state()}
    save_checkpoint(obj, path)
    save_checkpoint(obj, path)  # replaces in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt"]  # no temporary files left
    back = load_checkpoint(path)
    assert torch.equal(back["model"]["w"], obj["model"]["w"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--estimator", "nope"], "unknown estimator"),
        (["--latent", "10"], "NxK"),
        (["--latent", "1x"], "NxK"),
        (["--solver", "nope"], "unknown solver"),
        (["--dataset", "nope"], "unknown dataset"),
        (["--estimator", "gumbel-softmax", "--eps", "0.5"], "does not take --eps"),
        (["--eps", "-1"], "--eps"),
        (["--epochs", "0"], "--epochs"),
        (["--resume", "--out", "nowhere"], "nothing to resume"),
    ],
)
def test_cli_rejects_bad_arguments_before_any_work(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["train", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "structvae train: error:" in err
    assert list(tmp_path.iterdir()) == []  # nothing was written


def test_default_config(tmp_path, monkeypatch):
    cfg = TrainConfig()
    assert (cfg.dataset, cfg.model, cfg.latent, cfg.estimator) == (
        "mnist-sample",
        "categorical",
        "1x10",
        "direct",
    )
    assert (cfg.batch_size, cfg.lr, cfg.epochs, cfg.binarize) == (
        100,
        1e-3,
        DEFAULT_EPOCHS,
        "fixed",
    )
    monkeypatch.chdir(tmp_path)
    # `structvae train` with no arguments, cut short
    assert main(["train", "--max-steps", "2", "--eval-samples", "2", "--quiet"]) == 0
    run = tmp_path / "runs" / "mnist-sample-categorical-1x10-direct-seed0"
    assert (run / "results.json").is_file()
    # a second default run gets a fresh folder; --resume continues the first one
    assert main(["train", "--max-steps", "1", "--eval-samples", "2", "--quiet"]) == 0
    assert (
        tmp_path / "runs" / "mnist-sample-categorical-1x10-direct-seed0-2" / "results.json"
    ).is_file()
    assert main(["train", "--resume", "--max-steps", "3", "--eval-samples", "2", "--quiet"]) == 0
    # --max-steps is the budget of one invocation: 2 steps, then 3 more from where it stopped
    assert json.loads((run / "results.json").read_text())["iterations"] == 5


def test_cli_lists_and_evaluates(tmp_path, capsys):
    assert main(["estimators"]) == 0
    out = capsys.readouterr().out
    assert "direct" in out and "gumbel-softmax" in out and "exact" in out
    assert main(["solvers"]) == 0
    assert "independent" in capsys.readouterr().out
    train(_config(tmp_path, "e", latent="1x3", epochs=1, max_steps=1))
    assert main(["evaluate", str(tmp_path / "e"), "--samples", "0", "--split", "val"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["split"] == "val" and "iwae_nll" not in res and math.isfinite(res["loss"])
    assert main([]) == 2  # no command: the help, on stderr
    assert "train" in capsys.readouterr().err


@pytest.mark.cuda
def test_train_on_cuda(tmp_path):
    res = train(_config(tmp_path, "cuda", device="cuda", latent="1x4", epochs=1, max_steps=3))
    assert math.isfinite(res["test_loss"])
    ev = evaluate(tmp_path / "cuda", samples=3)
    assert ev["loss"] == pytest.approx(res["test_loss"], rel=1e-6)
    common = dict(device="cuda", latent="1x3", batch_size=500)
    train(_config(tmp_path, "full", epochs=2, **common))
    train(_config(tmp_path, "split", epochs=1, **common))
    train(_config(tmp_path, "split", epochs=2, resume=True, **common))
    a, b = _rows(tmp_path / "full"), _rows(tmp_path / "split")
    for ra, rb in zip(a, b, strict=True):
        ra.pop("time_s"), rb.pop("time_s")
        assert ra == rb

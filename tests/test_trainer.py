"""The trainer package: exact resume after a budget stop, the run's one solver, load_model,
specs and model options from the declarations, and the resume policy."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import structvae
from structvae.cli import main
from structvae.models import CategoricalVAE, register_model
from structvae.options import Option, boolean, int_tuple
from structvae.solvers import register
from structvae.solvers.exact import ExactSolver
from structvae.solvers.ilp import ILPSolver
from structvae.training import TrainConfig, Trainer, load_checkpoint, load_model, train
from structvae.training.build import check_config, resume_mismatch
from structvae.training.config import IDENTITY, INHERIT, INVOCATION, identity_fields, resume_policy
from structvae.training.specs import Spec, convert_options, parse_spec

QUICK = ["--eval-samples", "2", "--quiet"]


def _rows(run) -> list[dict]:
    rows = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("time_s")
    return rows


# --------------------------------------------------------------- budget stop and exact resume
def test_max_steps_then_resume_reproduces_the_uninterrupted_run(tmp_path):
    """Issue 13 item 3, the issue's own commands: 40 steps per epoch, cut 20 steps into
    epoch 2, resumed without a budget."""
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    assert main(["train", "--epochs", "3", "--out", full, *QUICK]) == 0
    assert main(["train", "--epochs", "3", "--max-steps", "60", "--out", cut, *QUICK]) == 0
    ckpt = load_checkpoint(Path(cut) / "last.pt")
    assert (ckpt["epoch"], ckpt["position"], ckpt["iteration"]) == (1, 20, 60)
    stopped = json.loads((Path(cut) / "results.json").read_text())
    assert stopped["stopped_by"] == "max_steps" and stopped["iterations"] == 60
    assert [r.get("partial", False) for r in _rows(cut)] == [False, True]  # the cut epoch, shown
    # the budget belongs to the first call: --resume does not inherit --max-steps
    assert main(["train", "--resume", "--epochs", "3", "--out", cut, *QUICK]) == 0
    assert _rows(cut) == _rows(full)  # same iterations, same losses to the last digit
    a = json.loads((Path(full) / "results.json").read_text())
    b = json.loads((Path(cut) / "results.json").read_text())
    assert b["iterations"] == a["iterations"] == 120 and b["stopped_by"] is None
    for key in ("test_loss", "test_iwae_nll", "best_epoch", "best_val_loss"):
        assert a[key] == b[key], key
    for name in ("last.pt", "best.pt"):
        sa, sb = load_checkpoint(Path(full) / name), load_checkpoint(Path(cut) / name)
        assert sa["epoch"] == sb["epoch"]
        for k, v in sa["model"].items():
            assert torch.equal(v, sb["model"][k]), (name, k)


@pytest.mark.parametrize("binarize", ["fixed", "dynamic"])
def test_two_budget_stops_in_one_epoch_resume_exactly(tmp_path, binarize):
    """8 steps per epoch; stops after 3 and 5 steps (both inside epoch 1), then the rest.
    Dynamic binarisation draws from its own generator, restored at the stop."""
    common = dict(latent="1x3", batch_size=500, eps=0.5, binarize=binarize)
    common.update(quiet=True, eval_samples=2, epochs=2)
    full = train(TrainConfig(out=str(tmp_path / "full"), **common))
    run = str(tmp_path / "run")
    first = train(TrainConfig(out=run, max_steps=3, **common))
    assert first["iterations"] == 3 and first["epochs"] == 1
    second = train(TrainConfig(out=run, max_steps=2, resume=True, **common))
    assert second["iterations"] == 5 and load_checkpoint(Path(run) / "last.pt")["position"] == 5
    resumed = train(TrainConfig(out=run, resume=True, **common))
    assert _rows(run) == _rows(tmp_path / "full")
    assert resumed["test_loss"] == full["test_loss"] and resumed["iterations"] == 16


def test_budget_fields_are_per_invocation_and_identity_is_metadata():
    assert resume_policy("max_steps") == resume_policy("max_time_s") == INVOCATION
    assert resume_policy("quiet") == INVOCATION and resume_policy("epochs") == INHERIT
    assert resume_policy("lr") == IDENTITY
    ids = set(identity_fields())
    assert {"lr", "seed", "model", "estimator", "model_options", "estimator_options"} <= ids
    assert not ids & {"epochs", "max_steps", "max_time_s", "device", "out", "quiet"}
    base = check_config(TrainConfig(latent="1x3")).config
    assert resume_mismatch(base, check_config(TrainConfig(latent="1x3", epochs=7)).config) is None
    other = check_config(TrainConfig(latent="1x3", lr=0.01)).config
    assert resume_mismatch(base, other) == ("lr", 1e-3, 0.01)
    # an option declared with identity=False (chunk_size) may change on resume; samples may not
    cfg = TrainConfig(latent="1x3", estimator_options={"chunk_size": 7})
    assert resume_mismatch(base, check_config(cfg).config) is None
    cfg = TrainConfig(latent="1x3", estimator="direct:samples=2")
    assert resume_mismatch(base, check_config(cfg).config) == ("estimator_options:samples", None, 2)


# ------------------------------------------------------------------------- the run's solver
CALLS: list[int] = []


@register("test-counting")
class CountingSolver(ExactSolver):
    """Exact enumeration that records which instance answered each call (a name of its own:
    a solver picked again by structure would be a plain ExactSolver, and not counted)."""

    name = "test-counting"

    def __call__(self, potentials, **kw):
        CALLS.append(id(self))
        return super().__call__(potentials, **kw)


def test_one_solver_instance_serves_training_and_evaluation(tmp_path, capsys):
    """--pairwise general --solver S: the model and the estimator hold the same instance, which
    answers every arg max of training, validation and the test evaluation."""
    parts = check_config(
        TrainConfig(model="structured", latent="4", pairwise="general", solver="ilp")
    )
    assert isinstance(parts.model.solver, ILPSolver) and parts.estimator.solver is parts.solver
    assert parts.model.solver is parts.solver
    config = TrainConfig(
        model="structured",
        latent="4",
        pairwise="general",
        solver="test-counting",
        batch_size=250,
        max_steps=1,
        eval_samples=2,
        out=str(tmp_path / "run"),
    )
    trainer = Trainer(config)
    assert trainer.model.solver is trainer.estimator.solver is trainer.parts.solver
    CALLS.clear()  # check_config's structural checks
    trainer.fit()
    assert set(CALLS) == {id(trainer.parts.solver)}
    # one step is two solves (z*, z_eps) per row; validation and test add one-sample solves
    assert len(CALLS) > 2 + 2
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["solver"] == saved["solver_used"] == "test-counting"
    printed = capsys.readouterr()
    assert "solver test-counting" in printed.out + printed.err  # the training log
    model = load_model(tmp_path / "run")
    assert isinstance(model.solver, CountingSolver)


def test_auto_solver_is_named_in_config_and_results(tmp_path):
    res = train(
        TrainConfig(
            model="structured",
            latent="4",
            max_steps=1,
            eval_samples=2,
            quiet=True,
            out=str(tmp_path / "s"),
        )
    )
    saved = json.loads((tmp_path / "s" / "config.json").read_text())
    assert saved["solver"] is None and saved["solver_used"] == "graphcut" == res["solver"]


# --------------------------------------------------------------------------------- load_model
def test_load_model_returns_the_trained_model_in_eval_mode(tmp_path):
    run = tmp_path / "r"
    res = train(TrainConfig(latent="1x3", max_steps=3, eval_samples=2, quiet=True, out=str(run)))
    model = load_model(run)
    assert not model.training and model.latent_shape == (1, 3)
    best = load_checkpoint(run / "best.pt")["model"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, best[k]), k
    x = torch.rand(5, 784).round()
    out = model(x)
    assert out.loss.shape == (5,) and out.z.shape == (5, 1)
    assert structvae.load_model is load_model and math.isfinite(res["test_loss"])
    last = load_model(run, which="last")
    for k, v in last.state_dict().items():
        assert torch.equal(v, load_checkpoint(run / "last.pt")["model"][k]), k
    with pytest.raises(ValueError, match="'best' or 'last'"):
        load_model(run, which="newest")
    with pytest.raises(FileNotFoundError, match="holds no structvae run"):
        load_model(tmp_path)


# ------------------------------------------------------------------------------------ specs
def test_parse_spec_and_convert_options():
    assert parse_spec("direct:eps=0.1,solver=ilp") == Spec(
        "direct", {"eps": "0.1", "solver": "ilp"}
    )
    assert parse_spec(" exact ") == Spec("exact", {})
    assert str(parse_spec("direct: eps = 0.1 ,solver=ilp")) == "direct:eps=0.1,solver=ilp"
    for bad, msg in (
        (":eps=1", "no name"),
        ("direct:eps", "not key=value"),
        ("direct:eps=1,eps=2", "given twice"),
        ("direct:1x=2", "not a valid name"),
    ):
        with pytest.raises(ValueError, match=msg):
            parse_spec(bad)
    declared = (
        Option("eps", float),
        Option("hidden", int_tuple),
        Option("flag", boolean),
        Option("mode", str, choices=("a", "b")),
    )
    got = convert_options({"eps": "0.5", "hidden": "4,2", "flag": "no", "mode": "b"}, declared, "x")
    assert got == {"eps": 0.5, "hidden": (4, 2), "flag": False, "mode": "b"}
    with pytest.raises(ValueError, match="x has no option 'nope'; its options: eps, hidden"):
        convert_options({"nope": "1"}, declared, "x")
    with pytest.raises(ValueError, match="must be one of a, b"):
        convert_options({"mode": "c"}, declared, "x")
    with pytest.raises(ValueError, match="eps='big' is not a float"):
        convert_options({"eps": "big"}, declared, "x")


def test_spec_form_is_the_flat_flags(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["--model", "structured:pairwise=general,kl=factorised", "--latent", "4"]
    common += ["--max-steps", "1", *QUICK]
    assert (
        main(["train", *common, "--estimator", "direct:eps=0.3,solver=exact", "--out", str(a)]) == 0
    )
    flat = ["--model", "structured", "--pairwise", "general", "--kl", "factorised", "--latent", "4"]
    flat += ["--eps", "0.3", "--solver", "exact", "--max-steps", "1", *QUICK]
    assert main(["train", *flat, "--out", str(b)]) == 0
    ca, cb = (json.loads((p / "config.json").read_text()) for p in (a, b))
    ca.pop("out"), cb.pop("out")
    assert ca == cb and ca["eps"] == 0.3 and ca["pairwise"] == "general"
    assert _rows(a) == _rows(b)


def test_conflicting_and_unknown_spec_options_are_one_line_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for argv, message in (
        (["--estimator", "direct:eps=0.3", "--eps", "0.2"], "eps is given twice"),
        (["--estimator", "direct:colour=red"], "has no option 'colour'; its options: eps"),
        (["--model", "categorical:pairwise=general"], "has no option 'pairwise'"),
        (["--model-opt", "hidden=x"], "hidden='x'"),
        (["--estimator", "gumbel-softmax:eps=1"], "has no option 'eps'"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(["train", *argv])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert message in err and "structvae train: error:" in err, (argv, err)
    assert list(tmp_path.iterdir()) == []


class ScaledVAE(CategoricalVAE):
    """A user's model with an option of its own (registered with register_model)."""

    options = (*CategoricalVAE.options, Option("scale", float, 1.0, "a plugin's own option"))

    def __init__(self, *args, scale: float = 1.0, **kw) -> None:
        super().__init__(*args, **kw)
        self.scale = scale


register_model("test-scaled", ScaledVAE.from_spec)


@pytest.mark.parametrize("form", ["spec", "model-opt"])
def test_a_registered_models_options_reach_it_from_the_cli(tmp_path, form):
    run = tmp_path / form
    model = ["--model", "test-scaled:scale=2.5"]
    if form == "model-opt":
        model = ["--model", "test-scaled", "--model-opt", "scale=2.5,hidden=40"]
    args = ["train", *model, "--latent", "1x3", "--max-steps", "1", "--out", str(run), *QUICK]
    assert main(args) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"] == "test-scaled" and saved["model_options"]["scale"] == 2.5
    loaded = load_model(run)
    assert isinstance(loaded, ScaledVAE) and loaded.scale == 2.5
    if form == "model-opt":
        assert saved["model_options"]["hidden"] == [40] and loaded.hidden == (40,)


def test_the_model_is_built_once(tmp_path, monkeypatch):
    import structvae.training.build as build

    calls = []
    original = build.build_model
    monkeypatch.setattr(build, "build_model", lambda *a, **k: calls.append(a) or original(*a, **k))
    argv = ["train", "--latent", "1x3", "--max-steps", "1", "--out", str(tmp_path / "o"), *QUICK]
    assert main(argv) == 0
    assert len(calls) == 1

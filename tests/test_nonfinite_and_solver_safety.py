"""Issue 13 in the estimators and solvers: one NaN/inf check for every estimator's loss_fn,
read-only inputs for plain-function solvers, and a named error for a solver's bad output."""

import math

import numpy as np
import pytest
import torch

import structvae as sv
from structvae.errors import NonFiniteError, SolverError
from structvae.estimators import NonFiniteLossError, available_estimators, get_estimator
from structvae.graphs import make_edges
from structvae.models import StructuredVAE
from structvae.solvers import FunctionSolver, InvalidSolutionError, base, register


@pytest.fixture
def clean_solver_registry(monkeypatch):
    monkeypatch.setattr(base._REGISTRY, "_factories", dict(base._REGISTRY._factories))


# the estimators structvae registers itself (tests elsewhere register more; under xdist the
# parameters must not depend on which test modules a worker imported first)
BUILT_IN = sorted(
    n for n in available_estimators() if type(get_estimator(n)).__module__.startswith("structvae.")
)


def _potentials(B=4, n=3, K=2):
    g = torch.Generator().manual_seed(0)
    return sv.Potentials(torch.randn(B, n, K, generator=g, requires_grad=True))


def _poisoned(value: float, row: int = 1):
    """A loss that is finite except on one data row (where it is ``value``)."""

    def loss_fn(z: torch.Tensor) -> torch.Tensor:
        out = (z * torch.arange(z.shape[-1], dtype=z.dtype)).sum((-1, -2))
        poison = torch.zeros_like(out)
        poison[row] = value
        return out + poison

    return loss_fn


def _built(name: str):
    est = get_estimator(name)
    est.setup((3, 2))
    return est


@pytest.mark.parametrize("value", [math.nan, math.inf])
@pytest.mark.parametrize("name", BUILT_IN)
def test_every_estimator_refuses_a_nonfinite_loss_naming_itself(name, value):
    est = _built(name)
    with pytest.raises(
        NonFiniteLossError, match=rf"estimator '{name}': loss_fn returned NaN or inf"
    ):
        est(_potentials(), _poisoned(value))
    with pytest.raises(NonFiniteLossError, match=rf"estimator '{name}'") as info:
        est.finish(est.begin(_potentials()), _poisoned(value))
    err = info.value
    assert isinstance(err, FloatingPointError) and isinstance(err, NonFiniteError)
    assert err.estimator == name and "row 1" in str(err)
    # and a finite loss goes through, with a finite surrogate
    res = est(_potentials(), _poisoned(0.0))
    assert bool(torch.isfinite(res.surrogate))


def test_direct_refuses_nonfinite_candidates_with_the_shared_error():
    est = get_estimator("direct", eps=0.5)
    calls = []

    def loss_fn(z):  # finite at z*, NaN for the candidates
        calls.append(z.shape[1])
        out = z.sum((-1, -2))
        return out if len(calls) == 1 else out * math.nan

    with pytest.raises(NonFiniteLossError, match="estimator 'direct'"):
        est(_potentials(), loss_fn)
    assert len(calls) == 2


def test_function_solver_inputs_are_read_only_and_the_caller_keeps_its_potentials():
    edges = make_edges("chain", 3)
    u = torch.randn(2, 3, 2, dtype=torch.float64)
    pw = torch.randn(2, 2, 2, 2, dtype=torch.float64)
    p = sv.Potentials(u, edges, pw)
    before = (u.clone(), edges.clone(), pw.clone())

    def writes_unary(unary, e, pairwise):
        unary[:] = 0.0
        return np.zeros(len(unary), dtype=int)

    def writes_edges(unary, e, pairwise):
        e[0, 0] = 2
        return np.zeros(len(unary), dtype=int)

    def writes_pairwise(unary, e, pairwise):
        pairwise *= 2
        return np.zeros(len(unary), dtype=int)

    for fn in (writes_unary, writes_edges, writes_pairwise):
        with pytest.raises(SolverError, match=f"solver '{fn.__name__}' wrote to its input arrays"):
            FunctionSolver(fn)(p)
    for got, want in zip((p.unary, p.edges, p.pairwise), before, strict=True):
        assert torch.equal(got, want)

    def copies_first(unary, e, pairwise):
        unary = unary.copy()
        unary[:, 0] += 100.0  # works on its own copy
        return unary.argmax(-1)

    assert torch.equal(FunctionSolver(copies_first)(p), torch.zeros(2, 3, dtype=torch.long))
    assert torch.equal(p.unary, before[0])


def test_registered_solver_with_out_of_range_values_in_training_is_a_named_solver_error(
    clean_solver_registry,
):
    @register("test-out-of-range")
    def out_of_range(unary, edges, pairwise):
        return np.full(len(unary), 7)

    model = StructuredVAE(4, pairwise="general", input_dim=16, hidden=(8,))
    est = get_estimator("direct", solver="test-out-of-range", eps=0.5)
    x = torch.rand(3, 16).bernoulli()
    with pytest.raises(
        SolverError, match=r"solver 'test-out-of-range' returned .* outside \[0, 1\]"
    ):
        model.objective(x, est)
    with pytest.raises(InvalidSolutionError):
        model.objective(x, est)
    model.use_solver(sv.get_solver("test-out-of-range"))
    with pytest.raises(SolverError, match="test-out-of-range"):
        model.one_sample_loss(x)


def test_registered_solver_with_out_of_range_values_stops_train_with_a_solver_error(
    clean_solver_registry, tmp_path
):
    from structvae.train import TrainConfig, train

    @register("test-bad-train")
    def bad(unary, edges, pairwise):
        return np.full(len(unary), -1)

    cfg = TrainConfig(
        model="structured",
        latent="4",
        pairwise="general",
        estimator="direct",
        solver="test-bad-train",
        epochs=1,
        max_steps=2,
        quiet=True,
        out=str(tmp_path / "run"),
    )
    with pytest.raises(SolverError, match="solver 'test-bad-train'"):
        train(cfg)


@pytest.mark.parametrize("value, word", [(math.nan, "NaN"), (math.inf, "inf")])
def test_unvalidated_nonfinite_potentials_are_called_nan_or_inf_not_overflow(value, word):
    u = torch.zeros(3, 4, 2)
    u[2, 1, 0] = value
    p = sv.Potentials(u, validate=False)
    with pytest.raises(NonFiniteError, match=rf"sample 2 hold {word}") as info:
        sv.get_solver("independent")(p)
    assert "overflow" not in str(info.value)
    big = sv.Potentials(torch.full((1, 2, 2), 1e38), validate=False)
    with pytest.raises(ValueError, match="may overflow"):
        sv.get_solver("independent")(big)


def test_an_estimator_calling_loss_fn_itself_is_checked_too():
    from structvae.estimators import Estimator, EstimatorResult

    class Plain(Estimator):  # a plugin that bypasses evaluate_losses
        name = "test-plain"

        def estimate(self, potentials, loss_fn):
            z = potentials.unary.argmax(-1)
            loss = loss_fn(torch.nn.functional.one_hot(z, 2).float()[:, None])[:, 0]
            return EstimatorResult(z=z, loss=loss.detach(), surrogate=loss.mean())

    with pytest.raises(NonFiniteLossError, match="estimator 'test-plain'.* at the sample .*row 1"):
        Plain()(_potentials(), _poisoned(math.nan))
    est = Plain()
    with pytest.raises(NonFiniteLossError, match="estimator 'test-plain'"):
        est.finish(est.begin(_potentials()), _poisoned(math.inf))

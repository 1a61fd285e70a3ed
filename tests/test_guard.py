"""The NaN/inf guard of a training step: one fused check per step, exact messages on failure."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import structvae.guard as guard
from structvae.guard import nonfinite_gradient, train_step


class _Toy(nn.Module):
    """objective = sum(w * x) with a controllable statistic; ``x`` may hold NaN/inf/huge values."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(4))
        self.b = nn.Parameter(torch.zeros(1))

    def objective(self, x, estimator, kl=0.0):
        total = (self.w * x).sum() + self.b.sum()
        return total, {"loss": total.detach(), "kl": torch.tensor(kl), "eps": 0.1}


def _step(model, x, **kw):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return train_step(model, None, opt, list(model.named_parameters()), x, step=7, **kw)


def test_a_healthy_step_reads_one_flag(monkeypatch):
    calls = []
    real = guard._finite
    monkeypatch.setattr(guard, "_finite", lambda t: calls.append(t.shape) or real(t))
    model = _Toy()
    stats = _step(model, torch.ones(4))
    assert stats is not None and len(calls) == 1  # one host read for stats and gradients
    assert torch.equal(model.w.detach(), torch.full((4,), 0.9))  # the update happened


def test_nan_gradient_is_named_and_parameters_are_untouched():
    model = _Toy()
    x = torch.tensor([1.0, float("nan"), 1.0, 1.0])
    with pytest.raises(FloatingPointError, match="step 7: the loss"):
        _step(model, x)  # the loss is NaN too: the objective is named first
    assert torch.equal(model.w.detach(), torch.ones(4))


def test_nan_only_in_a_gradient_is_named():
    class Sqrt(_Toy):  # d sqrt(w*0)/dw is inf at 0 while the value is finite
        def objective(self, x, estimator):
            total = (self.w * x).sqrt().sum()
            return total, {"loss": total.detach()}

    model = Sqrt()
    with pytest.raises(FloatingPointError, match="gradient of parameter 'w'"):
        _step(model, torch.zeros(4))
    assert torch.equal(model.w.detach(), torch.ones(4))
    assert _step(Sqrt(), torch.zeros(4), skip_nonfinite=True) is None


def test_nonfinite_statistic_is_named():
    with pytest.raises(FloatingPointError, match="the kl"):
        _step(_Toy(), torch.ones(4), kl=float("inf"))


def test_overflowing_sums_of_finite_gradients_are_not_an_error():
    class Big(_Toy):  # value 0 at w = 1, gradient x = 3e38 per entry: the float32 sum is inf
        def objective(self, x, estimator):
            total = ((self.w - 1) * x).sum()
            return total, {"loss": total.detach()}

    model = Big()
    assert _step(model, torch.full((4,), 3e38)) is not None  # the exact check clears it
    assert torch.isfinite(model.w).all() and model.w[0] < -1e37
    named = list(model.named_parameters())
    model.w.grad = torch.full((4,), 3e38)
    assert nonfinite_gradient(named) is None
    model.w.grad[2] = float("inf")
    assert nonfinite_gradient(named) == "the gradient of parameter 'w' holds NaN or inf"

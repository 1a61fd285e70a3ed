"""One guarded optimisation step, and SIGTERM handled like Ctrl-C.

:func:`train_step` runs ``model.objective``, ``backward`` and the optimizer step, and refuses to
let NaN or inf reach the parameters: non-finite potentials (:class:`~structvae.errors.
NonFiniteError` from :class:`~structvae.Potentials` or an estimator), a non-finite loss, KL or
objective, or a non-finite gradient stop training with a :class:`FloatingPointError` naming
the step and the tensor, or, with ``skip_nonfinite``, drop the batch (no parameter update).
In a distributed run the decision is shared, so every process skips or stops together.
"""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .distributed import SINGLE, DistContext
from .errors import NonFiniteError

__all__ = ["train_step", "nonfinite_stats", "nonfinite_gradient", "sigterm_as_interrupt"]


def _finite(t: torch.Tensor) -> bool:
    if t.dim() == 0:  # one read, no extra kernels
        return math.isfinite(t.item())
    return bool(torch.isfinite(t.detach()).all())


def _tensor_values(stats: dict) -> list[torch.Tensor]:
    return [v.detach().reshape(-1) for v in stats.values() if isinstance(v, torch.Tensor)]


def _sum_or_nan(tensors: Sequence[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """A 0-dim tensor that is finite when every element of ``tensors`` is (one sum per tensor;
    0-dim tensors enter as they are).

    NaN or inf anywhere makes a sum non-finite; a sum of finite values can overflow to inf in
    float32, so a non-finite result is a *suspicion* that the exact checks confirm.
    """
    if not tensors:
        return like.new_zeros(())
    parts = [t.detach() if t.dim() == 0 else t.detach().sum() for t in tensors]
    return torch.stack([q if q.dtype == like.dtype else q.to(like.dtype) for q in parts]).sum()


def nonfinite_stats(total: torch.Tensor, stats: dict) -> str | None:
    """A description of the first non-finite quantity among the objective's outputs, or None."""
    parts = [p.to(total.dtype) for p in _tensor_values(stats)]
    if _finite(torch.cat([total.detach().reshape(-1), *parts])):  # one check (one sync)
        return None
    for key in ("kl", "recon", "loss"):
        v = stats.get(key)
        if isinstance(v, torch.Tensor) and not _finite(v):
            return f"the {key} ({'reconstruction loss' if key == 'recon' else key}) is {v.item()}"
    if not _finite(total):
        return f"the objective (estimator surrogate + KL) is {total.item()}"
    for key, v in stats.items():
        if isinstance(v, torch.Tensor) and not _finite(v):
            return f"the statistic {key!r} of the objective holds NaN or inf"
    return None


def nonfinite_gradient(named: Sequence[tuple[str, nn.Parameter]]) -> str | None:
    """The first parameter whose gradient holds NaN or inf, described, or None."""
    grads = [p.grad for _, p in named if p.grad is not None]
    if not grads or _finite(_sum_or_nan(grads, grads[0])):  # one sum per tensor, no copy
        return None
    for name, p in named:
        if p.grad is not None and not _finite(p.grad):
            return f"the gradient of parameter {name!r} holds NaN or inf"
    return None  # the float32 sums overflowed; every gradient is finite


def _all_finite(
    total: torch.Tensor, stats: dict, named: Sequence[tuple[str, nn.Parameter]]
) -> bool:
    """Whether the objective, its statistics and every gradient are finite: one fused check.

    The fast path of every step: one sum per gradient, stacked with the 0-dim objective and
    statistics into one sum on the device, read once (a single host synchronisation). A
    non-finite result (NaN, inf, or a float32 overflow of the sums) sends the caller to the
    exact, tensor-naming checks.
    """
    parts = [total.reshape(()), *(v for v in stats.values() if isinstance(v, torch.Tensor))]
    parts += [p.grad for _, p in named if p.grad is not None]
    return _finite(_sum_or_nan(parts, total))


def train_step(
    model: nn.Module,
    estimator,
    optimizer: torch.optim.Optimizer,
    named_params: Sequence[tuple[str, nn.Parameter]],
    x: torch.Tensor,
    *,
    step: int,
    skip_nonfinite: bool = False,
    ctx: DistContext = SINGLE,
    global_batch: int | None = None,
    **kw,
) -> dict | None:
    """One step on ``x`` ``[b, ...]``: the objective's statistics, or None when skipped.

    ``step`` is the 1-based iteration number used in messages; ``global_batch`` is the batch
    size summed over the processes (``ctx``), ``kw`` goes to ``model.objective``.
    """
    problem = None
    total = stats = None
    try:
        total, stats = model.objective(x, estimator, **kw)
    except NonFiniteError as e:
        problem = f"non-finite potentials or losses: {e}"
    optimizer.zero_grad(set_to_none=True)
    if problem is None:
        total.backward()  # also when the loss is NaN: the one check below covers both
        if not _all_finite(total, stats, named_params):  # the only host sync of the guard
            problem = nonfinite_stats(total, stats) or nonfinite_gradient(named_params)
    params = [p for _, p in named_params]
    b = x.shape[0]
    flagged = ctx.reduce_gradients(params, b, global_batch or b, problem is not None)
    if flagged and problem is None:
        problem = "another process found NaN or inf in its slice of the batch"
    if flagged:
        optimizer.zero_grad(set_to_none=True)
        if skip_nonfinite:
            return None
        raise FloatingPointError(
            f"step {step}: {problem}; training stopped before the parameters were updated "
            "(lower --lr, check the data and the model, or pass --skip-nonfinite to skip "
            "such batches)"
        )
    optimizer.step()
    return stats


class _Terminated(KeyboardInterrupt):
    """SIGTERM, delivered as an interrupt so that it takes the Ctrl-C path."""


def _no_undo() -> None:
    """The undo function where no handler was installed (not the main thread)."""


_no_undo.received = None


def sigterm_as_interrupt() -> Callable[[], None]:
    """Make SIGTERM raise ``KeyboardInterrupt`` (main thread only); returns the undo function.

    The training loop then stops the same way on ``kill`` as on Ctrl-C: the checkpoint of the
    last finished epoch (written atomically) is intact and ``--resume`` continues from it.
    """
    if threading.current_thread() is not threading.main_thread():
        return _no_undo

    def handler(signum, frame):
        undo.received = f"received signal {signal.Signals(signum).name}"
        raise _Terminated(undo.received)

    def undo():
        signal.signal(signal.SIGTERM, previous)

    undo.received = None  # the signal's message once it came: the loop re-raises it between
    # steps, as an exception raised inside a __del__ or a weakref callback is only printed
    previous = signal.signal(signal.SIGTERM, handler)
    return undo

"""One guarded optimisation step, and SIGTERM handled like Ctrl-C.

:func:`train_step` runs ``model.objective``, ``backward`` and the optimizer step, and refuses to
let NaN or inf reach the parameters: non-finite potentials (:class:`~structvae.errors.
NonFiniteError` from :class:`~structvae.Potentials` or an estimator), a non-finite loss, KL or
objective, or a non-finite gradient stop training with a :class:`FloatingPointError` naming
the step and the tensor, or, with ``skip_nonfinite``, drop the batch (no parameter update).
In a distributed run the decision is shared, so every process skips or stops together.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .distributed import SINGLE, DistContext
from .errors import NonFiniteError

__all__ = ["train_step", "nonfinite_stats", "nonfinite_gradient", "sigterm_as_interrupt"]


def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t.detach()).all())


def nonfinite_stats(total: torch.Tensor, stats: dict) -> str | None:
    """A description of the first non-finite quantity among the objective's outputs, or None."""
    parts = [
        v.detach().reshape(-1).to(total.dtype)
        for v in stats.values()
        if isinstance(v, torch.Tensor)
    ]
    if _finite(torch.cat([total.detach().reshape(-1), *parts])):  # one check (one sync)
        return None
    for key in ("kl", "recon", "loss"):
        v = stats.get(key)
        if isinstance(v, torch.Tensor) and not _finite(v):
            return f"the {key} ({'reconstruction loss' if key == 'recon' else key}) is {v.item()}"
    if not _finite(total):
        return f"the objective (estimator surrogate + KL) is {total.item()}"
    return None


def nonfinite_gradient(named: Sequence[tuple[str, nn.Parameter]]) -> str | None:
    """The first parameter whose gradient holds NaN or inf, described, or None."""
    grads = [p.grad for _, p in named if p.grad is not None]
    # one sum per tensor: NaN or inf anywhere makes it non-finite (no copy of the gradients)
    if not grads or _finite(torch.stack([g.sum(dtype=torch.float64) for g in grads])):
        return None
    for name, p in named:
        if p.grad is not None and not _finite(p.grad):
            return f"the gradient of parameter {name!r} holds NaN or inf"
    return None  # pragma: no cover - the concatenation found one


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
        problem = nonfinite_stats(total, stats)
    except NonFiniteError as e:
        problem = f"non-finite potentials or losses: {e}"
    optimizer.zero_grad(set_to_none=True)
    if problem is None:
        total.backward()
        problem = nonfinite_gradient(named_params)
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


def sigterm_as_interrupt() -> Callable[[], None]:
    """Make SIGTERM raise ``KeyboardInterrupt`` (main thread only); returns the undo function.

    The training loop then stops the same way on ``kill`` as on Ctrl-C: the checkpoint of the
    last finished epoch (written atomically) is intact and ``--resume`` continues from it.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        raise _Terminated(f"received signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)

"""The estimator protocol, its result type, the registry and shared helpers.

    result = est(potentials, loss_fn, **kw)
    result.surrogate.backward()

``loss_fn(z)`` takes float ``[B, C, n, K]`` (C candidate assignments per data point, one-hot or
relaxed) and returns ``[B, C]``. ``result.surrogate``'s gradient, with respect to the potentials
and to whatever ``loss_fn`` depends on, estimates the gradient of ``loss.mean()`` (batch mean).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..errors import NonFiniteError
from ..options import Option
from ..potentials import Potentials
from ..registry import Registry

__all__ = [
    "NonFiniteLossError",
    "Estimator",
    "EstimatorResult",
    "Started",
    "LossFn",
    "register_estimator",
    "get_estimator",
    "available_estimators",
    "one_hot",
    "evaluate_losses",
]

LossFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class EstimatorResult:
    """What an estimator returns.

    Attributes:
        z: long ``[B, n]`` the sampled assignment (the first sample when several are drawn).
        loss: ``[B]`` the loss at the sample (detached, for logging).
        surrogate: scalar; ``surrogate.backward()`` yields the gradient estimate of
            ``loss.mean()``.
        info: estimator-specific extras (e.g. ``z_eps``, ``eps``, ``temperature``).
    """

    z: torch.Tensor
    loss: torch.Tensor
    surrogate: torch.Tensor
    info: dict = field(default_factory=dict)


def one_hot(z: torch.Tensor, K: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot float ``[..., n, K]`` of long ``z`` ``[..., n]``."""
    return F.one_hot(z, K).to(dtype)


class NonFiniteLossError(NonFiniteError, FloatingPointError):
    """``loss_fn`` returned NaN or inf: raised by every estimator (through
    :func:`evaluate_losses`), naming the estimator (``estimator``) once known. Both a
    :class:`~structvae.errors.NonFiniteError` (a ``ValueError``) and a ``FloatingPointError``."""

    def __init__(self, message: str, estimator: str | None = None) -> None:
        super().__init__(message if estimator is None else f"estimator {estimator!r}: {message}")
        self.estimator = estimator


def _check_finite_losses(out: torch.Tensor, offset: int) -> None:
    finite = torch.isfinite(out.detach())
    if bool(finite.all()):
        return
    bad = (~finite).nonzero()
    row, col = bad[0].tolist()
    raise NonFiniteLossError(
        f"loss_fn returned NaN or inf ({bad.shape[0]} of {out.numel()} values, first "
        f"{float(out.detach()[row, col])} at row {row}, candidate {col + offset}); check the decoder (its "
        "inputs and parameters) before the encoder"
    )


def check_result(res: EstimatorResult) -> EstimatorResult:
    """``res`` unchanged, or :class:`NonFiniteLossError` when its loss at the sample is NaN/inf
    (for estimators that call ``loss_fn`` without :func:`evaluate_losses`)."""
    loss = res.loss.detach()
    if not bool(torch.isfinite(loss).all()):
        row = int((~torch.isfinite(loss)).nonzero()[0])
        raise NonFiniteLossError(
            f"loss_fn returned NaN or inf at the sample ({float(loss[row])} at row {row}); check "
            "the decoder (its inputs and parameters) before the encoder"
        )
    return res


@contextmanager
def naming(estimator: str) -> Iterator[None]:
    """Add the estimator's name to a :class:`NonFiniteLossError` raised inside."""
    try:
        yield
    except NonFiniteLossError as err:
        if err.estimator is not None:
            raise
        raise NonFiniteLossError(str(err), estimator) from None


def evaluate_losses(loss_fn: LossFn, z: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """``loss_fn`` over candidates ``z`` float ``[B, C, n, K]`` in chunks of ``chunk`` along C.

    Returns ``[B, C]``; checks the shape ``loss_fn`` returns, and that every loss is finite
    (:class:`NonFiniteLossError` otherwise: the one NaN / inf check of every estimator).
    """
    B, C = z.shape[:2]
    step = C if not chunk or chunk >= C else chunk
    parts = []
    for s in range(0, C, step):
        out = loss_fn(z[:, s : s + step])
        c = min(step, C - s)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (B, c):
            shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"loss_fn must map z of shape [B, C, n, K] = {list(z[:, s : s + step].shape)} "
                f"to losses of shape [B, C] = [{B}, {c}], got {shape}"
            )
        _check_finite_losses(out, s)
        parts.append(out)
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


@dataclass
class Started:
    """An estimate begun by :meth:`Estimator.begin`: the potentials, the keyword arguments and
    the estimator's own in-flight state (``state``, e.g. a future of ``z*``)."""

    potentials: Potentials
    kwargs: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)


class Estimator(ABC):
    """Base class of gradient estimators.

    Class attributes (what the training loop reads instead of probing the object):

    - ``options``: the constructor options a user may set (:class:`~structvae.options.Option`),
      e.g. ``eps``, ``temperature``, ``solver``;
    - ``supports_labels``: :meth:`estimate` takes ``labels=`` (long ``[B]`` or ``[B, n]``, -1
      where unlabelled) and uses z_ε = label on labelled rows;
    - ``uses_solver``: the estimator solves arg-max problems with a ``solver`` (an instance
      attribute, ``None`` until given one); the run gives it the model's one solver;
    - ``supports_edges`` (pairwise potentials accepted), ``relaxed`` (``loss_fn`` receives
      relaxed, non-one-hot inputs), ``unbiased``.

    The training loop calls :meth:`setup` once with the model's latent shape, :meth:`set_step`
    before every step (schedules of ε and temperature read ``iteration``), and checkpoints
    :meth:`state_dict`.
    """

    name: str = "estimator"
    options: ClassVar[tuple[Option, ...]] = ()
    supports_labels: ClassVar[bool] = False
    uses_solver: ClassVar[bool] = False
    supports_edges: bool = False
    relaxed: bool = False
    unbiased: bool = False

    def __init__(self) -> None:
        self.iteration = 0

    def setup(self, latent_shape: tuple[int, int] | int, num_categories: int | None = None):
        """Prepare for latents of shape ``(n, K)`` (``setup((n, K))`` or ``setup(n, K)``).

        The default does nothing; estimators with networks sized by the latents build them."""
        _latent_shape(latent_shape, num_categories)
        return self

    def set_step(self, iteration: int) -> None:
        """Tell the estimator the training iteration (schedules of ε / temperature follow it)."""
        self.iteration = int(iteration)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the estimator; ``{}`` for estimators without state."""
        return {}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> Any:
        """Restore :meth:`state_dict`; a no-op for estimators without state."""
        if strict and state:
            raise ValueError(
                f"estimator {self.name!r} keeps no state, but the checkpoint holds "
                f"{sorted(state)}; was it saved by another estimator?"
            )
        return None

    def check(self, potentials: Potentials) -> None:
        """Raise ``ValueError`` when ``potentials`` are unsupported, before any work."""
        if not isinstance(potentials, Potentials):
            raise ValueError(
                f"estimator {self.name!r} expects a structvae.Potentials, "
                f"got {type(potentials).__name__}"
            )
        if potentials.has_edges and not self.supports_edges:
            raise ValueError(
                f"estimator {self.name!r} handles independent latent variables only, but the "
                f"potentials have {potentials.num_edges} pairwise edges; use 'direct'"
            )

    @abstractmethod
    def estimate(self, potentials: Potentials, loss_fn: LossFn, **kw) -> EstimatorResult:
        """Compute the result; ``potentials`` already passed :meth:`check`."""

    def __call__(self, potentials: Potentials, loss_fn: LossFn, **kw) -> EstimatorResult:
        self.check(potentials)
        with naming(self.name):
            return check_result(self.estimate(potentials, loss_fn, **kw))

    def begin(self, potentials: Potentials, **kw) -> Started:
        """Check ``potentials`` and start the work that needs no loss (e.g. a solve on a thread
        pool); :meth:`finish` completes it. ``finish(begin(p, **kw), loss_fn)`` equals
        ``self(p, loss_fn, **kw)``; between the two the caller may compute other terms (the
        model's KL) while the started work runs. The default starts nothing."""
        self.check(potentials)
        return Started(potentials, kw)

    def finish(self, started: Started, loss_fn: LossFn) -> EstimatorResult:
        """Complete an estimate started by :meth:`begin`."""
        with naming(self.name):
            return check_result(self.estimate(started.potentials, loss_fn, **started.kwargs))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _latent_shape(latent_shape, num_categories) -> tuple[int, int]:
    """``(n, K)`` from ``setup``'s two call forms, or ``ValueError``."""
    if num_categories is not None:
        shape = (latent_shape, num_categories)
    elif isinstance(latent_shape, (tuple, list)) and len(latent_shape) == 2:
        shape = tuple(latent_shape)
    else:
        raise ValueError(f"setup needs the latent shape (n, K), got {latent_shape!r}")
    n, k = (int(v) for v in shape)
    if n < 1 or k < 1:
        raise ValueError(f"setup needs n >= 1 variables and K >= 1 states, got {shape}")
    return n, k


_REGISTRY: Registry[Estimator] = Registry(
    "estimator", " (register your own with structvae.estimators.register_estimator)"
)


def register_estimator(name: str, *, overwrite: bool = False):
    """Class decorator: ``@register_estimator("mine")`` makes ``get_estimator("mine")`` build it."""

    def deco(cls):
        if not (isinstance(cls, type) and issubclass(cls, Estimator)):
            raise ValueError(f"register_estimator expects an Estimator subclass, got {cls!r}")
        if cls.name == Estimator.name:
            cls.name = name
        _REGISTRY.add(name, cls, overwrite=overwrite)
        return cls

    return deco


def get_estimator(name: str | Estimator, **options) -> Estimator:
    """Build the registered estimator ``name`` with ``options`` (an instance passes through)."""
    if isinstance(name, Estimator):
        if options:
            raise ValueError("options cannot be applied to an already-built Estimator instance")
        return name
    return _REGISTRY.build(name, **options)


def available_estimators() -> list[str]:
    """Names of the registered estimators, sorted."""
    return _REGISTRY.names()

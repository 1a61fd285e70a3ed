"""Schedules for hyper-parameters that change with the training iteration (ε, temperature)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

__all__ = [
    "Schedule",
    "Constant",
    "ExponentialDecay",
    "as_schedule",
    "paper_eps",
    "paper_temperature",
]


class Schedule(ABC):
    """A value as a function of the training iteration: ``schedule(iteration) -> float``."""

    @abstractmethod
    def __call__(self, iteration: int) -> float:
        """The value at ``iteration``."""


@dataclass(frozen=True)
class Constant(Schedule):
    value: float

    def __call__(self, iteration: int) -> float:
        return self.value


@dataclass(frozen=True)
class ExponentialDecay(Schedule):
    """``max(start * exp(-rate * t), minimum)`` with ``t`` the iteration rounded down to a
    multiple of ``every`` (the value changes every ``every`` iterations)."""

    start: float = 1.0
    rate: float = 1e-5
    every: int = 500
    minimum: float = 0.1

    def __call__(self, iteration: int) -> float:
        t = (int(iteration) // self.every) * self.every
        return max(self.start * math.exp(-self.rate * t), self.minimum)


def paper_eps(start: float = 1.0) -> ExponentialDecay:
    """The direct-optimization paper's ε: ε₀ · exp(−1e-5 · t) every 500 iterations, ≥ 0.1."""
    return ExponentialDecay(start=start, rate=1e-5, every=500, minimum=0.1)


def paper_temperature(start: float = 1.0) -> ExponentialDecay:
    """Jang et al.'s annealing as in the reference code: τ₀ · exp(−1e-5 · t) every 1000, ≥ 0.1."""
    return ExponentialDecay(start=start, rate=1e-5, every=1000, minimum=0.1)


def as_schedule(value: float | Schedule, name: str) -> Schedule:
    """A float becomes :class:`Constant`; a schedule passes through; checks positivity."""
    if isinstance(value, Schedule):
        return value
    if callable(value):
        return _Callable(value)
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite number or a Schedule, got {value!r}")
    return Constant(v)


@dataclass(frozen=True)
class _Callable(Schedule):
    fn: object

    def __call__(self, iteration: int) -> float:
        return float(self.fn(iteration))

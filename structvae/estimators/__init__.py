"""Gradient estimators behind one protocol: ``est(potentials, loss_fn) -> EstimatorResult``."""

from .base import (
    Estimator,
    EstimatorResult,
    Started,
    available_estimators,
    evaluate_losses,
    get_estimator,
    one_hot,
    register_estimator,
)
from .direct import DirectEstimator, coordinate_candidates
from .exact import ExactEstimator
from .gumbel_softmax import GumbelSoftmaxEstimator
from .schedules import Constant, ExponentialDecay, Schedule, paper_eps, paper_temperature

__all__ = [
    "Estimator",
    "EstimatorResult",
    "Started",
    "available_estimators",
    "evaluate_losses",
    "get_estimator",
    "one_hot",
    "register_estimator",
    "DirectEstimator",
    "coordinate_candidates",
    "ExactEstimator",
    "GumbelSoftmaxEstimator",
    "Schedule",
    "Constant",
    "ExponentialDecay",
    "paper_eps",
    "paper_temperature",
]

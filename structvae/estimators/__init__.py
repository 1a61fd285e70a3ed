"""Gradient estimators behind one protocol: ``est(potentials, loss_fn) -> EstimatorResult``."""

# baseline estimators (issue 6)
from .arm import ARMEstimator
from .base import (
    Estimator,
    EstimatorResult,
    NonFiniteLossError,
    Started,
    available_estimators,
    evaluate_losses,
    get_estimator,
    one_hot,
    register_estimator,
)
from .common import ModuleEstimator
from .dab import DABEstimator
from .direct import DirectEstimator, coordinate_candidates
from .exact import ExactEstimator
from .gumbel_softmax import GumbelSoftmaxEstimator
from .muprop import MuPropEstimator
from .rebar import RebarEstimator, RelaxEstimator
from .reinforce import LeaveOneOutReinforceEstimator, NVILEstimator, ReinforceEstimator
from .schedules import Constant, ExponentialDecay, Schedule, paper_eps, paper_temperature
from .straight_through import (
    DeterministicSTEstimator,
    IdentitySTEstimator,
    NoiseSTEstimator,
    StraightThroughGumbelSoftmax,
)

__all__ = [
    "Estimator",
    "EstimatorResult",
    "NonFiniteLossError",
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
    "ModuleEstimator",
    "ReinforceEstimator",
    "NVILEstimator",
    "LeaveOneOutReinforceEstimator",
    "MuPropEstimator",
    "RebarEstimator",
    "RelaxEstimator",
    "ARMEstimator",
    "IdentitySTEstimator",
    "NoiseSTEstimator",
    "DeterministicSTEstimator",
    "StraightThroughGumbelSoftmax",
    "DABEstimator",
]

"""The gradient-quality lab: exact encoder gradients by enumeration against every estimator.

    from structvae.lab import LabConfig, run_lab
    rows = run_lab(LabConfig(latents=["1x10"], estimators=["direct", "exact"], eps=[0.1, 1]))

or ``structvae gradients --help``. See docs/gradients.md.
"""

from .gradients import (
    encoder_gradients,
    exact_gradient,
    fixed_loss,
    gradient_metrics,
    sample_gradients,
    time_estimate,
)
from .measure import METRICS, build_lab_estimator, expand_specs, measure_point, parse_estimator_spec
from .report import markdown_table, write_csv, write_plots
from .run import LabConfig, run_lab
from .trajectory import initial_model, load_run_model, trajectory_models

__all__ = [
    "exact_gradient",
    "sample_gradients",
    "gradient_metrics",
    "time_estimate",
    "encoder_gradients",
    "fixed_loss",
    "METRICS",
    "parse_estimator_spec",
    "expand_specs",
    "build_lab_estimator",
    "measure_point",
    "markdown_table",
    "write_csv",
    "write_plots",
    "LabConfig",
    "run_lab",
    "load_run_model",
    "initial_model",
    "trajectory_models",
]

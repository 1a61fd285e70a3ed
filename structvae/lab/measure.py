"""Estimator specs and the measurement of every chosen estimator at one model and data batch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import contextmanager

import torch
from torch import nn
from tqdm.auto import tqdm

from ..estimators import Estimator, available_estimators, get_estimator
from ..estimators.schedules import Schedule
from ..potentials import Potentials
from ..training.specs import convert_options, parse_spec
from ..training.specs import estimator_options as declared_estimator_options
from .gradients import (
    encoder_gradients,
    exact_gradient,
    gradient_metrics,
    sample_gradients,
    time_estimate,
)

__all__ = [
    "parse_estimator_spec",
    "expand_specs",
    "build_lab_estimator",
    "estimator_options",
    "measure_point",
    "METRICS",
]

METRICS = (
    "grad_norm",
    "bias_norm",
    "bias_rel",
    "bias_debiased",
    "variance",
    "variance_rel",
    "rmse",
    "cosine",
    "expected_improvement",
    "ei_rel",
)
SWEPT = ("eps", "temperature")


def parse_estimator_spec(spec: str) -> tuple[str, dict]:
    """``"direct:eps=0.1,solver=exact"`` -> ``("direct", {"eps": 0.1, "solver": "exact"})``.

    The one spec parser (:func:`structvae.training.specs.parse_spec`); values are converted by
    the options the estimator declares. Raises ValueError for an unknown estimator name, an
    option without ``=``, an option the estimator does not declare or a bad value.
    """
    parsed = parse_spec(spec)
    if parsed.name not in available_estimators():
        raise ValueError(
            f"unknown estimator {parsed.name!r} in spec {spec!r}; available: "
            f"{', '.join(available_estimators())}"
        )
    declared = declared_estimator_options(parsed.name)
    return parsed.name, convert_options(parsed.options, declared, f"estimator spec {spec!r}")


def estimator_options(name: str) -> set[str]:
    """The names of the options the registered estimator ``name`` declares."""
    return {o.name for o in declared_estimator_options(name)}


def expand_specs(
    specs: Sequence[str],
    eps: Sequence[float] | None = None,
    temperature: Sequence[float] | None = None,
) -> list[str]:
    """Specs with the ε / τ sweeps applied: a spec whose estimator takes ``eps`` (``temperature``)
    and does not set it becomes one spec per swept value; ``"all"`` means every registered
    estimator. Every name is checked (ValueError) before any work."""
    names = list(specs)
    if "all" in names:
        i = names.index("all")
        names[i : i + 1] = [n for n in available_estimators() if n not in names]
    out: list[str] = []
    for spec in names:
        name, opts = parse_estimator_spec(spec)
        takes = estimator_options(name)
        variants = [spec]
        for key, values in (("eps", eps), ("temperature", temperature)):
            if values and key in takes and key not in opts:
                sep = "," if ":" in spec else ":"
                variants = [f"{v}{sep}{key}={x:g}" for v in variants for x in values]
        out += [v for v in variants if v not in out]
    return out


def build_lab_estimator(
    spec: str, state: dict | None = None, latent_shape: tuple[int, int] | None = None
) -> tuple[Estimator, str]:
    """The estimator of ``spec`` and a note for the table (learned parts, loaded state).

    The estimator is set up (``setup((n, K))``: networks sized by the latents) for
    ``latent_shape`` first, as the training loop does. An estimator that is an ``nn.Module`` with
    parameters (a learned baseline, control variate or bridge) runs as built, its learned parts
    at their initialisation, unless ``state`` (its ``state_dict`` from a training checkpoint of
    the same estimator) is given.
    """
    name, opts = parse_estimator_spec(spec)
    try:
        est = get_estimator(name, **opts)
    except (TypeError, ValueError) as e:
        raise ValueError(f"estimator spec {spec!r}: {e}") from None
    if latent_shape is not None:
        est.setup(tuple(latent_shape))
    note = ""
    if isinstance(est, nn.Module) and any(True for _ in est.parameters()):
        if state is not None:
            est.load_state_dict(state)
            note = "learned parts from the checkpoint"
        else:
            note = "learned parts untrained (initialisation)"
    return est, note


def _current(est: Estimator, key: str, opts: dict):
    if key in opts:
        return float(opts[key])
    value = getattr(est, key, None)
    if isinstance(value, Schedule):
        return float(value(est.iteration))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def measure_point(
    model: nn.Module,
    x: torch.Tensor,
    specs: Sequence[str],
    repeats: int = 100,
    *,
    mode: str = "repeat",
    params: bool = False,
    seed: int = 0,
    max_assignments: int = 4096,
    timing_repeats: int = 3,
    warmup: int = 5,
    max_rows: int = 500,
    estimator_state: dict[str, dict] | None = None,
    extra: dict | None = None,
    quiet: bool = True,
) -> list[dict]:
    """Measure every estimator spec at ``model`` on the batch ``x [B, D]``.

    Returns one row per (spec, ``wrt``) with ``wrt`` = ``"potentials"`` (the gradient w.r.t.
    θ ``[B, n, K]``) and, with ``params``, ``"encoder"`` (w.r.t. the encoder's parameters).
    A row holds ``extra``, the spec, ``estimator``, ``eps`` / ``temperature`` when the estimator
    has them, :data:`METRICS`, ``time_s`` (median seconds per estimate on the batch),
    ``expected_loss`` (mean E_q[L]), ``repeats``, ``batch`` and ``note``: an estimator that refuses
    the latent shape, or fails, gets a row with a note and no metrics instead of an error.

    Each estimator is first called ``warmup`` times on the batch (estimates discarded), so that
    running statistics (moving-average baselines, NVIL's centring) start from the batch's scale
    rather than from their initial values; they keep updating while the R estimates are drawn.
    The decoder's parameters are frozen meanwhile (only gradients w.r.t. θ are measured, so no
    decoder-parameter graph is built; relaxed estimators still differentiate through z), and
    ``time_s`` excludes the decoder-parameter gradient a training step would also compute.
    """
    model.eval()
    x = x.to(next(model.parameters()).device)
    with frozen(model.decoder):
        return _measure(model, x, specs, repeats, mode, params, seed, max_assignments,
                        timing_repeats, warmup, max_rows, estimator_state or {}, extra or {},
                        quiet)  # fmt: skip


@contextmanager
def frozen(module: nn.Module):
    """Parameters of ``module`` do not require gradients inside the block."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p in params:
            p.requires_grad_(True)


def _measure(model, x, specs, repeats, mode, params, seed, max_assignments, timing_repeats,
             warmup, max_rows, estimator_state, extra, quiet) -> list[dict]:  # fmt: skip
    """The body of :func:`measure_point` (arguments as there)."""
    with torch.enable_grad():
        pot_graph = model.encode(x)
    theta = pot_graph.unary
    B, n, K = theta.shape
    loss_fn = model.loss_fn(x)
    g, expected = exact_gradient(theta, loss_fn, max_assignments)
    enc_params = [p for p in model.encoder.parameters()] if params else []
    g_enc = encoder_gradients(theta, enc_params, g[None])[0] if params else None
    base = dict(extra)
    base.update(
        {"latent": f"{n}x{K}", "n": n, "K": K, "batch": B, "expected_loss": float(expected.mean())}
    )
    rows = []
    bar = tqdm(total=len(specs) * repeats, disable=quiet, leave=False, desc="estimates")
    for spec in specs:
        name, opts = parse_estimator_spec(spec)
        row = dict(base, spec=spec, estimator=name, repeats=repeats, wrt="potentials")
        try:
            est, note = build_lab_estimator(spec, estimator_state.get(name), (n, K))
            if isinstance(est, nn.Module):
                est.to(x.device)
            row.update({k: _current(est, k, opts) for k in SWEPT})
            est.check(Potentials(theta.detach()))
        except ValueError as e:
            rows.append(dict(row, note=f"skipped: {e}"))
            bar.update(repeats)
            continue
        try:
            torch.manual_seed(seed)
            if warmup > 0:
                sample_gradients(est, theta, lambda c: loss_fn, max(2, warmup), mode="loop")
            samples = sample_gradients(
                est,
                theta,
                lambda c: model.loss_fn(x.repeat(c, 1)),
                repeats,
                mode=mode,
                max_rows=max_rows,
                progress=bar.update,
            )
            seconds = time_estimate(est, theta, loss_fn, timing_repeats)
        except Exception as e:  # an estimator failing at this point must not end the sweep
            rows.append(dict(row, note=f"failed: {type(e).__name__}: {e}"))
            continue
        if not bool(torch.isfinite(samples).all()):
            note = (note + "; " if note else "") + "non-finite estimates"
        rows.append(dict(row, **gradient_metrics(g, samples), time_s=seconds, note=note))
        if params:
            s_enc = encoder_gradients(theta, enc_params, samples)
            enc = dict(row, wrt="encoder", time_s=seconds, note=note)
            rows.append(dict(enc, **gradient_metrics(g_enc, s_enc)))
    bar.close()
    for r in rows:
        for k in (*METRICS, "time_s", *SWEPT):
            r.setdefault(k, None)
    return rows


def is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))

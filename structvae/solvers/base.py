"""The solver protocol, the registry, and the adapter for plain functions.

A solver maps a batch of :class:`~structvae.Potentials` to exact (or declared inexact)
maximisers ``z`` long ``[B, n]`` on the potentials' device::

    z = solver(potentials)               # check(), then solve()
    z = solver(potentials, hint=z_star)  # a warm start, where the solver can use one
"""

from __future__ import annotations

import inspect
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..errors import NonFiniteError, SolverError
from ..potentials import Potentials
from ..registry import Registry

__all__ = [
    "Solver",
    "SolverError",
    "InvalidSolutionError",
    "SolverWarning",
    "FunctionSolver",
    "register",
    "get_solver",
    "available_solvers",
    "solver_from_function",
]


class SolverWarning(UserWarning):
    """A solver returned an assignment it could not prove optimal (e.g. a time limit)."""


class InvalidSolutionError(SolverError, ValueError):
    """A solver returned something that is not an assignment of the problem (wrong shape,
    non-integer or out-of-range values). Both a :class:`~structvae.errors.SolverError` (the run
    stops with a one-line error naming the solver) and a ``ValueError``."""


class Solver(ABC):
    """Base class of arg-max solvers.

    Subclasses implement :meth:`solve` and declare what they accept:

    - ``exact``: True when every returned assignment is a maximiser.
    - ``supports_edges``: False for solvers of independent variables.
    - ``num_states``: the only K accepted (e.g. 2 for graph cut), or None for any K.
    - ``uses_hint``: True when :meth:`solve` uses a warm-start assignment.
    - ``supermodular_only``: True when the solver is exact only on supermodular pairwise
      tables (graph cut); :func:`~structvae.solvers.select` then refuses general couplings.

    ``last_optimal`` (bool ``[B]`` or None) records, after each call, which samples were
    proven optimal; solvers that are exact by construction leave it None.
    """

    name: str = "solver"
    exact: bool = True
    supports_edges: bool = True
    num_states: int | None = None
    uses_hint: bool = False
    supermodular_only: bool = False

    def __init__(self) -> None:
        self.last_optimal: torch.Tensor | None = None

    # -- what it accepts ---------------------------------------------------
    def check(self, potentials: Potentials) -> None:
        """Raise ``ValueError`` saying why ``potentials`` is unsupported (before any solving)."""
        if not isinstance(potentials, Potentials):
            raise ValueError(
                f"solver {self.name!r} expects a structvae.Potentials, got {type(potentials).__name__}"
            )
        if potentials.has_edges and not self.supports_edges:
            raise ValueError(
                f"solver {self.name!r} solves independent variables only, but the potentials have "
                f"{potentials.num_edges} edges; use 'exact', 'tree', 'graphcut' or 'ilp'"
            )
        if self.num_states is not None and potentials.num_states != self.num_states:
            raise ValueError(
                f"solver {self.name!r} needs K = {self.num_states} states per variable, "
                f"got K = {potentials.num_states}"
            )
        _check_magnitude(potentials, self.name)

    def supports(self, potentials: Potentials) -> bool:
        """True when :meth:`check` accepts ``potentials``."""
        try:
            self.check(potentials)
        except ValueError:
            return False
        return True

    # -- solving ------------------------------------------------------------
    @abstractmethod
    def solve(self, potentials: Potentials, hint: torch.Tensor | None = None) -> torch.Tensor:
        """Return maximisers long ``[B, n]``; ``potentials`` already passed :meth:`check`."""

    def __call__(self, potentials: Potentials, hint: torch.Tensor | None = None) -> torch.Tensor:
        self.check(potentials)
        if hint is not None:
            hint = _check_assignment(hint, potentials, f"hint given to solver {self.name!r}")
        self.last_optimal = None
        try:
            z = self.solve(potentials, hint=hint)
        except (ValueError, SolverError):
            raise  # unsupported input, or a failure the solver already described
        except Exception as err:
            B, n, K = potentials.unary.shape
            raise SolverError(
                f"solver {self.name!r} failed on a batch of {B} problem(s) (n = {n}, K = {K}, "
                f"{potentials.num_edges} edges): {type(err).__name__}: {err}"
            ) from err
        who = f"solver {self.name!r} returned an assignment that"
        return _check_assignment(z, potentials, who, InvalidSolutionError)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, exact={self.exact})"


def _check_magnitude(p: Potentials, name: str) -> None:
    """Refuse potentials whose scores could overflow: every solver sums (and reparametrises)
    up to ``n + E`` table entries, so ``sum_i max|unary_i| + sum_e max|pairwise_e|`` must stay
    below ``finfo.max / 8`` of the computing dtype (float32 or wider). Else an infinite score
    would make a wrong assignment look optimal."""
    if p.batch_size == 0:
        return
    bound = p.unary.detach().abs().amax(-1).double().sum(-1)
    if p.has_edges:
        bound = bound + p.pairwise.detach().abs().flatten(2).amax(-1).double().sum(-1)
    dtype = torch.promote_types(p.dtype, torch.float32)
    limit = torch.finfo(dtype).max / 8
    ok = bound < limit
    if not bool(ok.all()):
        b = int((~ok).nonzero()[0])
        if not bool(torch.isfinite(bound[b])):
            what = "NaN" if bool(torch.isnan(bound[b])) else "inf"
            raise NonFiniteError(
                f"solver {name!r}: the potentials of sample {b} hold {what} (built with "
                "validate=False?); check the encoder's outputs"
            )
        raise ValueError(
            f"solver {name!r}: the scores of sample {b} may overflow {dtype} (the sum of the "
            f"largest |entry| of each unary and pairwise table is {float(bound[b]):.3g}, above "
            f"{limit:.3g}); rescale the potentials (the arg max does not change) or use float64"
        )


def _check_assignment(
    z, potentials: Potentials, who: str, error: type[ValueError] = ValueError
) -> torch.Tensor:
    """``z`` as long ``[B, n]`` in ``[0, K)`` on the potentials' device, else ``error``."""
    B, n, K = potentials.unary.shape
    z = torch.as_tensor(z)
    if tuple(z.shape) != (B, n):
        raise error(f"{who} has shape {list(z.shape)}; expected [B, n] = [{B}, {n}]")
    if z.is_floating_point():
        if not bool((z == z.round()).all()):
            raise error(f"{who} contains non-integer values")
    z = z.to(device=potentials.device, dtype=torch.long)
    if z.numel() and (int(z.min()) < 0 or int(z.max()) >= K):
        bad = ((z < 0) | (z >= K)).nonzero()[0].tolist()
        raise error(
            f"{who} holds values outside [0, {K - 1}] (first at sample {bad[0]}, variable {bad[1]})"
        )
    return z


# --------------------------------------------------------------------- registry
_REGISTRY: Registry[Solver] = Registry(
    "solver", " (register your own with structvae.solvers.register)"
)


def register(name: str, *, overwrite: bool = False):
    """Class/factory decorator: ``@register("mine")`` makes ``get_solver("mine")`` build it.

    Works on a :class:`Solver` subclass (options go to its constructor) or on a plain
    per-problem function ``f(unary [n, K], edges [E, 2], pairwise [E, K, K]) -> z [n]``
    (numpy arrays), which is wrapped in :class:`FunctionSolver` (options go to its constructor).
    """

    def deco(obj):
        if inspect.isclass(obj) and issubclass(obj, Solver):
            factory = obj
            if obj.name == Solver.name:
                obj.name = name
        else:

            def factory(**options):
                return FunctionSolver(obj, name=name, **options)

        _REGISTRY.add(name, factory, overwrite=overwrite)
        return obj

    return deco


def get_solver(name: str | Solver, **options) -> Solver:
    """Build the registered solver ``name`` with ``options`` (a Solver instance passes through)."""
    if isinstance(name, Solver):
        if options:
            raise ValueError("options cannot be applied to an already-built Solver instance")
        return name
    return _REGISTRY.build(name, **options)


def available_solvers() -> list[str]:
    """Names of the registered solvers, sorted."""
    return _REGISTRY.names()


# ------------------------------------------------------------ plain functions
class FunctionSolver(Solver):
    """Wrap ``fn(unary [n, K], edges [E, 2], pairwise [E, K, K]) -> z [n]`` (numpy) as a Solver.

    The function sees one problem at a time as float64/int64 numpy arrays, **read-only**: they
    may share memory with the caller's potentials, so a function that writes to them raises an
    error naming the solver (copy them first, ``unary = unary.copy()``, to work in place). With
    ``workers > 1`` the batch's problems run in a thread pool (useful when ``fn`` releases
    the GIL, as most compiled solvers do). ``exact`` declares whether ``fn`` is exact.
    """

    def __init__(
        self,
        fn: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
        *,
        name: str | None = None,
        exact: bool = True,
        supports_edges: bool = True,
        num_states: int | None = None,
        workers: int = 1,
    ) -> None:
        super().__init__()
        if not callable(fn):
            raise ValueError(f"FunctionSolver needs a callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "function")
        self.exact = exact
        self.supports_edges = supports_edges
        self.num_states = num_states
        self.workers = max(1, int(workers or os.cpu_count() or 1))

    def solve(self, potentials: Potentials, hint: torch.Tensor | None = None) -> torch.Tensor:
        unary, edges, pairwise = potentials.numpy()
        for array in (unary, edges, pairwise):
            array.setflags(write=False)  # views of the caller's tensors: never written
        B, n, _ = unary.shape

        def one(b: int) -> np.ndarray:
            try:
                out = np.asarray(self.fn(unary[b], edges, pairwise[b]))
            except ValueError as err:
                if "read-only" in str(err):
                    raise SolverError(
                        f"solver {self.name!r} wrote to its input arrays on sample {b}; they are "
                        "read-only views of the caller's potentials: copy them first "
                        "(e.g. unary = unary.copy())"
                    ) from err
                raise SolverError(f"solver {self.name!r} failed on sample {b}: {err}") from err
            except Exception as err:
                raise SolverError(f"solver {self.name!r} failed on sample {b}: {err}") from err
            if out.shape != (n,):
                raise InvalidSolutionError(
                    f"solver {self.name!r} returned shape {list(out.shape)} for sample {b}; "
                    f"expected [n] = [{n}]"
                )
            return out

        if self.workers > 1 and B > 1:
            with ThreadPoolExecutor(self.workers) as pool:
                rows = list(pool.map(one, range(B)))
        else:
            rows = [one(b) for b in range(B)]
        z = np.stack(rows) if rows else np.zeros((0, n), dtype=np.int64)
        return torch.as_tensor(z, device=potentials.device)


def solver_from_function(fn: Callable, **options) -> FunctionSolver:
    """``FunctionSolver(fn, **options)``: a Solver from a per-problem numpy function."""
    return FunctionSolver(fn, **options)


def warn_not_optimal(solver: Solver, optimal: torch.Tensor) -> None:
    """Emit a :class:`SolverWarning` naming the samples not proven optimal."""
    bad = (~optimal).nonzero().flatten().tolist()
    if bad:
        warnings.warn(
            f"solver {solver.name!r}: {len(bad)} sample(s) not proven optimal "
            f"(first: {bad[:8]}); see solver.last_optimal",
            SolverWarning,
            stacklevel=3,
        )

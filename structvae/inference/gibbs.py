"""The Gibbs distribution ``q(z) ∝ exp h(z)`` of pairwise potentials, as a torch distribution.

In the style of pytorch-struct's structured distributions: built from a batch of
:class:`~structvae.Potentials`, it exposes the log-partition function, marginals, entropy,
KL divergences, exact samples, log-probabilities and the arg max, each computed exactly by a
backend chosen from the structure:

==============  ============================================  ===============================
backend         handles                                       cost per sample
==============  ============================================  ===============================
``forest``      no edges, or a forest; any K, any n           O(n K^2): sum-product
``split``       K = 2, any edges, n <= 26                     O(2^n), cache-sized chunks
``enumerate``   any K, any edges, K^n <= ``max_assignments``  O(K^n (n + E)), memory B K^n
==============  ============================================  ===============================

``backend="auto"`` picks the first that applies, in this order; anything else is a
``ValueError`` that says why each backend refused.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Distribution, constraints, register_kl

from ..potentials import Potentials
from ..solvers.enumeration import DEFAULT_MAX_ASSIGNMENTS
from .backend import Backend, Marginals
from .enumerate import EnumerateBackend
from .forest import ForestBackend
from .split import SplitBackend

__all__ = ["Gibbs", "BACKENDS", "select_backend"]

BACKENDS: dict[str, type[Backend]] = {
    "forest": ForestBackend,
    "split": SplitBackend,
    "enumerate": EnumerateBackend,
}
"""The exact backends, in the order ``backend="auto"`` tries them."""


def select_backend(
    potentials: Potentials, backend: str = "auto", max_assignments: int = DEFAULT_MAX_ASSIGNMENTS
) -> Backend:
    """The backend instance for ``potentials``: ``backend`` by name, or the first of
    :data:`BACKENDS` that can handle the structure (``"auto"``). ``ValueError`` otherwise."""
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(
            f"Gibbs: unknown backend {backend!r}; choose 'auto' or one of {sorted(BACKENDS)}"
        )
    names = list(BACKENDS) if backend == "auto" else [backend]
    reasons = []
    for name in names:
        why = BACKENDS[name].refusal(potentials, max_assignments=max_assignments)
        if why is None:
            cls = BACKENDS[name]
            if cls is EnumerateBackend:
                return cls(potentials, max_assignments)
            return cls(potentials)
        reasons.append(f"{name}: {why}")
    p = potentials
    raise ValueError(
        f"Gibbs: no exact backend for n = {p.num_vars}, K = {p.num_states}, {p.num_edges} edges "
        f"({'; '.join(reasons)}); use a forest graph, fewer variables, or raise max_assignments"
    )


class Gibbs(Distribution):
    """``q(z) ∝ exp h(z)`` over ``z`` long ``[n]`` in ``{0..K-1}^n``, a batch of ``B``.

    Args:
        potentials: the scores ``h`` (:class:`~structvae.Potentials`, any device, float32/64).
        backend: ``"auto"`` (default), ``"forest"``, ``"split"`` or ``"enumerate"``.
        max_assignments: the enumeration backend's limit on ``K^n`` (default ``2^22``).

    ``batch_shape`` is ``(B,)``, ``event_shape`` ``(n,)``. Everything is differentiable in
    the potentials except :meth:`sample` and :attr:`argmax`; the split backend's KL and
    entropy are differentiable once (a fused pass), its marginals through plain autograd.
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(
        self,
        potentials: Potentials,
        backend: str = "auto",
        max_assignments: int = DEFAULT_MAX_ASSIGNMENTS,
        validate_args: bool | None = False,
    ) -> None:
        if not isinstance(potentials, Potentials):
            raise ValueError(
                f"Gibbs expects a structvae.Potentials, got {type(potentials).__name__}"
            )
        self.potentials = potentials
        self._backend = select_backend(potentials, backend, max_assignments)
        super().__init__(
            torch.Size([potentials.batch_size]),
            torch.Size([potentials.num_vars]),
            validate_args=validate_args,
        )

    def __repr__(self) -> str:
        p = self.potentials
        return (
            f"Gibbs(B={p.batch_size}, n={p.num_vars}, K={p.num_states}, E={p.num_edges}, "
            f"backend={self.backend!r})"
        )

    @property
    def backend(self) -> str:
        """The name of the backend in use."""
        return self._backend.name

    @property
    def support(self):  # noqa: D102
        return constraints.integer_interval(0, self.potentials.num_states - 1)

    # ---------------------------------------------------------------- quantities
    @property
    def log_partition(self) -> torch.Tensor:
        """``log Σ_z exp h(z)`` ``[B]``."""
        return self._backend.log_partition()

    @property
    def marginals(self) -> Marginals:
        """``Marginals(unary [B, n, K], pairwise [B, E, K, K])``: ``q(z_i = k)`` and
        ``q(z_i = a, z_j = c)`` per edge ``(i, j)``."""
        return self._backend.marginals()

    def entropy(self) -> torch.Tensor:
        """``H(q)`` ``[B]`` in nats."""
        return self._backend.entropy()

    def kl_to_uniform(self) -> torch.Tensor:
        """``KL(q || uniform)`` ``[B]`` (the KL term of a VAE with a uniform prior)."""
        return self._backend.kl_to_uniform()

    def kl(self, other: Gibbs) -> torch.Tensor:
        """``KL(self || other)`` ``[B]`` for ``other`` on the same edges, or without edges
        (e.g. a factorised q): ``<mu, h - h_other> - log Z + log Z_other``."""
        p, r = self.potentials, other.potentials
        if r.unary.shape != p.unary.shape or r.batch_size != p.batch_size:
            raise ValueError(
                f"Gibbs.kl: shapes differ: [B, n, K] = {list(p.unary.shape)} vs "
                f"{list(r.unary.shape)}"
            )
        if r.has_edges and not torch.equal(r.edges, p.edges):
            raise ValueError("Gibbs.kl: other must have the same edges as self, or no edges")
        mu = self.marginals
        diff = (mu.unary * (p.unary - r.unary)).flatten(1).sum(1)
        if p.has_edges:
            pw = p.pairwise - r.pairwise if r.has_edges else p.pairwise
            diff = diff + (mu.pairwise * pw).flatten(1).sum(1)
        return diff - self.log_partition + other.log_partition

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log q(z)`` for ``z`` long ``[..., B, n]``: ``[..., B]``."""
        B, n = self.potentials.batch_size, self.potentials.num_vars
        if value.dim() < 2 or value.shape[-2:] != (B, n):
            raise ValueError(
                f"Gibbs.log_prob: z must have shape [..., B, n] = [..., {B}, {n}], "
                f"got {list(value.shape)}"
            )
        lead = value.shape[:-2]
        z = value.reshape(-1, B, n).transpose(0, 1).long()  # [B, S, n]
        return self._backend.log_prob(z).transpose(0, 1).reshape(*lead, B)

    def sample(
        self, sample_shape: torch.Size | tuple = (), generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Exact independent draws: long ``[*sample_shape, B, n]``."""
        shape = torch.Size(sample_shape)
        z = self._backend.sample(math.prod(shape), generator)
        return z.reshape(*shape, *z.shape[1:])

    @property
    def argmax(self) -> torch.Tensor:
        """A most probable assignment per row (the MAP): long ``[B, n]``."""
        return self._backend.argmax()

    @property
    def mode(self) -> torch.Tensor:  # noqa: D102
        return self.argmax

    def enumerate_log_probs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All assignments ``[K^n, n]`` and their ``log q`` ``[B, K^n]`` (lexicographic order,
        as :func:`structvae.solvers.all_assignments`); needs ``K^n <= max_assignments``."""
        b = self._backend
        if not isinstance(b, EnumerateBackend):
            b = EnumerateBackend(
                self.potentials, getattr(b, "max_assignments", DEFAULT_MAX_ASSIGNMENTS)
            )
            why = b.refusal(self.potentials, max_assignments=b.max_assignments)
            if why:
                raise ValueError(f"Gibbs.enumerate_log_probs: {why}")
        return b.support(), b.log_probs()


@register_kl(Gibbs, Gibbs)
def _kl_gibbs(p: Gibbs, q: Gibbs) -> torch.Tensor:
    return p.kl(q)

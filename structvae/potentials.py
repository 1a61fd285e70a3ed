"""Potentials: a batch of discrete scoring problems with unary and pairwise terms.

The score of an assignment ``z`` (``n`` variables, ``K`` values each) is

    h(z) = sum_i unary[i, z_i] + sum_e pairwise[e, z_{edges[e,0]}, z_{edges[e,1]}]

Edges are shared by the batch; unary and pairwise tables are per sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from .errors import NonFiniteError

__all__ = ["Potentials", "BinaryForm"]


def _check_finite(name: str, t: torch.Tensor) -> None:
    if not bool(torch.isfinite(t).all()):
        bad = (~torch.isfinite(t)).nonzero()[0].tolist()
        raise NonFiniteError(
            f"Potentials.{name} contains NaN or inf (first at index {tuple(bad)}); "
            "check the encoder output or the loss values that produced it"
        )


def _check_edges(edges: torch.Tensor, n: int) -> None:
    if edges.dim() != 2 or edges.shape[1] != 2:
        raise ValueError(f"Potentials.edges must have shape [E, 2], got {list(edges.shape)}")
    if edges.numel() == 0:
        return
    e = edges.detach().cpu()
    if int(e.min()) < 0 or int(e.max()) >= n:
        raise ValueError(
            f"Potentials.edges out of range: indices must lie in [0, {n - 1}] for n = {n}, "
            f"got min {int(e.min())}, max {int(e.max())}"
        )
    bad = (e[:, 0] >= e[:, 1]).nonzero()
    if bad.numel():
        k = int(bad[0])
        raise ValueError(
            f"Potentials.edges must have i < j in every row; edge {k} is {e[k].tolist()} "
            "(sort each pair and drop self-loops)"
        )
    if torch.unique(e, dim=0).shape[0] != e.shape[0]:
        raise ValueError("Potentials.edges has duplicate rows; each pair (i, j) may appear once")


class BinaryForm(NamedTuple):
    """The compact form of binary (``K = 2``) potentials:
    ``h(z) = constant + sum_i linear_i z_i + sum_e coupling_e z_i z_j`` (see
    :meth:`Potentials.binary_form`)."""

    linear: torch.Tensor
    """``[B, n]``: the gain of ``z_i = 1`` with every other variable at 0."""
    coupling: torch.Tensor
    """``[B, E]``: ``theta00 + theta11 - theta01 - theta10`` of each edge table."""
    constant: torch.Tensor
    """``[B]``: the score of the all-zero assignment."""


@dataclass(frozen=True, eq=False)
class Potentials:
    """A batch of ``B`` problems over ``n`` variables with ``K`` states.

    Args:
        unary: float ``[B, n, K]``.
        edges: long ``[E, 2]`` with ``i < j``, no duplicates, shared by the batch (``None``: no edges).
        pairwise: float ``[B, E, K, K]``; ``pairwise[b, e, a, c]`` scores
            ``z_i = a, z_j = c`` for edge ``e = (i, j)``. Required iff ``E > 0``.
        validate: check shapes, edges and finiteness (NaN/inf raise ``ValueError``).
    """

    unary: torch.Tensor
    edges: torch.Tensor | None = None
    pairwise: torch.Tensor | None = None
    validate: bool = True

    def __post_init__(self) -> None:
        u = self.unary
        if not isinstance(u, torch.Tensor):
            raise ValueError(f"Potentials.unary must be a torch.Tensor, got {type(u).__name__}")
        if u.dim() != 3:
            raise ValueError(
                f"Potentials.unary must have shape [B, n, K], got {list(u.shape)}; "
                "add a batch dimension with unary[None] for a single problem"
            )
        if not u.is_floating_point():
            raise ValueError(f"Potentials.unary must be a floating tensor, got {u.dtype}")
        B, n, K = u.shape
        if n < 1 or K < 1:
            raise ValueError(f"Potentials.unary needs n >= 1 and K >= 1, got shape {list(u.shape)}")
        edges = self.edges
        if edges is None:
            edges = torch.zeros(0, 2, dtype=torch.long, device=u.device)
        else:
            edges = torch.as_tensor(edges)
            if edges.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
                raise ValueError(f"Potentials.edges must be an integer tensor, got {edges.dtype}")
            edges = edges.to(device=u.device, dtype=torch.long)
        pw = self.pairwise
        E = edges.shape[0] if edges.dim() == 2 else -1
        if pw is None:
            if E > 0:
                raise ValueError(
                    f"Potentials.pairwise is missing: {E} edges were given, "
                    "pass pairwise of shape [B, E, K, K]"
                )
            pw = u.new_zeros(B, 0, K, K)
        if self.validate:
            _check_edges(edges, n)
            if not isinstance(pw, torch.Tensor) or list(pw.shape) != [B, E, K, K]:
                shape = list(pw.shape) if isinstance(pw, torch.Tensor) else type(pw).__name__
                raise ValueError(
                    f"Potentials.pairwise must have shape [B, E, K, K] = {[B, E, K, K]}, got {shape}"
                )
            if pw.device != u.device or pw.dtype != u.dtype:
                raise ValueError(
                    f"Potentials.pairwise must match unary's device and dtype "
                    f"({u.device}, {u.dtype}), got ({pw.device}, {pw.dtype})"
                )
            _check_finite("unary", u)
            _check_finite("pairwise", pw)
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "pairwise", pw)

    # ----------------------------------------------------------------- sizes
    @property
    def batch_size(self) -> int:
        return self.unary.shape[0]

    @property
    def num_vars(self) -> int:
        return self.unary.shape[1]

    @property
    def num_states(self) -> int:
        return self.unary.shape[2]

    @property
    def num_edges(self) -> int:
        return self.edges.shape[0]

    @property
    def has_edges(self) -> bool:
        return self.num_edges > 0

    @property
    def device(self) -> torch.device:
        return self.unary.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unary.dtype

    def __repr__(self) -> str:
        return (
            f"Potentials(B={self.batch_size}, n={self.num_vars}, K={self.num_states}, "
            f"E={self.num_edges}, dtype={self.dtype}, device={self.device})"
        )

    # ----------------------------------------------------------- constructors
    @classmethod
    def binary(
        cls,
        theta: torch.Tensor,
        edges: torch.Tensor | None = None,
        coupling: torch.Tensor | None = None,
        validate: bool = True,
    ) -> Potentials:
        """The paper's binary form ``h(z) = sum_i theta_i z_i + sum_e coupling_e z_i z_j``.

        ``theta`` ``[B, n]``, ``coupling`` ``[B, E]``: unary ``[:, :, 1] = theta`` and
        ``pairwise[..., 1, 1] = coupling``, zeros elsewhere.
        """
        unary = torch.stack([torch.zeros_like(theta), theta], dim=-1)
        pairwise = None
        if coupling is not None:
            z = torch.zeros_like(coupling)
            pairwise = torch.stack([z, z, z, coupling], dim=-1).unflatten(-1, (2, 2))
        return cls(unary, edges, pairwise, validate=validate)

    def with_unary(self, unary: torch.Tensor) -> Potentials:
        """The same edges and pairwise tables with new unary terms ``[B, n, K]`` (checked finite)."""
        if unary.shape != self.unary.shape:
            raise ValueError(
                f"Potentials.unary must keep shape {list(self.unary.shape)}, got {list(unary.shape)}"
            )
        if self.validate:
            _check_finite("unary", unary)
        return Potentials(unary, self.edges, self.pairwise, validate=False)

    def perturb(self, noise: torch.Tensor) -> Potentials:
        """Add ``noise`` ``[B, n, K]`` (e.g. Gumbel) to the unary terms."""
        return self.with_unary(self.unary + noise)

    def detach(self) -> Potentials:
        return Potentials(self.unary.detach(), self.edges, self.pairwise.detach(), validate=False)

    def to(self, *args, **kwargs) -> Potentials:
        """Move/cast like ``torch.Tensor.to`` (edges follow the device, stay long)."""
        u = self.unary.to(*args, **kwargs)
        return Potentials(
            u, self.edges.to(u.device), self.pairwise.to(*args, **kwargs), validate=False
        )

    def __getitem__(self, index) -> Potentials:
        """Select samples of the batch (int, slice, bool mask or index tensor)."""
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(index, None)
        return Potentials(self.unary[index], self.edges, self.pairwise[index], validate=False)

    # ----------------------------------------------------------------- scores
    def score(self, z: torch.Tensor) -> torch.Tensor:
        """Total score of assignments ``z`` long ``[B, n]`` or ``[B, S, n]``: ``[B]`` or ``[B, S]``.

        Differentiable with respect to the unary and pairwise tables.
        """
        if z.dim() not in (2, 3) or z.shape[0] != self.batch_size or z.shape[-1] != self.num_vars:
            raise ValueError(
                f"score: z must have shape [B, n] or [B, S, n] with B = {self.batch_size}, "
                f"n = {self.num_vars}, got {list(z.shape)}"
            )
        z = z.to(device=self.device, dtype=torch.long)
        single = z.dim() == 2
        if single:
            z = z[:, None]
        B, S, n = z.shape
        K = self.num_states
        u = self.unary[:, None].expand(B, S, n, K)
        s = u.gather(-1, z[..., None]).squeeze(-1).sum(-1)
        if self.has_edges:
            zi, zj = z[..., self.edges[:, 0]], z[..., self.edges[:, 1]]  # [B, S, E]
            flat = self.pairwise.flatten(-2)[:, None].expand(B, S, self.num_edges, K * K)
            s = s + flat.gather(-1, (zi * K + zj)[..., None]).squeeze(-1).sum(-1)
        return s[:, 0] if single else s

    def binary_form(self, dtype: torch.dtype | None = None) -> BinaryForm:
        """The compact form ``(linear [B, n], coupling [B, E], constant [B])`` of binary potentials.

        Each unary ``(u0, u1)`` is ``u0 + (u1 - u0) z_i`` and each table ``[[a, b], [c, d]]``
        (rows ``z_i``) is ``a + (c - a) z_i + (b - a) z_j + (a + d - b - c) z_i z_j``, so
        ``score(z) == constant + linear @ z + coupling @ (z_i z_j)`` for every ``z``. Computed
        in ``dtype`` (default: the potentials' dtype, at least float32); differentiable. The one
        place the solvers and the inference code get this form from. ``ValueError`` unless K = 2.
        """
        if self.num_states != 2:
            raise ValueError(
                f"binary_form needs binary potentials (K = 2), got K = {self.num_states}"
            )
        dtype = dtype or torch.promote_types(self.dtype, torch.float32)
        u, pw = self.unary.to(dtype), self.pairwise.to(dtype)
        a, b, c, d = pw[..., 0, 0], pw[..., 0, 1], pw[..., 1, 0], pw[..., 1, 1]
        linear = u[..., 1] - u[..., 0]
        if self.has_edges:
            linear = linear.index_add(1, self.edges[:, 0], c - a).index_add(
                1, self.edges[:, 1], b - a
            )
        return BinaryForm(linear, a + d - b - c, u[..., 0].sum(1) + a.sum(1))

    def supermodular_margin(self) -> torch.Tensor:
        """``theta00 + theta11 - theta01 - theta10`` per edge, ``[B, E]`` (K = 2 only)."""
        if self.num_states != 2:
            raise ValueError(
                f"supermodularity is defined here for K = 2, got K = {self.num_states}"
            )
        p = self.pairwise
        return p[..., 0, 0] + p[..., 1, 1] - p[..., 0, 1] - p[..., 1, 0]

    # ------------------------------------------------------------------ numpy
    def numpy(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(unary [B, n, K], edges [E, 2], pairwise [B, E, K, K])`` as float64/int64 numpy arrays."""
        return (
            self.unary.detach().cpu().double().numpy(),
            self.edges.cpu().numpy(),
            self.pairwise.detach().cpu().double().numpy(),
        )

"""Exact Gibbs quantities of binary pairwise models by split ("meet-in-the-middle") enumeration.

With the variables split into halves ``A`` and ``C`` (see :mod:`structvae.solvers.enumeration`),
all ``2^n`` scores of a sample are ``s_A ⊕ s_C + X_A W X_Cᵀ``, formed one cache-sized batch
chunk at a time.

:func:`binary_gibbs_kl` computes ``KL(q || uniform)`` for ``q(z) ∝ exp h(z)`` in batch chunks
that stay in cache, and its gradient in the same pass: ``∂KL/∂h(z) = q(z)(h(z) − E_q h)``,
reduced at once to the gradients of ``s_A``, ``s_C`` and ``W``, so nothing of size ``2^n`` is
kept for the backward pass. Log-partition and marginals use plain autograd over the same
chunks; sampling draws the ``A`` half from its marginal, then ``C`` given ``A``.
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from ..potentials import Potentials
from ..solvers.enumeration import SPLIT_CHUNK_ELEMENTS, block_scores, split_argmax, split_terms
from .backend import Backend, Marginals
from .enumerate import binary_marginals

__all__ = ["SplitBackend", "binary_gibbs_kl", "split_argmax", "MAX_GIBBS_VARS"]

MAX_GIBBS_VARS = 26
"""Largest ``n`` split enumeration accepts (``2^n`` scores per sample are formed)."""


def _step(s_a: torch.Tensor, s_c: torch.Tensor) -> int:
    return max(1, SPLIT_CHUNK_ELEMENTS // (s_a.shape[1] * s_c.shape[1]))


class _SplitGibbsKL(torch.autograd.Function):
    """``(s_A [B, 2^m], s_C [B, 2^k], W [B, m, k]) -> KL [B]`` (without the ``n log 2``)."""

    @staticmethod
    def forward(ctx, s_a, s_c, w, xa, xc):  # noqa: D102
        B = s_a.shape[0]
        grad = ctx.needs_input_grad[:3]
        want = any(grad)
        kl = s_a.new_empty(B)
        g_a, g_c, g_w = (torch.empty_like(t) if want else None for t in (s_a, s_c, w))
        xct = xc.t()
        step = _step(s_a, s_c)
        for i in range(0, B, step):
            sl = slice(i, i + step)
            s = block_scores(s_a, s_c, w, xa, xct, sl)
            b = s.shape[0]
            mx = s.reshape(b, -1).amax(1).view(b, 1, 1)
            q = (s - mx).exp_()
            z = q.sum((1, 2), keepdim=True)
            q /= z
            e_h = (q * s).sum((1, 2), keepdim=True)
            kl[sl] = (e_h - mx - z.log()).view(b)
            if want:
                r = q.mul_(s.sub_(e_h))  # q (h - E_q h) = dKL/dh
                g_a[sl] = r.sum(2)
                g_c[sl] = r.sum(1)
                g_w[sl] = xa.t() @ r @ xc
        if want:
            ctx.save_for_backward(g_a, g_c, g_w)
        return kl

    @staticmethod
    @once_differentiable
    def backward(ctx, g):  # noqa: D102
        g_a, g_c, g_w = ctx.saved_tensors
        g = g[:, None]
        return g * g_a, g * g_c, g[:, :, None] * g_w, None, None


def _check(potentials: Potentials, who: str) -> None:
    n = potentials.num_vars
    if potentials.num_states != 2:
        raise ValueError(f"{who} needs binary potentials (K = 2), got K = {potentials.num_states}")
    if n > MAX_GIBBS_VARS:
        raise ValueError(
            f"{who} enumerates 2^{n} assignments per sample, above the limit "
            f"n <= {MAX_GIBBS_VARS}; use a factorised or tree KL instead"
        )


def binary_gibbs_kl(potentials: Potentials) -> torch.Tensor:
    """``KL(q || uniform)`` ``[B]`` for the Gibbs distribution ``q(z) ∝ exp h(z)`` of binary
    (``K = 2``) potentials with any edges, exact by split enumeration of the ``2^n``
    assignments. Differentiable (once) in the potentials; float32 or wider.

    Raises ``ValueError`` for ``K != 2`` or ``n > MAX_GIBBS_VARS``.
    """
    _check(potentials, "binary_gibbs_kl")
    n = potentials.num_vars
    s_a, s_c, w, xa, xc, _ = split_terms(potentials, n // 2)  # the constant cancels
    return _SplitGibbsKL.apply(s_a, s_c, w, xa, xc) + n * math.log(2)


class SplitBackend(Backend):
    """Exact for binary potentials with any edges, ``n <= MAX_GIBBS_VARS`` (26), by split
    enumeration; the KL (and entropy) by one fused, memory-light pass with its gradient."""

    name = "split"

    def __init__(self, potentials: Potentials) -> None:
        super().__init__(potentials)
        _check(potentials, "the split Gibbs backend")
        self.m = potentials.num_vars // 2

    @classmethod
    def refusal(cls, p: Potentials, **_) -> str | None:
        if p.num_states != 2:
            return f"split enumeration needs K = 2, got K = {p.num_states}"
        if p.num_vars > MAX_GIBBS_VARS:
            return f"split enumeration handles n <= {MAX_GIBBS_VARS}, got n = {p.num_vars}"
        return None

    def _sweep(self):
        """``(log Z [B], q_A [B, 2^m], q_C [B, 2^k], E[a cᵀ] [B, m, k], X_A, X_C)``: the
        log-partition and the half marginals, chunked, through plain autograd."""
        s_a, s_c, w, xa, xc, const = split_terms(self.p, self.m)
        xct, step = xc.t(), _step(s_a, s_c)
        parts = []
        for i in range(0, s_a.shape[0], step):
            s = block_scores(s_a, s_c, w, xa, xct, slice(i, i + step))
            log_z = torch.logsumexp(s.flatten(1), 1)
            q = torch.exp(s - log_z[:, None, None])
            parts.append((log_z, q.sum(2), q.sum(1), xa.t() @ q @ xc))
        if not parts:
            return s_a.new_zeros(0), s_a, s_c, w, xa, xc
        log_z, q_a, q_c, cross = (torch.cat(t) for t in zip(*parts, strict=True))
        return log_z + const, q_a, q_c, cross, xa, xc

    def log_partition(self) -> torch.Tensor:
        return self._sweep()[0]

    def marginals(self) -> Marginals:
        p, m = self.p, self.m
        _, q_a, q_c, cross, xa, xc = self._sweep()
        mean = torch.cat([q_a @ xa, q_c @ xc], dim=1)  # E[z_i]  [B, n]
        e0, e1 = p.edges[:, 0], p.edges[:, 1]
        pair = q_a.new_zeros(p.batch_size, p.num_edges)
        in_a, in_c = e1 < m, e0 >= m
        cross_e = ~in_a & ~in_c
        if in_a.any():
            pair[:, in_a] = q_a @ (xa[:, e0[in_a]] * xa[:, e1[in_a]])
        if in_c.any():
            pair[:, in_c] = q_c @ (xc[:, e0[in_c] - m] * xc[:, e1[in_c] - m])
        if cross_e.any():
            pair[:, cross_e] = cross[:, e0[cross_e], e1[cross_e] - m]
        return binary_marginals(p, mean, pair)

    def entropy(self) -> torch.Tensor:
        return self.p.num_vars * math.log(2) - self.kl_to_uniform()

    def kl_to_uniform(self) -> torch.Tensor:
        return binary_gibbs_kl(self.p)

    @torch.no_grad()
    def sample(self, num: int, generator: torch.Generator | None) -> torch.Tensor:
        s_a, s_c, w, xa, xc, _ = split_terms(self.p, self.m)
        xct, step = xc.t(), _step(s_a, s_c)
        out = []
        for i in range(0, s_a.shape[0], step):
            s = block_scores(s_a, s_c, w, xa, xct, slice(i, i + step))  # [b, 2^m, 2^k]
            b = s.shape[0]
            q_a = torch.softmax(torch.logsumexp(s, 2), 1)
            a = torch.multinomial(q_a, num, replacement=True, generator=generator)  # [b, S]
            rows = s.gather(1, a[..., None].expand(b, num, s.shape[2]))  # [b, S, 2^k]
            q_c = torch.softmax(rows, -1).flatten(0, 1)
            c = torch.multinomial(q_c, 1, generator=generator).view(b, num)
            out.append(torch.cat([xa[a], xc[c]], -1))
        if not out:
            return torch.zeros(num, 0, self.p.num_vars, dtype=torch.long, device=self.p.device)
        return torch.cat(out).long().transpose(0, 1)

    @torch.no_grad()
    def argmax(self) -> torch.Tensor:
        p = self.p
        powers = 2 ** torch.arange(p.num_vars - 1, -1, -1, device=p.device)
        return (split_argmax(p)[:, None] // powers) % 2

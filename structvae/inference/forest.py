"""Gibbs quantities on forests (any K, no limit on n) by sum-product, batched on the device.

The log-partition function is :func:`structvae.solvers.tree.tree_log_partition` (the upward
pass of :func:`~structvae.solvers.tree.forest_upward` in log space); the marginals are its
gradient (autograd, differentiable again when the potentials require grad); exact samples
come from the upward beliefs by sampling the roots, then each level's nodes given their
parents (one batched draw per depth); the arg max is max-product
(:func:`~structvae.solvers.tree.forest_argmax`). Without edges everything is in closed form
(softmax per variable, Gumbel-max sampling).
"""

from __future__ import annotations

import torch

from ..gumbel import sample_gumbel
from ..potentials import Potentials
from ..solvers.tree import cached_schedule, forest_argmax, forest_upward, tree_log_partition
from .backend import Backend, Marginals, expected_score

__all__ = ["ForestBackend"]

_WHO = "the forest Gibbs backend"
_ADVICE = "use Gibbs(..., backend='split') (K = 2) or backend='enumerate'"


class ForestBackend(Backend):
    """Exact for forests (including no edges), any ``K`` and ``n``."""

    name = "forest"

    def __init__(self, potentials: Potentials) -> None:
        super().__init__(potentials)
        self.schedule = (  # no edges: closed forms, no schedule (and no device sync)
            cached_schedule(potentials, _WHO, _ADVICE) if potentials.has_edges else None
        )
        self._cache: dict[bool, tuple[torch.Tensor, Marginals]] = {}

    @classmethod
    def refusal(cls, p: Potentials, **_) -> str | None:
        if not p.has_edges:
            return None
        if p.num_edges >= p.num_vars:  # no graph lookup: more edges than a forest can have
            return (
                f"sum-product needs a forest, but {p.num_edges} edges on {p.num_vars} nodes "
                "contain a cycle"
            )
        try:
            cached_schedule(p, _WHO, _ADVICE)
        except ValueError as err:
            return f"sum-product needs a forest ({err})"
        return None

    def log_partition(self) -> torch.Tensor:
        return tree_log_partition(self.p)

    def _with_marginals(self) -> tuple[torch.Tensor, Marginals]:
        """``(log Z, marginals)``: the marginals are the gradient of log Z (built with a graph
        when the potentials require grad and grad mode is on, so they differentiate again)."""
        p = self.p
        outer = torch.is_grad_enabled() and (p.unary.requires_grad or p.pairwise.requires_grad)
        if outer in self._cache:
            return self._cache[outer]
        with torch.enable_grad():
            # a table without a graph becomes a fresh leaf, so that autograd still gives its
            # marginals; the log-partition keeps the caller's graph
            u, pw = (
                t if t.requires_grad else t.detach().requires_grad_() for t in (p.unary, p.pairwise)
            )
            log_z = tree_log_partition(Potentials(u, p.edges, pw, validate=False))
            mu_u, mu_pw = torch.autograd.grad(log_z.sum(), (u, pw), create_graph=outer)
        out = (log_z, Marginals(mu_u, mu_pw)) if outer else (log_z.detach(), Marginals(mu_u, mu_pw))
        self._cache[outer] = out
        return out

    def marginals(self) -> Marginals:
        p = self.p
        if not p.has_edges:
            dtype = torch.promote_types(p.dtype, torch.float32)
            return Marginals(torch.softmax(p.unary.to(dtype), -1), p.pairwise.to(dtype))
        return self._with_marginals()[1]

    def entropy(self) -> torch.Tensor:
        p = self.p
        if not p.has_edges:
            log_q = torch.log_softmax(p.unary.to(torch.promote_types(p.dtype, torch.float32)), -1)
            return -(log_q.exp() * log_q).sum((-1, -2))
        log_z, mu = self._with_marginals()
        return log_z - expected_score(p, mu)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        p = self.p
        if p.has_edges:
            return super().log_prob(z)
        log_q = torch.log_softmax(p.unary.to(torch.promote_types(p.dtype, torch.float32)), -1)
        return (
            log_q[:, None].expand(-1, z.shape[1], -1, -1).gather(-1, z[..., None])[..., 0].sum(-1)
        )

    @torch.no_grad()
    def sample(self, num: int, generator: torch.Generator | None) -> torch.Tensor:
        p = self.p
        B, n, K = p.unary.shape
        if not p.has_edges:  # Gumbel-max per variable, noise laid out [B, S, n, K]
            g = sample_gumbel((B, num, n, K), device=p.device, dtype=p.dtype, generator=generator)
            return (p.unary[:, None] + g).argmax(-1).transpose(0, 1)
        belief, tables, _ = forest_upward(p, self.schedule, max_product=False)
        idx = self.schedule.on(p.device)
        child, parent, roots = idx["child"], idx["parent"], idx["roots"]
        z = torch.empty(num, B, n, dtype=torch.long, device=p.device)
        z[:, :, roots] = self._draw(belief[:, roots].expand(num, -1, -1, -1), generator)
        for d in range(self.schedule.depth):
            s, t = self.schedule.bounds[d]
            zp = z[:, :, parent[s:t]]  # [S, B, m]
            rows = tables[:, s:t].expand(num, -1, -1, -1, -1)  # [S, B, m, Kp, Kc]
            rows = rows.gather(3, zp[..., None, None].expand(-1, -1, -1, 1, K))[:, :, :, 0]
            z[:, :, child[s:t]] = self._draw(rows + belief[:, child[s:t]], generator)
        return z

    @staticmethod
    def _draw(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """One categorical draw per row of ``logits [..., K]`` (Gumbel-max)."""
        g = sample_gumbel(
            logits.shape, device=logits.device, dtype=logits.dtype, generator=generator
        )
        return (logits + g).argmax(-1)

    @torch.no_grad()
    def argmax(self) -> torch.Tensor:
        if self.schedule is None:
            return self.p.unary.argmax(-1)
        return forest_argmax(self.p, self.schedule)
